"""KPI values at a grid of instants, in event time, computed in one pass: the backfill's engine.

Pure polars (frames in, frames out; no I/O, no Prometheus). ``step_deltas`` turns the
validated events and complaints into *deltas*: for every series (a label set of one
measure) the steps at which its value changes and by how much. ``StepValues`` then
adds them up window by window (cumulative sums, a carry between windows), so the
value of every series at every step comes out of one sort of the events instead of
one report per step.

Definitions, for a step instant ``t`` (the same rules as ``kpi report``):

- a **counter** at ``t`` counts what happened strictly before ``t``: items accepted
  with ``accepted_at < t``, first deliveries with ``delivered_at < t`` (``on_time``
  from the item's all-time acceptance and promise, as the report classifies a
  window), returns, delivery attempts (``first`` = the item's first attempt in event
  time: earliest ``ts``, a failed attempt before a delivery at the same instant, then
  the smallest ``event_id``), failures by reason, complaints opened (latest version's
  region, category, validity). So ``value(to) - value(from)`` is the report's window
  ``[from, to)``. Histograms observe transit times at ``delivered_at`` and complaint
  resolution times at ``resolved_at``; sums are kept in integer microseconds;
- a **gauge** at ``t`` is the report's as-of-``t`` answer (events with ``ts <= t``):
  an item is in the network from its first event until it is delivered or returned;
  its product/destination (and promise) are known from its acceptance on; its last
  event (latest ``ts``, then the later stage, then the greater facility) says where it
  waits and since when. Backlog age bands, overdue (``promised_by < t``), stalled
  (``t - last_event_at > stall``), open complaints (``opened_at <= t < resolved_at``)
  and overdue complaints (``opened_at < t - deadline``) follow.

A gauge's *interval* ``[a, b)`` of instants becomes step indices with two binary
searches on the step grid (``+1`` at the first step in it, ``-1`` at the first step
after it); a counter's event at ``ts`` adds 1 from the first step after ``ts``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from kpi.events import Effect, event_has
from kpi.kpis.labels import UNKNOWN
from kpi.kpis.labels import flag as _flag
from kpi.kpis.step_base import US_PER_S, VALUE, D, K
from kpi.kpis.step_base import counter_deltas as _counter_deltas
from kpi.kpis.step_base import interval_deltas as _interval_deltas
from kpi.kpis.step_base import k_after as _k_after
from kpi.kpis.step_base import k_from as _k_from
from kpi.kpis.step_base import label as _label
from kpi.kpis.step_base import sum_deltas as _sum_deltas
from kpi.kpis.step_base import us_col as _us_col
from kpi.kpis.step_gauges import gauge_deltas, item_codes, segments
from kpi.lifecycle import collect_state, lifecycle
from kpi.standards import ServiceStandards

__all__ = [  # the column names of step_base re-exported: the engine's readers import them here
    "HISTOGRAMS", "LABELS", "UNKNOWN", "US_PER_S", "VALUE", "D", "K", "StepDeltas",
    "StepError", "step_deltas", "step_grid",
]  # fmt: skip

#: Label columns of every measure (the exporter's metric labels, in the catalog's order).
LABELS: Final[Mapping[str, tuple[str, ...]]] = {
    "accepted": ("product", "origin", "destination"),
    "delivered": ("product", "destination", "on_time"),
    "returned": ("product", "destination"),
    "attempts": ("product", "destination", "outcome", "attempt"),
    "failures": ("reason",),
    "transit": ("product", "destination"),
    "complaints": ("region", "category", "valid"),
    "resolution": ("region", "category"),
    "backlog": ("facility", "facility_type", "region", "age_band"),
    "backlog_oldest": ("facility", "facility_type", "region"),
    "in_network": ("product", "destination"),
    "overdue": ("product", "destination"),
    "stalled": ("region",),
    "complaints_open": ("region",),
    "complaints_overdue": ("region",),
}
HISTOGRAMS: Final = ("transit", "resolution")


class StepError(ValueError):
    """A step grid that cannot be evaluated (empty, unsorted, or not a positive step)."""


def step_grid(start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> pl.Series:
    """Instants ``start, start+step, ...`` up to ``end``, with ``end`` itself always last."""
    if step <= dt.timedelta(0):
        raise StepError("the step must be positive")
    if end < start:
        raise StepError(f"`to` ({end.isoformat()}) is before `from` ({start.isoformat()})")
    s0, s1 = _us(start), _us(end)
    width = int(step / dt.timedelta(microseconds=1))
    grid = list(range(s0, s1 + 1, width))
    if grid[-1] != s1:
        grid.append(s1)
    return pl.Series("step_us", grid, dtype=pl.Int64)


def _us(t: dt.datetime) -> int:
    return int((t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))


@dataclass(frozen=True)
class StepDeltas:
    """Per-measure deltas on a step grid (``LABELS[name]`` columns, ``_k``, ``_d``).

    ``steps`` is the grid (epoch microseconds). Histograms have a ``bucket`` column
    (index of the first edge the observation is not above; ``len(edges)`` = ``+Inf``)
    and their microsecond sums in ``sum_us`` (a separate delta frame). ``oldest`` holds
    per-facility ranges ``[_k, _k_end)`` with the waiting-since instant ``since_us`` of
    the oldest waiting item. ``listed`` are the facilities of ``facilities.csv`` (their
    backlog series exist at every step), with their type, region and threshold.
    """

    steps: pl.Series
    counters: Mapping[str, pl.DataFrame]
    histograms: Mapping[str, pl.DataFrame]
    histogram_sums: Mapping[str, pl.DataFrame]
    gauges: Mapping[str, pl.DataFrame]
    oldest: pl.DataFrame
    listed: pl.DataFrame


def step_deltas(
    events: pl.LazyFrame,
    complaints: pl.LazyFrame,
    facilities: pl.DataFrame,
    standards: ServiceStandards,
    steps: pl.Series,
    *,
    transit_edges_us: Sequence[int],
    resolution_edges_us: Sequence[int],
    stall_hours: float = 48.0,
    complaint_deadline: dt.timedelta = dt.timedelta(days=7),
) -> StepDeltas:
    """Deltas of every measure on ``steps`` (epoch µs, sorted) from validated events and
    the complaints' latest versions; see the module docstring for the definitions."""
    if steps.len() == 0:
        raise StepError("no steps")
    if not steps.is_sorted():
        raise StepError("steps must be sorted")
    ev = events.select(
        "item_id", "event_id", "event", "ts", "facility", "reason", "product", "origin",
        "destination", "promised_by",
    ).collect()  # fmt: skip
    items, pairs = item_codes(_items(ev, standards))
    counters: dict[str, pl.LazyFrame] = {}
    histos: dict[str, pl.LazyFrame] = {}
    sums: dict[str, pl.LazyFrame] = {}
    cgauges: dict[str, pl.LazyFrame] = {}
    _flow_deltas(items.lazy(), steps, transit_edges_us, counters, histos, sums)
    _event_deltas(ev, items.lazy(), steps, counters)
    _complaint_deltas(
        complaints, steps, resolution_edges_us, complaint_deadline, counters, histos, sums, cgauges
    )
    # The counters first (small), then the gauges from the segments, one measure at a
    # time: the events' text columns are dropped before the gauges' work begins.
    groups = (counters, histos, sums, cgauges)
    frames = iter(pl.collect_all([f for g in groups for f in g.values()]))
    done = [{name: next(frames) for name in g} for g in groups]
    seg = segments(ev, items, pairs, steps)
    del ev, items
    gauges, oldest = gauge_deltas(seg, facilities, steps, stall_hours)
    listed = facilities.select(
        _label("facility"),
        _label("type").alias("facility_type"),
        _label("region"),
        pl.col("backlog_threshold"),
    ).unique("facility", keep="first", maintain_order=True)
    return StepDeltas(
        steps=steps,
        counters=done[0],
        histograms=done[1],
        histogram_sums=done[2],
        gauges={**gauges, **done[3]},
        oldest=oldest,
        listed=listed,
    )


