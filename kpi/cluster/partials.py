"""What one task adds: a bucket's (or the complaints') partial aggregates.

Each partial is computed by the single-process KPI functions themselves, on the rows of
one bucket: their count columns (hidden numerators and denominators included) add up
across buckets, their maxima combine by max. Means and percentiles do not add: for each
of them the task also ships, per group, how many rows took each distinct value (an
exact multiset), from the same rows the family function aggregates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from kpi.kpis.catalog import AGE_BANDS, STAGE_FAMILIES, Family
from kpi.kpis.exprs import PERIOD, Window, hours_between, in_window, period
from kpi.kpis.filters import Filter, restrict_rows, restrict_stages
from kpi.kpis.functions import (
    FLOW_COUNTS,
    ITEM_COLUMNS,
    backlog_kpis,
    complaint_kpis,
    facility_backlog,
    flow_kpis,
    network_kpis,
    open_complaint_kpis,
    waiting_items,
)
from kpi.kpis.stages import (
    DWELL,
    DWELL_COLUMNS,
    FIRST_MILE_COLUMNS,
    LAST_MILE_COLUMNS,
    LEG,
    LEG_COLUMNS,
    StageTables,
    dwell_kpis,
    empty_stage_tables,
    first_mile_kpis,
    item_stage_rows,
    last_mile_kpis,
    leg_kpis,
    stage_tables,
)
from kpi.lake import LakeError, read_events
from kpi.lifecycle import collect_state_counted, empty_state, lifecycle
from kpi.standards import ServiceStandards

#: The value column and its count in a multiset frame.
VALUE: Final = "_v"
COUNT: Final = "_n"
#: The denominator of complaints per million: items accepted, from the buckets.
ACCEPTED: Final = "accepted"


@dataclass(frozen=True)
class Spec:
    """How a family's columns combine across buckets."""

    adds: tuple[str, ...] = ()  # counts: they add
    maxes: tuple[str, ...] = ()  # maxima: the max of the maxima
    stats: tuple[tuple[str, bool], ...] = ()  # (prefix, with a mean): from the multisets
    ratios: tuple[tuple[str, str, str], ...] = ()  # (name, numerator, denominator)


SPECS: Final[dict[Family, Spec]] = {
    Family.FLOW: Spec(
        adds=FLOW_COUNTS,
        stats=(("transit", True),),
        ratios=(
            ("on_time_ratio", "on_time_items", "_judged"),
            ("within_72h_ratio", "_within_72h", "_transit_n"),
            ("first_attempt_ratio", "_first_ok", "_first_n"),
        ),
    ),
    Family.NETWORK: Spec(adds=("in_network_items", "overdue_items", "stalled_items")),
    Family.BACKLOG: Spec(
        adds=("backlog_items", *(f"backlog_items_{b}" for b in AGE_BANDS)),
        maxes=("backlog_oldest_hours",),
    ),
    Family.COMPLAINT: Spec(adds=("complaints", "valid_complaints", "_resolved_7d", "_due")),
    Family.OPEN_COMPLAINT: Spec(adds=("open_complaints", "overdue_complaints")),
    Family.DWELL: Spec(
        adds=("handled_items", "departures_without_arrival", "_dwell_ok", "_dwell_n"),
        stats=(("dwell", True),),
        ratios=(("dwell_within_target_ratio", "_dwell_ok", "_dwell_n"),),
    ),
    Family.LEG: Spec(
        adds=("leg_items", "_leg_ok"),
        stats=(("leg", True),),
        ratios=(("leg_within_target_ratio", "_leg_ok", "leg_items"),),
    ),
    Family.FIRST_MILE: Spec(
        adds=("_fm_same_day", "_fm_due"),
        stats=(("first_mile", False),),
        ratios=(("dispatched_same_day_ratio", "_fm_same_day", "_fm_due"),),
    ),
    Family.LAST_MILE: Spec(stats=(("last_mile", False),)),
}


