"""Stage KPIs: the four links of an item's journey, per scan, in pure polars.

The end-to-end KPIs (``functions.py``) say *that* an item was late; these say *where*
it lost the time:

- **dwell** (processing): a ``departed`` scan's ``ts`` minus the same item's latest
  ``arrived`` scan at the same facility at or before it;
- **leg** (transport): an ``arrived`` scan at facility *g* minus the same item's
  latest ``departed`` scan strictly before it among those at other facilities *f*;
- **first mile** (collection): the item's first ``departed`` scan at or after its
  acceptance minus the acceptance;
- **last mile** (delivery): the delivery (earliest ``delivered`` scan) minus the
  item's latest ``arrived`` scan at or before it.

``stage_tables`` (``kpi.kpis.stage_build``) turns validated events into two tables,
once per snapshot: one row per departure (dwell) and per leg, and one row per accepted
or delivered item (first and last mile). The family functions then aggregate them over
a window like the other families.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import polars as pl

from kpi.kpis.exprs import (
    PERIOD,
    Window,
    count_if,
    hours_between,
    in_window,
    outer_join,
    period,
    ratio,
)
from kpi.kpis.stage_build import (
    DWELL,
    ITEM_HASH_SEED,
    LEG,
    STAGE_EVENTS,
    StageKind,
    StageTables,
    empty_stage_tables,
    stage_tables,
    tables_from_moves,
)
from kpi.standards import ServiceStandards, StageTargets, with_dispatch_by

__all__ = [
    "DWELL",
    "ITEM_HASH_SEED",
    "LEG",
    "STAGE_EVENTS",
    "StageKind",
    "StageTables",
    "dwell_kpis",
    "empty_stage_tables",
    "first_mile_kpis",
    "item_stage_rows",
    "last_mile_kpis",
    "leg_kpis",
    "slow_legs",
    "stage_filter",
    "stage_tables",
    "stage_tables_of_pass",
]


def item_stage_rows(
    tables: StageTables, lifecycle: pl.DataFrame, standards: ServiceStandards
) -> StageTables:
    """``tables`` with the items' product, origin, destination (from the lifecycle), the
    end of their deposit day (``dispatch_by``) and the item ids."""
    ids = tables.ids
    dim_cols = ("product", "origin", "destination")
    if ids is None:  # h is the hash of the id (joined as integers, not the id text)
        hashed = lifecycle.select(
            pl.col("item_id").hash(ITEM_HASH_SEED).alias("h"), "item_id", *dim_cols
        )
        ids = hashed.select("h", "item_id")
        dims = hashed.drop("item_id")
    else:
        dims = lifecycle.select("item_id", *dim_cols).join(ids, on="item_id").drop("item_id")
    # Both sides sorted by h (the stage build's items are): the join merges (0.28 s as a
    # hash join of 1.2 M items, 0.14 s sorting the lifecycle side and merging).
    items = tables.items.sort("h").join(dims.sort("h"), on="h", how="left")
    return StageTables(tables.scans, with_dispatch_by(items, standards), ids)


def stage_tables_of_pass(
    moves: pl.DataFrame, lifecycle: pl.DataFrame, standards: ServiceStandards
) -> StageTables:
    """``item_stage_rows(stage_tables(events), lifecycle, standards)`` from the arrivals
    and departures ``kpi.state_scan``'s pass kept (``ScannedState.stage_rows``) and the
    lifecycle it built: there, an item's first acceptance and first delivery are the
    state's ``accepted_at`` (the earliest acceptance wins) and ``delivered_at`` (the
    earliest ``delivered``, the one event that delivers), and ``h`` is the id's hash."""
    hashed = lifecycle.select(
        pl.col("item_id").hash(ITEM_HASH_SEED).alias("h"),
        "item_id",
        "product",
        "origin",
        "destination",
        "accepted_at",
        "delivered_at",
    )
    ends = hashed.filter(
        pl.col("accepted_at").is_not_null() | pl.col("delivered_at").is_not_null()
    ).drop("item_id")
    if moves.is_empty() and ends.is_empty():  # no stage scan: as ``stage_tables`` says
        return item_stage_rows(empty_stage_tables(), lifecycle, standards)
    # The deposit day's end needs only the acceptance and the product: worked out beside
    # the build (a thread; polars lets go of the GIL), on rows in the items' order.
    with ThreadPoolExecutor(1) as pool:
        due = pool.submit(
            lambda: with_dispatch_by(ends.select("accepted_at", "product"), standards)
        )
        tables = tables_from_moves(moves, ends)
        items = tables.items.select(*_ITEM_COLUMNS, "product", "origin", "destination")
        # One chunk per column (the lifecycle's are many): the queries read it whole.
        items = items.hstack(due.result().select("dispatch_by")).rechunk()
    return StageTables(tables.scans, items, hashed.select("h", "item_id"))