def _items(ev: pl.DataFrame, standards: ServiceStandards) -> pl.DataFrame:
    """Per item: acceptance (µs, labels), promise, first delivery and return (µs)."""
    state, _, _ = collect_state(ev.lazy())
    return (
        lifecycle(state.lazy(), standards)
        .select(
            "item_id",
            _us_col("accepted_at").alias("acc_us"),
            _label("product"),
            _label("origin"),
            _label("destination"),
            _us_col("promised_by").alias("promise_us"),
            _us_col("delivered_at").alias("del_us"),
            _us_col("returned_at").alias("ret_us"),
        )
        .collect()
    )


def _flow_deltas(
    items: pl.LazyFrame,
    steps: pl.Series,
    transit_edges_us: Sequence[int],
    counters: dict[str, pl.LazyFrame],
    histos: dict[str, pl.LazyFrame],
    sums: dict[str, pl.LazyFrame],
) -> None:
    """Accepted, delivered (by on_time), returned, and the transit-time histogram."""
    n = steps.len()
    counters["accepted"] = _counter_deltas(
        items.filter(pl.col("acc_us").is_not_null()).select(
            *LABELS["accepted"], _k_after("acc_us", steps).alias(K)
        ),
        LABELS["accepted"],
        n,
    )
    judged = pl.col("acc_us").is_not_null() & pl.col("promise_us").is_not_null()
    delivered = items.filter(pl.col("del_us").is_not_null())
    counters["delivered"] = _counter_deltas(
        delivered.select(
            "product",
            "destination",
            _flag(pl.when(judged).then(pl.col("del_us") <= pl.col("promise_us"))).alias("on_time"),
            _k_after("del_us", steps).alias(K),
        ),
        LABELS["delivered"],
        n,
    )
    counters["returned"] = _counter_deltas(
        items.filter(pl.col("ret_us").is_not_null()).select(
            *LABELS["returned"], _k_after("ret_us", steps).alias(K)
        ),
        LABELS["returned"],
        n,
    )
    transit = delivered.filter(pl.col("acc_us").is_not_null()).select(
        *LABELS["transit"],
        _k_after("del_us", steps).alias(K),
        (pl.col("del_us") - pl.col("acc_us")).alias("_v"),
    )
    histos["transit"], sums["transit"] = _histogram_deltas(
        transit, LABELS["transit"], transit_edges_us, n
    )


