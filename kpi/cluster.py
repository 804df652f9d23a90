"""KPIs of a lake on a Dask cluster: one task per bucket, partials combined exactly.

A bucket holds every event of its items (``kpi.lake``), so each task builds its
bucket's lifecycle and runs the same KPI functions as the single-process engine on it.
The partials combine exactly: counts add, ratios are formed after the combine, and the
transit-time mean and percentiles are computed from the merged exact multiset of values
(each task ships per-group counts of each distinct value), with the same polars
expressions as ``kpi.kpis.functions.flow_kpis``. Families not listed in
``SUPPORTED`` are refused, never answered partially.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import polars as pl

from kpi.kpis.catalog import Family, KpiError, resolve
from kpi.kpis.exprs import PERIOD, Window, hours_between, in_window, period, ratio
from kpi.kpis.functions import ITEM_COLUMNS, flow_kpis, network_kpis
from kpi.kpis.query import KpiQuery, Snapshot, join_families
from kpi.lake import LakeError, Manifest, read_events
from kpi.lifecycle import collect_state_counted, empty_state, lifecycle
from kpi.standards import ServiceStandards, load_standards

if TYPE_CHECKING:
    from distributed import Client

#: Families the cluster engine answers today.
SUPPORTED: Final = frozenset({Family.FLOW, Family.NETWORK})
#: Flow columns that are plain counts (they add across buckets).
FLOW_COUNTS: Final = (
    "accepted_items",
    "delivered_items",
    "delivered_without_acceptance",
    "returned_items",
    "on_time_items",
    "late_1d_items",
    "late_2d_items",
    "late_3d_plus_items",
    "_judged",
    "_within_72h",
    "_transit_n",
    "_first_ok",
    "_first_n",
)
NETWORK_COUNTS: Final = ("in_network_items", "overdue_items", "stalled_items")
_TRANSIT: Final = "_transit"
_N: Final = "_n"
_EPSILON: Final = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Partial:
    """What one bucket adds: flow counts, transit value counts, network counts."""

    flow: pl.DataFrame | None
    transit: pl.DataFrame | None
    network: pl.DataFrame | None


class ClusterError(Exception):
    """A cluster that cannot be reached or started (with the reason)."""


@contextmanager
def connect(
    scheduler: str | None = None, workers: int = 1, timeout: float = 10.0
) -> Iterator[Client]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers`` processes.

    An address that does not answer raises ``ClusterError`` within ``timeout`` seconds.
    """
    from distributed import Client, LocalCluster  # noqa: PLC0415  (heavy, only when used)

    if scheduler is not None:
        client = _reach(scheduler, timeout)
        with client:
            yield client
        return
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: never clash with another cluster
            silence_logs=logging.WARNING,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