#: The stage build's columns of ``StageTables.items``, in order.
_ITEM_COLUMNS: Final = (
    "h",
    "accepted_at",
    "first_departed_at",
    "delivered_at",
    "last_arrived_at",
    "last_arrival_facility",
)


# --- the family functions -------------------------------------------------------------

DWELL_COLUMNS: Final = {
    "facility": "facility",
    "facility_type": "facility_type",
    "region": "region",
}
LEG_COLUMNS: Final = {
    "from_facility": "from_facility",
    "to_facility": "facility",
    "from_region": "from_region",
    "to_region": "to_region",
}
FIRST_MILE_COLUMNS: Final = {"origin": "origin", "product": "product"}
LAST_MILE_COLUMNS: Final = {
    "destination": "destination",
    "facility": "last_arrival_facility",
    "product": "product",
}


def _facility_lookup(facilities: pl.LazyFrame, values: pl.Expr) -> Callable[[str], pl.Expr]:
    """``values`` (an expression over ``facilities.csv``) of the facility named in a
    column of the stage rows; null for a facility the table does not list.

    Stage rows name facilities as ``Categorical``: the value is gathered by the
    category's integer code from a table indexed by code (a join per query cost ~10x)."""
    code = pl.col("facility").cast(pl.String).cast(pl.Categorical).to_physical()
    info = (
        facilities.select(code.cast(pl.Int64).alias("code"), values.alias("value"))
        .drop_nulls("code")
        .unique("code", keep="first", maintain_order=True)
        .collect()
    )
    if not info.height:
        return lambda col: pl.lit(None, info.schema["value"])
    size = int(info["code"].max()) + 1  # type: ignore[arg-type]
    codes = pl.DataFrame({"code": pl.int_range(size, eager=True, dtype=pl.Int64)})
    table = codes.join(info, on="code", how="left", maintain_order="left")["value"]

    def of(col: str) -> pl.Expr:
        at = pl.col(col).cast(pl.Categorical).to_physical().cast(pl.Int64)
        return pl.when(at < size).then(pl.lit(table).gather(at.clip(0, size - 1)))

    return of


#: A ``facilities.csv`` text column as categories (grouped as integers, named once).
_REGION: Final = pl.col("region").cast(pl.String).cast(pl.Categorical)
_TYPE: Final = pl.col("type").cast(pl.String).cast(pl.Categorical)


def _rows(
    frame: pl.LazyFrame, time_col: str, by: list[str], w: Window, columns: dict[str, str]
) -> tuple[pl.LazyFrame, list[str]]:
    keys = [*by, PERIOD] if w.granularity else list(by)
    dims = [pl.col(columns[d]).alias(d) for d in by]
    rows = frame.filter(in_window(time_col, w)).with_columns(
        *dims, *([period(time_col, w)] if w.granularity else [])
    )
    return rows, keys


def _agg(rows: pl.LazyFrame, by: list[str], keys: list[str], *exprs: pl.Expr) -> pl.LazyFrame:
    if not keys:
        return rows.select(*exprs)
    schema = rows.collect_schema()
    if len(keys) == 2 and all(schema[k] == pl.Categorical for k in keys):
        # A pair of facilities or regions: grouped by one integer made of both codes (null
        # as 0), 2x faster than by the two columns; the names are each group's first.
        a, b = (pl.col(k).to_physical().cast(pl.UInt64).add(1).fill_null(0) for k in keys)
        pair = (a * 2**32 + b).alias("_pair")
        grouped = rows.with_columns(pair).group_by("_pair").agg(pl.col(keys).first(), *exprs)
        rows_out = grouped.drop("_pair")
    else:
        rows_out = rows.group_by(keys).agg(*exprs)
    # Facilities are grouped as integers (categories) and named once per group.
    return rows_out.with_columns(pl.col(d).cast(pl.String) for d in by)


def _hours_stats(prefix: str, hours: pl.Expr, mean: bool = True) -> list[pl.Expr]:
    stats = [
        hours.quantile(0.5, "linear").alias(f"{prefix}_hours_p50"),
        hours.quantile(0.9, "linear").alias(f"{prefix}_hours_p90"),
    ]
    return [hours.mean().alias(f"{prefix}_hours_mean"), *stats] if mean else stats


