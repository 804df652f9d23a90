"""A snapshot's flow counts per (dimension, UTC hour) of each time column, built once.

A flow question asking only counts and their ratios (``on_time_ratio`` by destination
and day) would group a million items per question: by the delivery's bucket for the
on-time count, and by the acceptance's, return's and first attempt's for the answer's
other rows (the groups with those but no delivery are listed, with no ratio). The
counts of each branch (``kpi.kpis.functions.FLOW_FLAGS``) do not depend on the question
but through its window and buckets, so they are kept once per snapshot per UTC hour
and dimension value. A question adds up the hours wholly inside its window, each in
its time bucket, and groups the rows only where the hours cannot say: the window's
partial first and last hours, and the hours split between two buckets (a zone whose
offset has half or quarter hours, an offset change inside the hour). Counts are
integers: the sums equal grouping the rows (tested on every zone and granularity).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import polars as pl

from kpi.kpis.exprs import PERIOD, US_PER_HOUR, Window, in_window, period
from kpi.kpis.functions import FLOW_FLAGS, count_exprs

_HOUR: Final = "_hour"
_EVERY: Final = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo"}
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: The time columns counted: one per branch of the flow family.
TIME_COLUMNS: Final = tuple(FLOW_FLAGS)


def _hour_of(col: str) -> pl.Expr:
    return (pl.col(col).dt.epoch("us") // US_PER_HOUR).cast(pl.Int64).alias(_HOUR)


@dataclass(frozen=True)
class HourCounts:
    """Per time column and dimension column (or none: ``""``), the counts per hour."""

    frames: dict[tuple[str, str], pl.DataFrame]

    @classmethod
    def build(cls, lifecycle: pl.DataFrame, dims: tuple[str, ...]) -> HourCounts:
        """The counts of ``lifecycle`` (dimensions best as Enums: cheaper to group)."""
        # Each row's flags once per time column (0/1, a byte each: the frame is transient),
        # then summed per dimension and hour; one time column at a time.
        frames: dict[tuple[str, str], pl.DataFrame] = {}
        for t, flags in FLOW_FLAGS.items():
            rows = (
                lifecycle.lazy()
                .filter(pl.col(t).is_not_null())
                .select(
                    *dims,
                    _hour_of(t),
                    *(
                        (pl.lit(True) if c is None else c.fill_null(False)).cast(pl.UInt8).alias(n)
                        for n, c in flags.items()
                    ),
                )
                .collect()
                .lazy()
            )
            sums = pl.col(list(flags)).sum().cast(pl.Int64)
            keys = {d: [d, _HOUR] if d else [_HOUR] for d in (*dims, "")}
            got = pl.collect_all([rows.group_by(k).agg(sums) for k in keys.values()])
            frames.update(((t, d), f) for d, f in zip(keys, got, strict=True))
            del rows
        return cls(frames)

    def counts(
        self,
        lifecycle: pl.LazyFrame,
        time_col: str,
        dim: tuple[str, str] | None,
        w: Window,
        wanted: dict[str, pl.Expr | None],
    ) -> pl.LazyFrame | None:
        """The ``wanted`` counts of the rows whose ``time_col`` is in the window, by ``dim``
        (name, column) and period, as grouping those rows gives. None when the hours cannot
        say (not kept for this column, no keys asked, or a bucket with no local time in the
        zone)."""
        col = dim[1] if dim else ""
        frame = self.frames.get((time_col, col))
        if frame is None or (dim is None and w.granularity is None):
            return None  # not kept, or no keys: one row of the window's totals
        hi = w.as_of + dt.timedelta(microseconds=1)
        if w.end is not None:
            hi = min(hi, w.end)
        first = -(-_epoch_us(w.start) // US_PER_HOUR) if w.start is not None else None
        last = _epoch_us(hi) // US_PER_HOUR  # the hours before this one end before hi
        names = list(wanted)
        hours = frame.lazy().filter(
            pl.col(_HOUR) < last, *([pl.col(_HOUR) >= first] if first is not None else [])
        )
        split: list[int] = []
        if w.granularity is not None:
            span = frame[_HOUR].filter(frame[_HOUR] < last)
            if first is not None:
                span = span.filter(span >= first)
            got = _buckets(span.unique(), w)
            if got is None:
                return None
            buckets, split = got
            hours = hours.join(buckets.lazy(), on=_HOUR, how="inner")
        dims = [pl.col(col).alias(dim[0])] if dim else []
        keys = [*([dim[0]] if dim else []), *([PERIOD] if w.granularity else [])]
        whole = hours.select(*dims, *([pl.col(PERIOD)] if w.granularity else []), *names)
        # The rows the hours cannot answer for: the partial hours at the edges, split hours.
        t = pl.col(time_col)
        edge = t >= _EPOCH + dt.timedelta(microseconds=last * US_PER_HOUR)
        if first is not None:
            edge |= t < _EPOCH + dt.timedelta(microseconds=first * US_PER_HOUR)
        if split:
            edge |= (t.dt.epoch("us") // US_PER_HOUR).is_in(split)
        rows = (
            lifecycle.filter(in_window(time_col, w) & edge)
            .with_columns(*dims, *([period(time_col, w)] if w.granularity else []))
            .group_by(keys)
            .agg(count_exprs(wanted))
        )
        both = pl.concat([whole, rows], how="vertical")
        return both.group_by(keys).agg(pl.col(names).sum()) if names else both.unique(keys)


def _epoch_us(t: dt.datetime) -> int:
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def _buckets(hours: pl.Series, w: Window) -> tuple[pl.DataFrame, list[int]] | None:
    """Each hour's bucket when the whole hour lies in one (its first and last microsecond
    share it and the zone's offset does not change inside it), and the hours that do not."""
    assert w.granularity is not None
    every, tz = _EVERY[w.granularity], w.tz
    start = (hours.cast(pl.Int64) * US_PER_HOUR).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    width = dt.timedelta(microseconds=US_PER_HOUR - 1)
    end = start + width

    def direct(x: pl.Series) -> pl.Series:
        return x.dt.convert_time_zone(tz).dt.truncate(every).cast(pl.Datetime("us", tz))

    try:
        lo, hi = direct(start), direct(end)
    except pl.exceptions.ComputeError:  # a bucket start with no local time: rows decide
        return None
    wall = end.dt.convert_time_zone(tz).dt.replace_time_zone(None) - start.dt.convert_time_zone(
        tz
    ).dt.replace_time_zone(None)
    whole = (lo == hi) & (wall == width)
    frame = pl.DataFrame({_HOUR: hours, PERIOD: lo})
    return frame.filter(whole), hours.filter(~whole).to_list()
