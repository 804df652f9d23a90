"""Stage histograms: first mile, dwell, legs, last mile, their revisions, and the targets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors import ViewSource, gauge, histogram_family
from kpi.contract import FACILITY_TYPES
from kpi.standards import StageTargets


class StageCollector(Collector):
    """The stage histograms (values kept across restarts) and the stage targets."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """One family per catalog metric."""
        store = self._view().counters
        for spec in cat.STAGE_HISTOGRAMS:
            yield histogram_family(spec, store)
        # Every stage's series exists from the start (at 0): revisions are rare.
        spec = cat.STAGE_REVISIONS
        family = cast(CounterMetricFamily, spec.family())
        counts = dict(store.series(spec))
        for stage in spec.values["stage"]:
            family.add_metric([stage], float(counts.get((stage,), 0)))
        yield family
        late = cast(CounterMetricFamily, cat.EXPORTER_STAGE_LATE_SCANS.family())
        counts = dict(store.series(cat.EXPORTER_STAGE_LATE_SCANS))
        for event in cat.EXPORTER_STAGE_LATE_SCANS.values["event"]:
            late.add_metric([event], float(counts.get((event,), 0)))
        yield late
        targets = self._view().stage_targets
        if targets is not None:
            yield from target_families(targets)


def target_families(targets: StageTargets) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """The loaded standard's stage targets in seconds: the dwell target of every facility
    type (its own, else the default) and the leg target; no series where none is set."""
    dwell = gauge(cat.STAGE_DWELL_TARGET)
    for ftype in FACILITY_TYPES:
        hours = targets.dwell_target(ftype)
        if hours is not None:
            dwell.add_metric([ftype], hours * cat.HOUR)
    leg = gauge(cat.STAGE_LEG_TARGET)
    hours = targets.leg_target()
    if hours is not None:
        leg.add_metric([], hours * cat.HOUR)
    return dwell, leg
