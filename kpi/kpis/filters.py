"""Filters on a KPI question's input rows, family by family (never on its answers).

A dimension maps to a different column per family, exactly as the KPI functions group
by it (see ``kpi.api.service``): a filter ``d = x`` keeps the rows that ``--by d``
would put in group ``x``. The single-process API applies them to a snapshot, the
cluster engine to each bucket's rows, with these same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

import polars as pl

from kpi.kpis.catalog import Family
from kpi.kpis.functions import ITEM_COLUMNS
from kpi.kpis.stages import StageTables, stage_filter

FilterOp = Literal["equals", "in", "not_in"]
COMPLAINT_COLUMNS: Final = {"region": "region", "product": "product", "category": "category"}
#: Backlog dimensions read from facilities.csv (the waiting item's facility).
_FACILITY_DIMS: Final = ("facility", "facility_type", "region")

Rows = TypeVar("Rows", pl.DataFrame, pl.LazyFrame)


@dataclass(frozen=True)
class Filter:
    """Keep rows whose dimension value is (or is not) one of ``values``; nulls never match."""

    dimension: str
    op: FilterOp
    values: tuple[str, ...]


def match(col: str, f: Filter) -> pl.Expr:
    """Rows whose ``col`` passes ``f`` (a null never does, even for ``not_in``)."""
    c = pl.col(col).cast(pl.String)
    inside = c.is_in(list(f.values))
    return c.is_not_null() & (~inside if f.op == "not_in" else inside)


def backlog_facilities(facilities: pl.DataFrame, filters: Sequence[Filter]) -> pl.DataFrame:
    """The facilities a backlog question keeps (its thresholds are theirs)."""
    for f in filters:
        if f.dimension in _FACILITY_DIMS:
            col = {"facility_type": "type"}.get(f.dimension, f.dimension)
            facilities = facilities.filter(match(col, f))
    return facilities


def restrict_rows(
    family: Family,
    lifecycle: Rows,
    complaints: Rows,
    facilities: pl.DataFrame,
    filters: Sequence[Filter],
) -> tuple[Rows, Rows, pl.DataFrame]:
    """(lifecycle, complaints, facilities) with only the rows ``family`` keeps (not stages)."""
    lc, comp = lifecycle, complaints
    for f in filters:
        d = f.dimension
        if family in (Family.FLOW, Family.NETWORK):
            lc = lc.filter(match(ITEM_COLUMNS[d], f))
        elif family in (Family.COMPLAINT, Family.OPEN_COMPLAINT):
            comp = comp.filter(match(COMPLAINT_COLUMNS[d], f))
            if family is Family.COMPLAINT and d in ("region", "product"):
                lc = lc.filter(match(ITEM_COLUMNS[d], f))
        elif d == "product":
            lc = lc.filter(match("product", f))
        elif d == "facility":
            lc = lc.filter(match("last_facility", f))
        else:
            kept = backlog_facilities(facilities, [f])
            # Items at facilities missing from facilities.csv have no region or type: excluded.
            lc = lc.filter(pl.col("last_facility").is_in(kept["facility"].implode()))
    if family is Family.BACKLOG:
        facilities = backlog_facilities(facilities, filters)
    return lc, comp, facilities


def restrict_stages(
    tables: StageTables, facilities: pl.DataFrame, filters: Sequence[Filter]
) -> StageTables:
    """The stage tables with only the rows the filters keep."""
    for f in filters:
        tables = stage_filter(tables, facilities, f.dimension, f.values, f.op == "not_in")
    return tables
