"""Small expression helpers shared by the KPI families (``-> pl.Expr``, composed with ``.pipe``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import polars as pl

from kpi.kpis.catalog import AGE_BAND_EDGES, AGE_BANDS

_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)

PERIOD: Final = "period"
_EVERY: Final = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo"}
US_PER_HOUR: Final = 3_600_000_000


@dataclass(frozen=True)
class Window:
    """What a KPI question is about: window [start, end), the as-of instant, time buckets."""

    as_of: dt.datetime
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    granularity: str | None = None
    tz: str = "UTC"
    stall_hours: float = 48.0
    complaint_deadline: dt.timedelta = field(default=dt.timedelta(days=7))


def in_window(col: str, w: Window) -> pl.Expr:
    """``col`` in [start, end) and not after as-of (open bounds when unset)."""
    c = pl.col(col)
    cond = c.is_not_null() & (c <= w.as_of)
    if w.start is not None:
        cond &= c >= w.start
    if w.end is not None:
        cond &= c < w.end
    return cond


def period(col: str, w: Window) -> pl.Expr:
    """Start of the time bucket holding ``col``, in the window's time zone."""
    assert w.granularity is not None
    return pl.col(col).dt.convert_time_zone(w.tz).dt.truncate(_EVERY[w.granularity]).alias(PERIOD)


def hours_between(later: str | pl.Expr, earlier: str | pl.Expr) -> pl.Expr:
    """(later - earlier) in hours, as a float."""
    a = pl.col(later) if isinstance(later, str) else later
    b = pl.col(earlier) if isinstance(earlier, str) else earlier
    return (a - b).dt.total_microseconds().cast(pl.Float64) / US_PER_HOUR


def age_band(hours: pl.Expr) -> pl.Expr:
    """The age band label of an age in hours (lower edge inclusive)."""
    expr: pl.Expr = pl.lit(AGE_BANDS[-1])
    for edge, band in reversed(list(zip(AGE_BAND_EDGES, AGE_BANDS[:-1], strict=True))):
        expr = pl.when(hours < edge).then(pl.lit(band)).otherwise(expr)
    return expr


def count_if(cond: pl.Expr) -> pl.Expr:
    """Number of rows where ``cond`` holds (nulls count as false)."""
    return cond.fill_null(False).cast(pl.Int64).sum()


def ratio(num: str, den: str) -> pl.Expr:
    """num / den, null (not NaN or infinity) when the denominator is zero or null."""
    return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den)).otherwise(None)


def outer_join(frames: Sequence[_Frame], keys: list[str]) -> _Frame:
    """Frames side by side: a full join on ``keys`` (nulls match), or columns beside
    columns when there are no keys (one row each)."""
    out = frames[0]
    for f in frames[1:]:
        if keys:
            out = out.join(f, on=keys, how="full", coalesce=True, nulls_equal=True)
        else:
            out = pl.concat([out, f], how="horizontal")
    return out