@dataclass
class Part:
    """One family's partial: per-group sums (and maxima), multisets of values per stat."""

    sums: pl.DataFrame
    values: dict[str, pl.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class Ask:
    """The question as every task needs it."""

    as_of: dt.datetime
    w: Window
    by: tuple[str, ...]
    families: frozenset[Family]
    standards: ServiceStandards
    facilities: pl.DataFrame
    #: Filters on the input rows (the API's), applied per family as the single process does.
    filters: tuple[Filter, ...] = ()

    @property
    def keys(self) -> list[str]:
        """Group keys of windowed families (the snapshot ones group by ``by`` only)."""
        return [*self.by, PERIOD] if self.w.granularity else list(self.by)


def _multiset(rows: pl.LazyFrame, keys: list[str], value: pl.Expr) -> pl.LazyFrame:
    """Per group, how many rows took each distinct non-null value."""
    return (
        rows.with_columns(value.alias(VALUE))
        .filter(pl.col(VALUE).is_not_null())
        .group_by([*keys, VALUE])
        .agg(pl.len().cast(pl.Int64).alias(COUNT))
        .with_columns(pl.col(k).cast(pl.String) for k in keys if k != PERIOD)
    )


def _in_window(
    frame: pl.LazyFrame, time_col: str, by: Sequence[str], w: Window, columns: dict[str, str]
) -> pl.LazyFrame:
    """The rows a family function aggregates: ``time_col`` in the window, dims named."""
    dims = [pl.col(columns[d]).alias(d) for d in by]
    return frame.filter(in_window(time_col, w)).with_columns(
        *dims, *([period(time_col, w)] if w.granularity else [])
    )


def _facility_info(facilities: pl.LazyFrame, fac_type: pl.DataType, prefix: str) -> pl.LazyFrame:
    return facilities.select(
        pl.col("facility").cast(fac_type, strict=False).alias(f"{prefix}facility"),
        pl.col("type").cast(pl.String).alias(f"{prefix}facility_type"),
        pl.col("region").alias(f"{prefix}region"),
    ).drop_nulls(f"{prefix}facility")


def stage_values(family: Family, tables: StageTables, ask: Ask) -> pl.LazyFrame:
    """The multiset of a stage family's hours, from the rows its function aggregates."""
    by, w, keys = list(ask.by), ask.w, ask.keys
    scans, items = tables.scans.lazy(), tables.items.lazy()
    fac_type = tables.scans.schema["facility"]
    facilities = ask.facilities.lazy()
    if family is Family.DWELL:
        rows = scans.filter(pl.col("kind") == DWELL)
        if {"facility_type", "region"} & set(by):
            rows = rows.join(_facility_info(facilities, fac_type, ""), on="facility", how="left")
        return _multiset(_in_window(rows, "at", by, w, DWELL_COLUMNS), keys, pl.col("hours"))
    if family is Family.LEG:
        rows = scans.filter(pl.col("kind") == LEG)
        if "from_region" in by:
            info = _facility_info(facilities, fac_type, "from_")
            rows = rows.join(info.select("from_facility", "from_region"), on="from_facility")
        if "to_region" in by:
            info = _facility_info(facilities, fac_type, "").select(
                "facility", pl.col("region").alias("to_region")
            )
            rows = rows.join(info, on="facility", how="left")
        return _multiset(_in_window(rows, "at", by, w, LEG_COLUMNS), keys, pl.col("hours"))
    if family is Family.FIRST_MILE:
        rows = _in_window(items, "first_departed_at", by, w, FIRST_MILE_COLUMNS)
        return _multiset(rows, keys, hours_between("first_departed_at", "accepted_at"))
    rows = items.filter(pl.col("last_arrived_at").is_not_null())
    rows = _in_window(rows, "delivered_at", by, w, LAST_MILE_COLUMNS)
    return _multiset(rows, keys, hours_between("delivered_at", "last_arrived_at"))


def _sums(frame: pl.LazyFrame, family: Family, keys: list[str]) -> pl.LazyFrame:
    spec = SPECS[family]
    names = frame.collect_schema().names()
    cols = [c for c in (*spec.adds, *spec.maxes) if c in names]
    return frame.select(*keys, *cols)


def _plans(lc: pl.LazyFrame, tables: StageTables | None, ask: Ask) -> dict[str, pl.LazyFrame]:
    """Every lazy frame the bucket's partial is made of, by name."""
    by, w, keys = list(ask.by), ask.w, ask.keys
    plans: dict[str, pl.LazyFrame] = {}
    for family in ask.families:
        if family in STAGE_FAMILIES:
            if tables is not None:
                plans |= _stage_plans(family, tables, ask)
            continue
        # The family's own input rows (the filters, as `kpi.kpis.filters` maps them).
        lcf, _, fac = restrict_rows(family, lc, lc, ask.facilities, ask.filters)
        if family is Family.FLOW:
            plans["flow"] = _sums(flow_kpis(lcf, by, w), family, keys)
            rows = _in_window(lcf.filter(pl.col("accepted_at").is_not_null()), "delivered_at",
                              by, w, ITEM_COLUMNS)  # fmt: skip
            plans["flow/transit"] = _multiset(rows, keys, hours_between("delivered_at",
                                                                        "accepted_at"))  # fmt: skip
        elif family is Family.NETWORK:
            plans["network"] = _sums(network_kpis(lcf, by, w), family, list(by))
        elif family is Family.BACKLOG:
            plans["backlog"] = _sums(backlog_kpis(lcf, fac.lazy(), by, w), family, list(by))
            plans["backlog/facility"] = facility_backlog(waiting_items(lcf, fac.lazy(), w))
        elif family is Family.COMPLAINT:
            # The denominator: items accepted in the window, as complaint_kpis counts them.
            item_by = [d for d in by if d in ("region", "product")]
            item_keys = [*item_by, PERIOD] if w.granularity else item_by
            accepted = flow_kpis(lcf, item_by, w).select(
                *item_keys, pl.col("accepted_items").alias("_accepted")
            )
            plans[ACCEPTED] = accepted
    return plans


def _stage_plans(family: Family, tables: StageTables, ask: Ask) -> dict[str, pl.LazyFrame]:
    """A stage family's sums and multiset, from the stage rows the filters keep."""
    kept = restrict_stages(tables, ask.facilities, ask.filters)
    prefix = SPECS[family].stats[0][0]
    return {
        family.value: _sums(_stage_kpis(family, kept, ask), family, ask.keys),
        f"{family.value}/{prefix}": stage_values(family, kept, ask),
    }


def _stage_kpis(family: Family, tables: StageTables, ask: Ask) -> pl.LazyFrame:
    by, w, targets = list(ask.by), ask.w, ask.standards.stages
    scans, items, fac = tables.scans.lazy(), tables.items.lazy(), ask.facilities.lazy()
    if family is Family.DWELL:
        return dwell_kpis(scans, fac, by, w, targets)
    if family is Family.LEG:
        return leg_kpis(scans, fac, by, w, targets)
    if family is Family.FIRST_MILE:
        return first_mile_kpis(items, by, w)
    return last_mile_kpis(items, by, w)


def _collect(plans: dict[str, pl.LazyFrame]) -> dict[str, Part]:
    """The named frames, collected together, grouped into one ``Part`` per family."""
    frames = dict(zip(plans, pl.collect_all(list(plans.values())), strict=True))
    parts: dict[str, Part] = {}
    for name, frame in frames.items():
        family, _, stat = name.partition("/")
        part = parts.setdefault(family, Part(pl.DataFrame()))
        if stat:
            part.values[stat] = frame
        else:
            part.sums = frame
    return parts


def bad_part(files: Sequence[str | Path], where: str) -> LakeError | None:
    """A ``LakeError`` naming the first of ``files`` that cannot be read, if any."""
    for path in files:
        try:
            pl.read_parquet(path)
        except Exception as exc:
            return LakeError(f"{where}: lake part {path} cannot be read ({exc})")
    return None


def unreadable(exc: Exception, files: Sequence[str | Path], where: str) -> LakeError:
    """A ``LakeError`` for ``exc`` (raised reading ``files``) naming the part at fault."""
    return bad_part(files, where) or LakeError(
        f"{where}: its parts cannot be read together ({exc})"
    )


def _events(files: Sequence[str], bucket: int) -> pl.DataFrame:
    """The bucket's events, or ``LakeError`` naming the part that cannot be read."""
    try:
        return read_events(Path(), [Path(f) for f in files]).collect()
    except LakeError:
        raise
    except Exception as exc:  # polars or the OS: find the part to name it
        raise unreadable(exc, files, f"bucket {bucket}") from exc


Span = tuple[dt.datetime | None, dt.datetime | None, dt.datetime | None]


def bucket_span(files: Sequence[str], bucket: int, as_of: dt.datetime | None) -> Span:
    """(first, last) event instant up to ``as_of`` (all when None), and the first of all."""
    ts = pl.col("ts")
    upto = ts if as_of is None else ts.filter(ts <= as_of)
    try:
        row = (
            read_events(Path(), [Path(f) for f in files])
            .select(upto.min().alias("a"), upto.max().alias("b"), ts.min().alias("c"))
            .collect()
            .row(0)
        )
    except LakeError:
        raise
    except Exception as exc:
        raise unreadable(exc, files, f"bucket {bucket}") from exc
    return row[0], row[1], row[2]


def bucket_partial(files: Sequence[str], bucket: int, ask: Ask) -> dict[str, Part]:
    """One bucket's partials, family by family (the task a worker runs)."""
    events = _events(files, bucket) if files else read_events(Path(), []).collect()
    cut = events.lazy().filter(pl.col("ts") <= ask.as_of)
    state, _, _, _ = collect_state_counted(events.lazy(), ask.as_of)
    lc = lifecycle(state.lazy(), ask.standards).collect()
    tables = None
    if ask.families & STAGE_FAMILIES:
        tables = item_stage_rows(stage_tables(cut), lc, ask.standards)
    return _collect(_plans(lc.lazy(), tables, ask))


def empty_partial(ask: Ask) -> dict[str, Part]:
    """The partial of a bucket without events: the shape of an empty answer."""
    lc = lifecycle(empty_state().lazy(), ask.standards).collect()
    tables = None
    if ask.families & STAGE_FAMILIES:
        tables = item_stage_rows(empty_stage_tables(), lc, ask.standards)
    return _collect(_plans(lc.lazy(), tables, ask))


def complaints_partial(complaints: str | None, ask: Ask) -> dict[str, Part]:
    """The complaint families' counts (complaints are not bucketed: one task reads them)."""
    from kpi.contract import SCHEMAS, Kind  # noqa: PLC0415  (only this task needs it)

    by, w = list(ask.by), ask.w
    if complaints is None:
        frame = pl.LazyFrame(schema=SCHEMAS[Kind.COMPLAINTS])
    else:
        frame = pl.scan_parquet(complaints).cast(SCHEMAS[Kind.COMPLAINTS])  # type: ignore[arg-type]
    frame = frame.filter(pl.col("opened_at") <= ask.as_of)
    no_items = lifecycle(empty_state().lazy(), ask.standards)
    plans: dict[str, pl.LazyFrame] = {}
    if Family.COMPLAINT in ask.families:
        _, rows, _ = restrict_rows(Family.COMPLAINT, no_items, frame, ask.facilities, ask.filters)
        counted = complaint_kpis(rows, no_items, by, w)
        plans[Family.COMPLAINT.value] = _sums(counted, Family.COMPLAINT, ask.keys)
    if Family.OPEN_COMPLAINT in ask.families:
        _, rows, _ = restrict_rows(Family.OPEN_COMPLAINT, no_items, frame, ask.facilities,
                                   ask.filters)  # fmt: skip
        plans[Family.OPEN_COMPLAINT.value] = open_complaint_kpis(rows, by, w)
    try:
        return _collect(plans)
    except Exception as exc:  # a corrupt complaints part
        raise LakeError(f"lake complaints {complaints} cannot be read ({exc})") from exc
