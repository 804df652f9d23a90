"""The KPI functions: pure polars, LazyFrame in, tidy frame out; no I/O, no Prometheus.

Each family function takes the lifecycle table (and complaints or facilities where
needed), the grouping dimensions and a ``Window``, and returns one row per group
(and period) with one column per KPI of the family. Definitions are in
``kpi.kpis.catalog`` (and ``docs/kpis.md``, generated from it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Final

import polars as pl

from kpi.contract import FACILITY_SCHEMA
from kpi.events import Effect, event_in, events_with
from kpi.kpis.catalog import AGE_BANDS
from kpi.kpis.exprs import (
    PERIOD,
    Window,
    age_band,
    count_if,
    hours_between,
    in_window,
    outer_join,
    period,
    ratio,
)

#: Dimension name -> lifecycle column for item-based families.
ITEM_COLUMNS: Final = {
    "product": "product",
    "origin": "origin",
    "destination": "destination",
    "region": "destination",
}
#: A first attempt succeeded when its type delivers (the exporter's counters label it
#: ``outcome="delivered"`` by the same rule: ``kpi.kpis.increments``).
_DELIVERING: Final = events_with(Effect.DELIVERS)


def _dims(by: list[str], columns: dict[str, str]) -> list[pl.Expr]:
    return [pl.col(columns[d]).alias(d) for d in by]


def _keys(by: list[str], w: Window) -> list[str]:
    return [*by, PERIOD] if w.granularity else list(by)


def _grouped(
    frame: pl.LazyFrame, time_col: str, by: list[str], w: Window, columns: dict[str, str]
) -> pl.LazyFrame:
    """Rows whose ``time_col`` is in the window, with dimension (and period) columns."""
    keys = _dims(by, columns) + ([period(time_col, w)] if w.granularity else [])
    return frame.filter(in_window(time_col, w)).with_columns(keys)


#: The flow family's counts, hidden numerators and denominators (``_``) included: what
#: adds up across any split of the items (the cluster engine sums them per bucket).
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


def _flow_flags() -> dict[str, dict[str, pl.Expr | None]]:
    late_h = hours_between("delivered_at", "promised_by")
    transit = hours_between("delivered_at", "accepted_at")
    has_acc = pl.col("accepted_at").is_not_null()
    judged = has_acc & pl.col("promised_by").is_not_null()
    return {
        "accepted_at": {"accepted_items": None},
        "delivered_at": {
            "delivered_items": None,
            "delivered_without_acceptance": ~has_acc,
            "on_time_items": judged & (late_h <= 0),
            "_judged": judged,
            "late_1d_items": judged & (late_h > 0) & (late_h <= 24),
            "late_2d_items": judged & (late_h > 24) & (late_h <= 48),
            "late_3d_plus_items": judged & (late_h > 48),
            "_within_72h": has_acc & (transit <= 72),
            "_transit_n": has_acc,
        },
        "returned_at": {"returned_items": None},
        "first_attempt_at": {
            "_first_ok": event_in(_DELIVERING, "first_attempt_outcome"),
            "_first_n": None,
        },
    }


#: The flow family's counts per time column (the branch grouping the rows of that time in
#: the window): each the rows where its condition holds (None: every row).
FLOW_FLAGS: Final = _flow_flags()
#: The flow ratios and their (numerator, denominator) counts.
FLOW_RATIOS: Final = {
    "on_time_ratio": ("on_time_items", "_judged"),
    "within_72h_ratio": ("_within_72h", "_transit_n"),
    "first_attempt_ratio": ("_first_ok", "_first_n"),
}
#: The per-hour counts of the rows of a time column in the window (keys, then the named
#: counts of ``FLOW_FLAGS``), or None: group the rows for them.
CountsOf = Callable[[str, dict[str, pl.Expr | None]], pl.LazyFrame | None]


def count_exprs(flags: dict[str, pl.Expr | None]) -> list[pl.Expr]:
    """The aggregations of ``FLOW_FLAGS`` counts (Int64)."""
    return [
        pl.len().cast(pl.Int64).alias(n) if c is None else count_if(c).alias(n)
        for n, c in flags.items()
    ]


def _transit_stats() -> list[pl.Expr]:
    has_acc = pl.col("accepted_at").is_not_null()
    transit = hours_between("delivered_at", "accepted_at").filter(has_acc)
    return [
        transit.mean().alias("transit_hours_mean"),
        transit.quantile(0.5, "linear").alias("transit_hours_p50"),
        transit.quantile(0.9, "linear").alias("transit_hours_p90"),
    ]


def _counts_asked(time_col: str, asked: Collection[str]) -> set[str] | None:
    """The counts of the branch that ``asked`` needs, or None when it asks more than counts
    and their ratios of it (a mean, a percentile)."""
    flags = FLOW_FLAGS[time_col]
    need = {n for n in flags if n in asked}
    need |= {c for r, pair in FLOW_RATIOS.items() if r in asked for c in pair if c in flags}
    if time_col == "delivered_at" and any(e.meta.output_name() in asked for e in _transit_stats()):
        return None
    return need


def flow_kpis(
    lifecycle: pl.LazyFrame,
    by: list[str],
    w: Window,
    *,
    asked: Collection[str] | None = None,
    counts_of: CountsOf | None = None,
) -> pl.LazyFrame:
    """Window KPIs of item flow: volumes, timeliness, transit time, first attempt.

    With ``asked``, only those columns are computed (with the answer's every row): a
    branch (the rows of one time column) asked for counts and their ratios only takes
    them from ``counts_of`` when it has them (a snapshot's per-hour counts), else from
    grouping its rows; a branch none of whose columns is asked gives its keys only."""
    keys = _keys(by, w)

    def agg(time_col: str, exprs: list[pl.Expr]) -> pl.LazyFrame:
        rows = _grouped(lifecycle, time_col, by, w, ITEM_COLUMNS)
        return rows.group_by(keys).agg(*exprs) if keys else rows.select(*exprs)

    def branch(time_col: str) -> tuple[pl.LazyFrame, list[str]]:
        flags = FLOW_FLAGS[time_col]
        stats = _transit_stats() if time_col == "delivered_at" else []
        need = _counts_asked(time_col, asked) if asked is not None and keys else None
        if need is None:  # everything, from the rows (in the columns' usual order)
            exprs = count_exprs(flags)
            at = list(flags).index("_within_72h") if stats else 0
            return agg(time_col, [*exprs[:at], *stats, *exprs[at:]]), list(flags)
        wanted = {n: c for n, c in flags.items() if n in need}
        got = counts_of(time_col, wanted) if counts_of is not None else None
        if got is None:
            got = agg(time_col, count_exprs(wanted))
        return got, list(wanted)

    branches = [branch(t) for t in FLOW_FLAGS]
    joined = outer_join([f for f, _ in branches], keys)
    counted = [n for _, names in branches for n in names]
    ratios = [
        ratio(num, den).alias(r)
        for r, (num, den) in FLOW_RATIOS.items()
        if num in counted and den in counted
    ]
    return joined.with_columns(pl.col(counted).fill_null(0)).with_columns(ratios)


COMPLAINT_COLUMNS: Final = {"region": "region", "product": "product", "category": "category"}


def complaint_kpis(
    complaints: pl.LazyFrame, lifecycle: pl.LazyFrame, by: list[str], w: Window
) -> pl.LazyFrame:
    """Window KPIs of complaints, including the rate per million accepted items."""
    keys = _keys(by, w)
    rows = _grouped(complaints, "opened_at", by, w, COMPLAINT_COLUMNS).with_columns(
        pl.col("category").cast(pl.String)
    )
    due = pl.col("opened_at") + w.complaint_deadline <= w.as_of
    resolved_in_time = (
        pl.col("resolved_at").is_not_null()
        & (pl.col("resolved_at") <= w.as_of)
        & (pl.col("resolved_at") - pl.col("opened_at") <= w.complaint_deadline)
    )
    exprs = (
        pl.len().cast(pl.Int64).alias("complaints"),
        count_if(pl.col("valid")).alias("valid_complaints"),
        count_if(due & resolved_in_time).alias("_resolved_7d"),
        count_if(due).alias("_due"),
    )
    counted = rows.group_by(keys).agg(*exprs) if keys else rows.select(*exprs)
    # The denominator: items accepted in the same window, by destination region and product.
    item_keys = [d for d in by if d in ("region", "product")]
    acc_keys = _keys(item_keys, w)
    acc_rows = _grouped(lifecycle, "accepted_at", item_keys, w, ITEM_COLUMNS)
    acc_expr = pl.len().cast(pl.Int64).alias("_accepted")
    accepted = acc_rows.group_by(acc_keys).agg(acc_expr) if acc_keys else acc_rows.select(acc_expr)
    if acc_keys:
        joined = counted.join(accepted, on=acc_keys, how="left", nulls_equal=True)
    else:  # one denominator for every group (e.g. by category only)
        joined = counted.join(accepted, how="cross")
    return joined.with_columns(complaint_rates())


def complaint_rates() -> tuple[pl.Expr, pl.Expr]:
    """The complaint ratios from their counts (``complaints``, ``_accepted``,
    ``_resolved_7d``, ``_due``): formed once the counts are complete."""
    return (
        (
            pl.col("complaints")
            * 1_000_000
            / pl.when(pl.col("_accepted") > 0).then(pl.col("_accepted"))
        )
        .cast(pl.Float64)
        .alias("complaints_per_million"),
        ratio("_resolved_7d", "_due").alias("resolved_within_7d_ratio"),
    )


def unfinished(lifecycle: pl.LazyFrame) -> pl.LazyFrame:
    """Items still in the network (neither delivered nor returned)."""
    return lifecycle.filter(~pl.col("finished"))


def waiting_items(lifecycle: pl.LazyFrame, facilities: pl.LazyFrame, w: Window) -> pl.LazyFrame:
    """Items waiting at a facility at as-of (last scan an event that WAITS, kpi/events.py), with age."""
    fac = facilities.select(
        pl.col("facility").alias("last_facility"),
        pl.col("type").cast(pl.String).alias("facility_type"),
        pl.col("region").alias("facility_region"),
    )
    age = hours_between(pl.lit(w.as_of), "last_event_at")
    return (
        unfinished(lifecycle)
        .filter(pl.col("last_event").is_in(events_with(Effect.WAITS)))
        .join(fac, on="last_facility", how="left")
        .with_columns(age.alias("age_hours"))
        .with_columns(age_band(pl.col("age_hours")).alias("age_band"))
    )


BACKLOG_COLUMNS: Final = {
    "facility": "last_facility",
    "facility_type": "facility_type",
    "region": "facility_region",
    "product": "product",
}


def backlog_kpis(
    lifecycle: pl.LazyFrame, facilities: pl.LazyFrame, by: list[str], w: Window
) -> pl.LazyFrame:
    """As-of backlog: waiting items by facility, age bands, oldest item, thresholds.

    Thresholds are compared per facility on its whole backlog (all products);
    facilities listed in ``facilities.csv`` appear with zero backlog unless the
    question is split by product.
    """
    waiting = waiting_items(lifecycle, facilities, w)
    band_counts = [count_if(pl.col("age_band") == b).alias(f"backlog_items_{b}") for b in AGE_BANDS]
    keys = [*by]
    rows = waiting.with_columns(_dims(by, BACKLOG_COLUMNS))
    exprs = (
        pl.len().cast(pl.Int64).alias("backlog_items"),
        pl.col("age_hours").max().alias("backlog_oldest_hours"),
        *band_counts,
    )
    counted = rows.group_by(keys).agg(*exprs) if keys else rows.select(*exprs)
    count_cols = ["backlog_items", *(f"backlog_items_{b}" for b in AGE_BANDS)]
    if "product" in by:
        return counted.with_columns(
            pl.lit(None, pl.Int64).alias("backlog_threshold_items"),
            pl.lit(None, pl.Int64).alias("backlog_over_threshold"),
        )
    fac_agg = backlog_thresholds(facilities, facility_backlog(waiting), by)
    joined = outer_join([counted, fac_agg], keys)
    return joined.with_columns(
        pl.col(count_cols).fill_null(0), pl.col("backlog_over_threshold").fill_null(0)
    )


def facility_backlog(waiting: pl.LazyFrame) -> pl.LazyFrame:
    """How many items wait at each facility (``last_facility``, ``_fac_total``)."""
    return waiting.group_by("last_facility").agg(pl.len().cast(pl.Int64).alias("_fac_total"))


def backlog_thresholds(
    facilities: pl.LazyFrame, per_facility: pl.LazyFrame, by: list[str]
) -> pl.LazyFrame:
    """Facility-level columns (threshold, over) from each facility's whole backlog
    (``facility_backlog``), aggregated to ``by``, starting from every known facility so
    idle ones show zero (not split by product)."""
    keys = [*by]
    fac = facilities.select(
        pl.col("facility").alias("last_facility"),
        pl.col("backlog_threshold").alias("_threshold"),
    )
    thresholds = fac.join(per_facility, on="last_facility", how="left").with_columns(
        (pl.col("_fac_total").fill_null(0) > pl.col("_threshold")).cast(pl.Int64).alias("_over")
    )
    fac_rows = (
        facilities.select(
            pl.col("facility").alias("last_facility"),
            pl.col("type").cast(pl.String).alias("facility_type"),
            pl.col("region").alias("facility_region"),
        )
        .join(thresholds, on="last_facility", how="left")
        .with_columns(_dims(by, BACKLOG_COLUMNS))
    )
    fac_exprs = (
        pl.col("_threshold").sum().alias("backlog_threshold_items"),
        pl.col("_threshold").is_not_null().any().alias("_has_threshold"),
        pl.col("_over").sum().alias("backlog_over_threshold"),
    )
    fac_agg = fac_rows.group_by(keys).agg(*fac_exprs) if keys else fac_rows.select(*fac_exprs)
    return fac_agg.with_columns(
        pl.when(pl.col("_has_threshold"))
        .then(pl.col("backlog_threshold_items"))
        .alias("backlog_threshold_items")
    ).drop("_has_threshold")


def network_kpis(lifecycle: pl.LazyFrame, by: list[str], w: Window) -> pl.LazyFrame:
    """As-of counts of unfinished, overdue and stalled items."""
    rows = unfinished(lifecycle).with_columns(_dims(by, ITEM_COLUMNS))
    exprs = (
        pl.len().cast(pl.Int64).alias("in_network_items"),
        count_if(pl.col("promised_by") < w.as_of).alias("overdue_items"),
        count_if(hours_between(pl.lit(w.as_of), "last_event_at") > w.stall_hours).alias(
            "stalled_items"
        ),
    )
    return rows.group_by(by).agg(*exprs) if by else rows.select(*exprs)


def open_complaint_kpis(complaints: pl.LazyFrame, by: list[str], w: Window) -> pl.LazyFrame:
    """As-of counts of open complaints and those past the 7-day reply deadline."""
    is_open = (pl.col("opened_at") <= w.as_of) & (
        pl.col("resolved_at").is_null() | (pl.col("resolved_at") > w.as_of)
    )
    rows = (
        complaints.filter(is_open)
        .with_columns(pl.col("category").cast(pl.String))
        .with_columns(_dims(by, COMPLAINT_COLUMNS))
    )
    exprs = (
        pl.len().cast(pl.Int64).alias("open_complaints"),
        count_if(pl.col("opened_at") < w.as_of - w.complaint_deadline).alias("overdue_complaints"),
    )
    return rows.group_by(by).agg(*exprs) if by else rows.select(*exprs)


def empty_facilities() -> pl.LazyFrame:
    """A facility table with no rows, for data folders without ``facilities.csv``."""
    return pl.LazyFrame(schema=FACILITY_SCHEMA)
