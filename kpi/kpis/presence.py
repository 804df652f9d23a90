"""Which (dimension, UTC hour) pairs have items, per time column: a snapshot's index.

A flow question asking only ``on_time_ratio`` still needs the rows of the groups that
had acceptances, returns or first attempts but no delivery (the answer lists them, with
no ratio). Those branches give keys only, and grouping a million items three times for
keys costs more than the asked aggregation. The index keeps, once per snapshot, the
distinct (dimension value, UTC hour) pairs of each time column; a question takes the
hours wholly inside its window from it, each mapped to its time bucket, and reads the
rows only where the index cannot say: the window's partial first and last hours, and
the hours split between two buckets (a zone whose offset has half or quarter hours, a
change of offset inside the hour). The keys are those of grouping the rows (tested
against it on every zone and granularity the catalog tests use).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import polars as pl

from kpi.kpis.exprs import PERIOD, US_PER_HOUR, Window, in_window, period

_HOUR: Final = "_hour"
_EVERY: Final = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo"}
#: The time columns indexed: those whose flow branch may be asked for keys only.
TIME_COLUMNS: Final = ("accepted_at", "delivered_at", "returned_at", "first_attempt_at")


def _hour_of(col: str) -> pl.Expr:
    return (pl.col(col).dt.epoch("us") // US_PER_HOUR).alias(_HOUR)


@dataclass(frozen=True)
class Presence:
    """Per time column, per dimension column (or none: ``""``), the distinct pairs."""

    pairs: dict[tuple[str, str], pl.DataFrame]

    @classmethod
    def build(cls, lifecycle: pl.DataFrame, dims: tuple[str, ...]) -> Presence:
        """The index of ``lifecycle`` (dimensions best as Enums: cheaper to group)."""
        frames: dict[tuple[str, str], pl.LazyFrame] = {}
        lc = lifecycle.lazy()
        for t in TIME_COLUMNS:
            rows = lc.filter(pl.col(t).is_not_null())
            for d in dims:
                frames[(t, d)] = rows.group_by(pl.col(d), _hour_of(t)).agg()
            frames[(t, "")] = rows.select(_hour_of(t).unique())
        got = pl.collect_all(list(frames.values()))
        return cls(dict(zip(frames, got, strict=True)))

    def keys(
        self, lifecycle: pl.LazyFrame, time_col: str, dim: tuple[str, str] | None, w: Window
    ) -> pl.LazyFrame | None:
        """The distinct keys (``dim`` as its name, ``period`` when bucketed) of the rows whose
        ``time_col`` is in the window, as grouping them gives; ``dim`` is (name, column).
        None when this index cannot say (a bucket with no local time in the zone)."""
        col = dim[1] if dim else ""
        index = self.pairs.get((time_col, col))
        if index is None:
            return None
        hi = w.as_of + dt.timedelta(microseconds=1)
        if w.end is not None:
            hi = min(hi, w.end)
        first = _ceil_hour(w.start) if w.start is not None else None
        last = _epoch_us(hi) // US_PER_HOUR  # hours before this one end before hi
        hours = index.filter(
            pl.col(_HOUR) < last, *([pl.col(_HOUR) >= first] if first is not None else [])
        )
        split: list[int] = []
        if w.granularity is not None:
            got = _buckets(hours[_HOUR].unique(), w)
            if got is None:
                return None
            buckets, split = got
            hours = hours.join(buckets, on=_HOUR, how="inner")
        dims = [pl.col(col).alias(dim[0])] if dim else []
        names = [dim[0]] if dim else []
        keys = [*names, PERIOD] if w.granularity else names
        whole = hours.lazy().select(*dims, *([pl.col(PERIOD)] if w.granularity else []))
        # The rows the index cannot answer for: the partial hours at the edges, split hours.
        t = pl.col(time_col)
        edge = t >= _from_epoch(last * US_PER_HOUR)
        if first is not None:
            edge |= t < _from_epoch(first * US_PER_HOUR)
        if split:
            edge |= (t.dt.epoch("us") // US_PER_HOUR).is_in(split)
        rows = lifecycle.filter(in_window(time_col, w) & edge).select(
            *dims, *([period(time_col, w)] if w.granularity else [])
        )
        return pl.concat([whole, rows], how="vertical").unique(keys)


def _epoch_us(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _ceil_hour(t: dt.datetime) -> int:
    return -(-_epoch_us(t) // US_PER_HOUR)


def _from_epoch(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)


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
