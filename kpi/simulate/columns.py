"""Polars columns from the engine's numpy arrays (epoch hours, indices)."""

from __future__ import annotations

import numpy as np
import polars as pl

from kpi.simulate.config import F64, I64


def promise_series(name: str, midnight_h: F64) -> pl.Series:
    """Promised-by column from next-midnight instants: 23:59:59.999999 local (NaN = null)."""
    sec = pl.Series(name, np.round(midnight_h * 3600.0), nan_to_null=True)
    us = (sec * 1_000_000).cast(pl.Int64) - 1
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def gather(values: tuple[str, ...] | pl.Series, idx: I64) -> pl.Series:
    """``values[idx]`` as a string column, null where ``idx`` is negative."""
    i = pl.Series("i", idx, dtype=pl.Int64)
    src = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.String)
    return src.gather(i.to_frame().select(pl.when(i >= 0).then(i)).to_series())


def utc_series(name: str, hours: F64) -> pl.Series:
    """Epoch hours (NaN = null) to a Datetime('us', 'UTC') column, whole seconds."""
    sec = pl.Series(name, np.round(hours * 3600.0), nan_to_null=True)
    us = (sec * 1_000_000).cast(pl.Int64)
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
