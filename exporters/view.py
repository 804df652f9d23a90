"""What one refresh exposes: counter values plus gauge frames computed by the KPI engine.

The gauges are the engine's own KPIs (``Snapshot.query``) over the lifecycle of the
items still in the network, so ``/metrics`` and ``kpi report`` cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

import polars as pl

from exporters import catalog as cat
from exporters.store import CounterStore
from kpi.contract import COMPLAINT_SCHEMA
from kpi.kpis.catalog import KPI_BY_NAME
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.lifecycle import finished, lifecycle
from kpi.standards import ServiceStandards, StageTargets

#: KPI column of each backlog age band (the exporter's bands are the engine's).
BAND_KPIS: Final = {band: f"backlog_items_{band}" for band in cat.AGE_BANDS}
OLDEST_KPI: Final = "backlog_oldest_hours"
THRESHOLD_KPI: Final = "backlog_threshold_items"
IN_NETWORK_KPI: Final = "in_network_items"
OVERDUE_KPI: Final = "overdue_items"
STALLED_KPI: Final = "stalled_items"
OPEN_COMPLAINTS_KPI: Final = "open_complaints"
OVERDUE_COMPLAINTS_KPI: Final = "overdue_complaints"

for _name in (*BAND_KPIS.values(), OLDEST_KPI, THRESHOLD_KPI, IN_NETWORK_KPI, OVERDUE_KPI):
    if _name not in KPI_BY_NAME:
        raise ImportError(f"KPI {_name} is not in the KPI catalog")

BACKLOG_QUERY: Final = KpiQuery(
    kpis=(*BAND_KPIS.values(), OLDEST_KPI, THRESHOLD_KPI),
    by=("facility", "facility_type", "region"),
)
NETWORK_QUERY: Final = KpiQuery(kpis=(IN_NETWORK_KPI, OVERDUE_KPI), by=("product", "destination"))
STALLED_QUERY: Final = KpiQuery(kpis=(STALLED_KPI,), by=("region",))
COMPLAINTS_QUERY: Final = KpiQuery(
    kpis=(OPEN_COMPLAINTS_KPI, OVERDUE_COMPLAINTS_KPI), by=("region",)
)


@dataclass(frozen=True)
class SelfStats:
    """Exporter gauges: items held, newest event, last checkpoint (0 when never), version."""

    items_tracked: int = 0
    deliveries_awaiting_acceptance: int = 0
    last_event_timestamp: float = 0.0
    last_checkpoint_timestamp: float = 0.0
    version: str = "unknown"
    #: Reference file -> whether its current version is in use.
    config_valid: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class MetricsView:
    """Everything one exposition shows. Gauge frames are ``Snapshot.query`` answers (None: none)."""

    counters: CounterStore = field(default_factory=CounterStore)
    local: CounterStore = field(default_factory=CounterStore)
    backlog: pl.DataFrame | None = None
    network: pl.DataFrame | None = None
    stalled: pl.DataFrame | None = None
    complaints: pl.DataFrame | None = None
    stats: SelfStats = field(default_factory=SelfStats)
    as_of: dt.datetime | None = None
    #: The stage targets of the loaded service standard (None: not part of this view).
    stage_targets: StageTargets | None = None


def unfinished(items: pl.DataFrame) -> pl.DataFrame:
    """State rows of items neither delivered nor returned (all the gauges look at)."""
    return items.filter(~finished())


def gauge_snapshot(
    items: pl.DataFrame,
    complaints: pl.DataFrame,
    facilities: pl.DataFrame,
    standards: ServiceStandards,
    as_of: dt.datetime,
) -> Snapshot:
    """A KPI snapshot of the items in the network and the complaints, as of ``as_of``."""
    table = lifecycle(unfinished(items).lazy(), standards).collect()
    open_or_all = complaints.select(COMPLAINT_SCHEMA.keys()).filter(pl.col("opened_at") <= as_of)
    return Snapshot(table, open_or_all, facilities, as_of, None)


def build_view(
    items: pl.DataFrame,
    complaints: pl.DataFrame,
    facilities: pl.DataFrame,
    standards: ServiceStandards,
    as_of: dt.datetime,
    counters: CounterStore,
    local: CounterStore,
    stats: SelfStats,
    stall_hours: float = 48.0,
) -> MetricsView:
    """Compute the gauge frames and bundle them with the counters."""
    snap = gauge_snapshot(items, complaints, facilities, standards, as_of)
    stalled_query = KpiQuery(kpis=STALLED_QUERY.kpis, by=STALLED_QUERY.by, stall_hours=stall_hours)
    return MetricsView(
        counters=counters,
        local=local,
        backlog=snap.query(BACKLOG_QUERY),
        network=snap.query(NETWORK_QUERY),
        stalled=snap.query(stalled_query),
        complaints=snap.query(COMPLAINTS_QUERY),
        stats=stats,
        as_of=as_of,
        stage_targets=standards.stages,
    )
