"""Small expression helpers shared by the KPI families (``-> pl.Expr``, composed with ``.pipe``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import polars as pl

from kpi.kpis.catalog import AGE_BAND_EDGES, AGE_BANDS

_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)

PERIOD: Final = "period"
_EVERY: Final = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo"}
US_PER_HOUR: Final = 3_600_000_000
_MINUTE: Final = dt.timedelta(minutes=1)
_MICROSECOND: Final = dt.timedelta(microseconds=1)
#: Below this many values ``periods`` truncates each one (the per-minute map costs more),
#: and over spans of this many minutes (about two years) too.
_DIRECT_BELOW: Final = 2048
_MAX_SLOTS: Final = 1_000_000
_US_PER_MINUTE: Final = 60_000_000


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
    """Start of the time bucket holding ``col`` (UTC, microseconds), in the window's time zone."""
    assert w.granularity is not None
    every, tz = _EVERY[w.granularity], w.tz
    return (
        pl.col(col)
        .map_batches(
            lambda s: periods(s, tz, every),
            return_dtype=pl.Datetime("us", tz),
            # The whole column at once: the per-minute table is built once, not per batch.
            is_elementwise=False,
        )
        .alias(PERIOD)
    )


def periods(s: pl.Series, tz: str, every: str) -> pl.Series:
    """``s.dt.convert_time_zone(tz).dt.truncate(every)``, computed once per UTC hour or minute.

    Truncating in a time zone looks up the zone's offset for every value (most of a KPI
    query's time on a million items). The values of one UTC hour (or minute) share
    their bucket when its first and last microsecond do and the zone's offset does not
    change inside it: its local clock then runs straight through, and truncation is
    monotone on it (offsets change at most once an hour, in fact months apart). Checked
    for every hour of the values' span, else every minute: if a minute fails too (a
    zone whose offset has seconds, e.g. local mean time before 1900), every value is
    truncated on its own.
    """

    def direct(x: pl.Series) -> pl.Series:
        return x.dt.convert_time_zone(tz).dt.truncate(every).cast(pl.Datetime("us", tz))

    if s.len() < _DIRECT_BELOW or s.dtype != pl.Datetime("us", "UTC"):
        return direct(s)
    # Hours first (a few hundred keys); minutes when an hour holds a boundary (zones
    # with half- and quarter-hour offsets); each value on its own when a minute does.
    epoch = s.dt.epoch("us")
    for unit in (US_PER_HOUR, _US_PER_MINUTE):
        out = _per_unit(epoch, unit, direct)
        if out is not None:
            return out.alias(s.name)
    return direct(s)


def _per_unit(
    epoch: pl.Series, unit: int, direct: Callable[[pl.Series], pl.Series]
) -> pl.Series | None:
    """``direct`` of every value, from one truncation per ``unit`` (µs) of the values'
    span; None when some unit of the span is not wholly in one bucket (see ``periods``)."""
    slots = epoch // unit
    first, last = slots.min(), slots.max()
    if not isinstance(first, int) or not isinstance(last, int) or last - first >= _MAX_SLOTS:
        return None
    # Every slot of the span, in order: row i of ``keys`` is slot ``first + i``.
    keys = (pl.int_range(first, last + 1, eager=True) * unit).cast(pl.Datetime("us"))
    keys = keys.dt.replace_time_zone("UTC")
    width = dt.timedelta(microseconds=unit - 1)
    ends = keys + width
    try:
        lo, hi = direct(keys), direct(ends)
    except pl.exceptions.ComputeError:  # a slot of the span has no such local time
        return None  # the caller truncates each value: it raises only if one has none
    tz = lo.dtype.time_zone  # type: ignore[attr-defined]
    wall = ends.dt.convert_time_zone(tz).dt.replace_time_zone(None) - keys.dt.convert_time_zone(
        tz
    ).dt.replace_time_zone(None)
    if not ((lo == hi) & (wall == width)).all():
        return None
    return lo.gather(slots - first)


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
