"""Primitives of the step engine (``kpi.kpis.steps``): step indices by binary search on the
grid, delta sums per series and step, and the label rules of the metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

from kpi.kpis.labels import UNKNOWN

K: Final = "_k"  # step index
D: Final = "_d"  # delta
VALUE: Final = "value"
US_PER_S: Final = 1_000_000
US_PER_H: Final = 3_600 * US_PER_S
_NEVER: Final = 2**62  # an instant after every step (an open interval end)


def label(col: str) -> pl.Expr:
    """A label value: the text, ``unknown`` when missing or empty."""
    text = pl.col(col).cast(pl.String)
    return pl.when(text.is_null() | (text == "")).then(pl.lit(UNKNOWN)).otherwise(text).alias(col)


def us_col(col: str) -> pl.Expr:
    """A datetime column as epoch microseconds."""
    return pl.col(col).dt.epoch("us")


def k_after(col: str | pl.Expr, steps: pl.Series) -> pl.Expr:
    """Index of the first step strictly after the instant (µs) in ``col``."""
    c = pl.col(col) if isinstance(col, str) else col
    return pl.lit(steps).search_sorted(c.fill_null(_NEVER), side="right").cast(pl.Int64)


def k_from(col: str | pl.Expr, steps: pl.Series) -> pl.Expr:
    """Index of the first step at or after the instant (µs) in ``col`` (null: never)."""
    c = pl.col(col) if isinstance(col, str) else col
    return pl.lit(steps).search_sorted(c.fill_null(_NEVER), side="left").cast(pl.Int64)


def sum_deltas(frame: pl.LazyFrame, labels: Sequence[str], n: int) -> pl.LazyFrame:
    """Deltas summed per series and step, the steps past the grid dropped."""
    return (
        frame.filter(pl.col(K) < n).group_by(*labels, K).agg(pl.col(D).sum()).filter(pl.col(D) != 0)
    )


def interval_deltas(
    frame: pl.LazyFrame, labels: Sequence[str], lo: str, hi: str, n: int
) -> pl.LazyFrame:
    """+1 at step ``lo``, -1 at step ``hi`` for every non-empty ``[lo, hi)`` row."""
    rows = frame.filter(pl.col(lo) < pl.col(hi)).select(*labels, lo, hi)
    # Counted per (series, step) before they meet: two small frames instead of one of
    # twice the rows (the segments of a month are ~10 M rows).
    plus = rows.group_by(*labels, pl.col(lo).alias(K)).agg(pl.len().cast(pl.Int64).alias(D))
    minus = rows.group_by(*labels, pl.col(hi).alias(K)).agg((-pl.len().cast(pl.Int64)).alias(D))
    return sum_deltas(pl.concat([plus, minus]), labels, n)


def counter_deltas(frame: pl.LazyFrame, labels: Sequence[str], n: int) -> pl.LazyFrame:
    """+1 per row at its step ``_k``, summed per series and step."""
    return sum_deltas(frame.with_columns(pl.lit(1, pl.Int64).alias(D)), labels, n)