def _dwell_target_expr(targets: StageTargets, ftype_of: pl.Expr) -> pl.Expr:
    expr: pl.Expr = pl.lit(targets.dwell_hours.get("default"), pl.Float64)
    for ftype, hours in targets.dwell_hours.items():
        if ftype != "default":
            expr = pl.when(ftype_of == ftype).then(pl.lit(hours)).otherwise(expr)
    return expr


def dwell_kpis(
    scans: pl.LazyFrame,
    facilities: pl.LazyFrame,
    by: list[str],
    w: Window,
    targets: StageTargets,
) -> pl.LazyFrame:
    """Window KPIs of processing: departures in the window and their dwell times."""
    rows = scans.filter(pl.col("kind") == DWELL)
    if "facility_type" in by:
        rows = rows.with_columns(
            _facility_lookup(facilities, _TYPE)("facility").alias("facility_type")
        )
    if "region" in by:
        rows = rows.with_columns(_facility_lookup(facilities, _REGION)("facility").alias("region"))
    rows, keys = _rows(rows, "at", by, w, DWELL_COLUMNS)
    hours = pl.col("hours")
    timed = hours.is_not_null()
    exprs = [
        pl.len().cast(pl.Int64).alias("handled_items"),
        count_if(~timed).alias("departures_without_arrival"),
        *_hours_stats("dwell", hours.filter(timed)),
    ]
    if not targets.dwell_hours:
        out = _agg(rows, by, keys, *exprs)
        return out.with_columns(pl.lit(None, pl.Float64).alias("dwell_within_target_ratio"))
    # A facility the table does not list has no type: the default target, as for any type
    # without its own.
    of_type = _facility_lookup(
        facilities, _dwell_target_expr(targets, pl.col("type").cast(pl.String))
    )
    target = of_type("facility").fill_null(pl.lit(targets.dwell_hours.get("default"), pl.Float64))
    rows = rows.with_columns(target.alias("_target"))
    target = pl.col("_target")
    judged = timed & target.is_not_null()
    exprs += [
        count_if(judged & (hours <= target)).alias("_dwell_ok"),
        count_if(judged).alias("_dwell_n"),
    ]
    out = _agg(rows, by, keys, *exprs)
    return out.with_columns(ratio("_dwell_ok", "_dwell_n").alias("dwell_within_target_ratio"))


def leg_kpis(
    scans: pl.LazyFrame,
    facilities: pl.LazyFrame,
    by: list[str],
    w: Window,
    targets: StageTargets,
) -> pl.LazyFrame:
    """Window KPIs of transport: legs ending (arrivals) in the window, by route."""
    rows = scans.filter(pl.col("kind") == LEG)
    if {"from_region", "to_region"} & set(by):
        region = _facility_lookup(facilities, _REGION)
        if "from_region" in by:
            rows = rows.with_columns(region("from_facility").alias("from_region"))
        if "to_region" in by:
            rows = rows.with_columns(region("facility").alias("to_region"))
    rows, keys = _rows(rows, "at", by, w, LEG_COLUMNS)
    hours = pl.col("hours")
    target = targets.leg_target()
    exprs = [pl.len().cast(pl.Int64).alias("leg_items"), *_hours_stats("leg", hours)]
    if target is None:
        out = _agg(rows, by, keys, *exprs)
        return out.with_columns(pl.lit(None, pl.Float64).alias("leg_within_target_ratio"))
    out = _agg(rows, by, keys, *exprs, count_if(hours <= target).alias("_leg_ok"))
    return out.with_columns(ratio("_leg_ok", "leg_items").alias("leg_within_target_ratio"))


def first_mile_kpis(items: pl.LazyFrame, by: list[str], w: Window) -> pl.LazyFrame:
    """Window KPIs of collection: acceptance to first departure, same-day dispatch."""
    dispatched, keys = _rows(items, "first_departed_at", by, w, FIRST_MILE_COLUMNS)
    hours = hours_between("first_departed_at", "accepted_at")
    timed = _agg(dispatched, by, keys, *_hours_stats("first_mile", hours, mean=False))
    accepted, _ = _rows(items, "accepted_at", by, w, FIRST_MILE_COLUMNS)
    due = pl.col("dispatch_by").is_not_null() & (pl.col("dispatch_by") <= w.as_of)
    departed = pl.col("first_departed_at")
    same_day = departed.is_not_null() & (departed <= pl.col("dispatch_by"))
    counts = _agg(
        accepted,
        by,
        keys,
        count_if(due & same_day).alias("_fm_same_day"),
        count_if(due).alias("_fm_due"),
    )
    joined = outer_join([timed, counts], keys)
    return joined.with_columns(ratio("_fm_same_day", "_fm_due").alias("dispatched_same_day_ratio"))