def _reach(scheduler: str, timeout: float) -> Client:
    """A client of ``scheduler``, or ``ClusterError`` after ``timeout`` (plus a grace second).

    Distributed's own ``timeout`` covers a refused connection, not a peer that accepts
    and never speaks (the handshake then waits forever): a thread bounds both.
    """
    from distributed import Client  # noqa: PLC0415

    box: dict[str, object] = {}

    def attempt() -> None:
        try:
            box["client"] = Client(scheduler, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
        except Exception as exc:  # reported below, whatever distributed raised
            box["error"] = exc

    thread = threading.Thread(target=attempt, name="dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    client = box.get("client")
    if isinstance(client, Client):
        return client
    why = box.get("error", "no answer to the handshake")
    raise ClusterError(f"no Dask scheduler answered at {scheduler} within {timeout:g} s ({why})")


def _keys(by: Sequence[str], w: Window) -> list[str]:
    return [*by, PERIOD] if w.granularity else list(by)


def transit_counts(lc: pl.LazyFrame, by: list[str], w: Window) -> pl.LazyFrame:
    """Per group, how many delivered items (with an acceptance) took each transit time."""
    keys = _keys(by, w)
    dims = [pl.col(ITEM_COLUMNS[d]).alias(d) for d in by]
    rows = (
        lc.filter(in_window("delivered_at", w) & pl.col("accepted_at").is_not_null())
        .with_columns(*dims, *([period("delivered_at", w)] if w.granularity else []))
        .with_columns(hours_between("delivered_at", "accepted_at").alias(_TRANSIT))
    )
    return rows.group_by([*keys, _TRANSIT]).agg(pl.len().cast(pl.Int64).alias(_N))


def bucket_partial(
    files: Sequence[str],
    standards: ServiceStandards,
    as_of: dt.datetime,
    w: Window,
    by: Sequence[str],
    families: frozenset[Family],
) -> Partial:
    """One bucket's partial aggregates (the task a worker runs)."""
    events = read_events(Path(), [Path(f) for f in files])
    state, _, _, _ = collect_state_counted(events, as_of)
    return _partial(lifecycle(state.lazy(), standards), w, list(by), families)


def _partial(lc: pl.LazyFrame, w: Window, by: list[str], families: frozenset[Family]) -> Partial:
    keys = _keys(by, w)
    flow = transit = network = None
    plans: list[pl.LazyFrame] = []
    if Family.FLOW in families:
        plans += [flow_kpis(lc, by, w).select(*keys, *FLOW_COUNTS), transit_counts(lc, by, w)]
    if Family.NETWORK in families:
        plans.append(network_kpis(lc, by, w))
    frames = pl.collect_all(plans)
    if Family.FLOW in families:
        flow, transit = frames[0], frames[1]
    if Family.NETWORK in families:
        network = frames[-1]
    return Partial(flow, transit, network)


def _sum(frames: list[pl.DataFrame], keys: list[str], cols: Sequence[str]) -> pl.DataFrame:
    both = pl.concat(frames, how="vertical")
    sums = [pl.col(c).sum().cast(pl.Int64) for c in cols]
    if not keys:
        return both.select(sums)
    return both.group_by(keys).agg(sums)


def combine_flow(
    flows: list[pl.DataFrame], transits: list[pl.DataFrame], keys: list[str]
) -> pl.DataFrame:
    """The flow family from bucket partials: exactly ``flow_kpis`` on the whole lifecycle."""
    counts = _sum(flows, keys, FLOW_COUNTS)
    values = pl.concat(transits, how="vertical")
    # The exact multiset of transit times per group, then the single-process expressions.
    expanded = values.select(*keys, pl.col(_TRANSIT).repeat_by(_N)).explode(_TRANSIT)
    t = pl.col(_TRANSIT)
    stats = (
        t.mean().alias("transit_hours_mean"),
        t.quantile(0.5, "linear").alias("transit_hours_p50"),
        t.quantile(0.9, "linear").alias("transit_hours_p90"),
    )
    if keys:
        out = counts.join(expanded.group_by(keys).agg(stats), on=keys, how="left", nulls_equal=True)
    else:
        out = pl.concat([counts, expanded.select(stats)], how="horizontal")
    return out.with_columns(
        ratio("on_time_items", "_judged").alias("on_time_ratio"),
        ratio("_within_72h", "_transit_n").alias("within_72h_ratio"),
        ratio("_first_ok", "_first_n").alias("first_attempt_ratio"),
    )


def lake_span(
    lake: Path, as_of: dt.datetime | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(first, last) event instants as the single-process snapshot defines them."""
    ts = pl.col("ts")
    events = read_events(lake)
    upto = events.filter(ts.is_not_null() if as_of is None else ts <= as_of)
    first, last = upto.select(ts.min().alias("first"), ts.max().alias("last")).collect().row(0)
    if as_of is not None and first is None:
        first = events.select(ts.min()).collect().item()
    return first, last


def report(
    lake: Path, q: KpiQuery, client: Client, as_of: dt.datetime | None = None
) -> pl.DataFrame:
    """Answer ``q`` over ``lake`` on the cluster behind ``client`` (see the module doc)."""
    manifest = Manifest.load(lake)
    if manifest is None:
        raise LakeError(f"{lake} is not a lake (no manifest): run `kpi compact` first")
    by = list(q.by)
    kpis = resolve(list(q.kpis) if q.kpis else None, by, q.granularity)
    families = frozenset(k.family for k in kpis)
    refused = sorted(k.name for k in kpis if k.family not in SUPPORTED)
    if refused:
        raise KpiError(
            "--engine dask does not compute these KPIs yet: "
            f"{', '.join(refused)} (supported families: "
            f"{', '.join(sorted(f.value for f in SUPPORTED))}); ask with --kpi"
        )
    standards = load_standards(lake)
    first, last = lake_span(lake, as_of)
    effective = as_of or last or dt.datetime.now(dt.UTC)
    # The window exactly as the single-process snapshot forms it (defaults, errors).
    shell = Snapshot(
        lifecycle=pl.DataFrame(),
        complaints=pl.DataFrame(),
        facilities=pl.DataFrame(),
        as_of=effective,
        first_event_at=first,
    )
    w = shell.window(q)
    keys = _keys(by, w)
    parts = manifest.bucket_parts(lake)
    tasks = [[str(p) for p in files] for files in parts.values() if files]
    futures = client.map(
        bucket_partial,
        tasks,
        standards=standards,
        as_of=effective,
        w=w,
        by=tuple(by),
        families=families,
        pure=False,
    )
    partials: list[Partial] = client.gather(futures)  # type: ignore[no-untyped-call]
    # The shape of an empty answer (one row of zeros without --by) comes from an empty bucket.
    empty = _partial(lifecycle(empty_state().lazy(), standards), w, by, families)
    partials.append(empty)
    frames: list[pl.DataFrame] = []
    for family in (f for f in Family if f in families):
        if family is Family.FLOW:
            frames.append(
                combine_flow(
                    [p.flow for p in partials if p.flow is not None],
                    [p.transit for p in partials if p.transit is not None],
                    keys,
                )
            )
        else:
            nets = [p.network for p in partials if p.network is not None]
            frames.append(_sum(nets, by, NETWORK_COUNTS))
    return join_families(frames, kpis, keys)