def _event_deltas(
    ev: pl.DataFrame, items: pl.LazyFrame, steps: pl.Series, counters: dict[str, pl.LazyFrame]
) -> None:
    """Delivery attempts (first/repeat) and failures."""
    n = steps.len()
    evk = ev.lazy().select(
        "item_id",
        "event_id",
        "event",
        _us_col("ts").alias("ts_us"),
        pl.col("event").to_physical().cast(pl.Int64).alias("_st"),
        "reason",
    )
    attempts = (
        evk.filter(event_has(Effect.ATTEMPTS))
        .join(items.select("item_id", "product", "destination"), on="item_id", how="left")
        .sort("item_id", "ts_us", "_st", "event_id")
        .with_columns(
            _label("product"),
            _label("destination"),
            pl.when(event_has(Effect.DELIVERS))
            .then(pl.lit("delivered"))
            .otherwise(pl.lit("failed"))
            .alias("outcome"),
            pl.when(pl.col("item_id").is_first_distinct())
            .then(pl.lit("first"))
            .otherwise(pl.lit("repeat"))
            .alias("attempt"),
        )
    )
    counters["attempts"] = _counter_deltas(
        attempts.select(*LABELS["attempts"], _k_after("ts_us", steps).alias(K)),
        LABELS["attempts"],
        n,
    )
    counters["failures"] = _counter_deltas(
        evk.filter(event_has(Effect.FAILS)).select(
            _label("reason"), _k_after("ts_us", steps).alias(K)
        ),
        LABELS["failures"],
        n,
    )


def _complaint_deltas(
    complaints: pl.LazyFrame,
    steps: pl.Series,
    resolution_edges_us: Sequence[int],
    complaint_deadline: dt.timedelta,
    counters: dict[str, pl.LazyFrame],
    histos: dict[str, pl.LazyFrame],
    sums: dict[str, pl.LazyFrame],
    gauges: dict[str, pl.LazyFrame],
) -> None:
    """Complaints opened, their resolution times, and the open/overdue gauges."""
    n = steps.len()
    cmp = complaints.select(
        _label("region"),
        _label("category"),
        _flag(pl.col("valid")).alias("valid"),
        _us_col("opened_at").alias("open_us"),
        _us_col("resolved_at").alias("res_us"),
    )
    counters["complaints"] = _counter_deltas(
        cmp.select(*LABELS["complaints"], _k_after("open_us", steps).alias(K)),
        LABELS["complaints"],
        n,
    )
    histos["resolution"], sums["resolution"] = _histogram_deltas(
        cmp.filter(pl.col("res_us").is_not_null()).select(
            *LABELS["resolution"],
            _k_after("res_us", steps).alias(K),
            (pl.col("res_us") - pl.col("open_us")).alias("_v"),
        ),
        LABELS["resolution"],
        resolution_edges_us,
        n,
    )
    deadline_us = int(complaint_deadline / dt.timedelta(microseconds=1))
    is_open = cmp.select(
        "region",
        _k_from("open_us", steps).alias("_lo"),
        _k_from("res_us", steps).alias("_hi"),
        _k_after(pl.col("open_us") + deadline_us, steps).alias("_due"),
    )
    gauges["complaints_open"] = _interval_deltas(is_open, ("region",), "_lo", "_hi", n)
    gauges["complaints_overdue"] = _interval_deltas(
        is_open.with_columns(pl.max_horizontal("_lo", "_due").alias("_lo")),
        ("region",),
        "_lo",
        "_hi",
        n,
    )


def _histogram_deltas(
    obs: pl.LazyFrame, labels: Sequence[str], edges_us: Sequence[int], n: int
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Bucket-count deltas (non-cumulative buckets) and microsecond-sum deltas."""
    edges = pl.Series(list(edges_us), dtype=pl.Int64)
    # ``le`` is inclusive: a value exactly at an edge lands in that edge's bucket.
    with_bucket = obs.with_columns(
        pl.lit(edges).search_sorted(pl.col("_v"), side="left").cast(pl.Int64).alias("bucket"),
        pl.lit(1, pl.Int64).alias(D),
    )
    counts = _sum_deltas(with_bucket, (*labels, "bucket"), n)
    sums = _sum_deltas(obs.with_columns(pl.col("_v").alias(D)), labels, n)
    return counts, sums