def last_mile_kpis(items: pl.LazyFrame, by: list[str], w: Window) -> pl.LazyFrame:
    """Window KPIs of delivery: last arrival (at the delivering office) to delivery."""
    rows = items.filter(pl.col("last_arrived_at").is_not_null())
    rows, keys = _rows(rows, "delivered_at", by, w, LAST_MILE_COLUMNS)
    hours = hours_between("delivered_at", "last_arrived_at")
    return _agg(rows, by, keys, *_hours_stats("last_mile", hours, mean=False))


# --- slices (the API's filters) and the legs drill-down ----------------------------------

_ITEM_FILTER_COLUMNS: Final = {
    "origin": "origin",
    "destination": "destination",
    "region": "destination",  # as for item KPIs: the destination region
    "product": "product",
    "facility": "last_arrival_facility",
}


def _facilities_where(facilities: pl.DataFrame, column: str, values: tuple[str, ...]) -> list[str]:
    return facilities.filter(pl.col(column).cast(pl.String).is_in(list(values)))[
        "facility"
    ].to_list()


def stage_filter(
    tables: StageTables,
    facilities: pl.DataFrame,
    dimension: str,
    values: tuple[str, ...],
    exclude: bool = False,
) -> StageTables:
    """The stage rows whose ``dimension`` is one of ``values`` (or none of them, with
    ``exclude``; unknown values never match either way). ``region`` keeps dwell rows of
    facilities in those regions, legs that start or end in them, and items destined there.
    """

    def match(col: pl.Expr) -> pl.Expr:
        text = col.cast(pl.String)
        inside = text.is_in(list(values))
        return text.is_not_null() & (~inside if exclude else inside)

    def in_regions(col: str) -> pl.Expr:
        names = _facilities_where(facilities, "region", values)
        inside = pl.col(col).cast(pl.String).is_in(names)
        return pl.col(col).is_not_null() & (~inside if exclude else inside)

    scans = tables.scans
    fac, frm = pl.col("facility"), pl.col("from_facility")
    is_dwell = pl.col("kind") == DWELL
    scan_cond: pl.Expr | None = {
        "facility": is_dwell & match(fac),
        "facility_type": is_dwell
        & match(
            fac.cast(pl.String).replace_strict(
                facilities["facility"], facilities["type"].cast(pl.String), default=None
            )
        ),
        "region": pl.when(is_dwell)
        .then(in_regions("facility"))
        .otherwise(in_regions("facility") | in_regions("from_facility")),
        "from_facility": ~is_dwell & match(frm),
        "to_facility": ~is_dwell & match(fac),
        "from_region": ~is_dwell & in_regions("from_facility"),
        "to_region": ~is_dwell & in_regions("facility"),
    }.get(dimension)
    if scan_cond is not None:
        scans = scans.filter(scan_cond)
    items = tables.items
    if dimension in _ITEM_FILTER_COLUMNS:
        items = items.filter(match(pl.col(_ITEM_FILTER_COLUMNS[dimension])))
    return StageTables(scans, items, tables.ids)


def slow_legs(
    tables: StageTables, facilities: pl.DataFrame, min_hours: float | None = None
) -> pl.DataFrame:
    """Every leg (slowest first): item, route, regions, departure, arrival and hours."""
    region = dict(
        zip(facilities["facility"].to_list(), facilities["region"].to_list(), strict=True)
    )
    legs = tables.scans.filter(pl.col("kind") == LEG)
    if min_hours is not None:
        legs = legs.filter(pl.col("hours") >= min_hours)
    ids = (
        tables.ids
        if tables.ids is not None
        else pl.DataFrame(schema={"h": pl.UInt64, "item_id": pl.String})
    )
    legs = legs.join(ids, on="h", how="left")
    return legs.select(
        "item_id",
        pl.col("from_facility").cast(pl.String),
        pl.col("facility").cast(pl.String).alias("to_facility"),
        pl.col("from_facility")
        .cast(pl.String)
        .replace_strict(region, default=None, return_dtype=pl.String)
        .alias("from_region"),
        pl.col("facility")
        .cast(pl.String)
        .replace_strict(region, default=None, return_dtype=pl.String)
        .alias("to_region"),
        pl.col("started_at").alias("departed_at"),
        pl.col("at").alias("arrived_at"),
        "hours",
    ).sort(["hours", "item_id"], descending=[True, False])
