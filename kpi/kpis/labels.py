"""Label values every counting face shares (live increments, backfill steps, stages)."""

from __future__ import annotations

from typing import Final

import polars as pl

#: The label value of a dimension (or a verdict) that is not known.
UNKNOWN: Final = "unknown"


def flag(cond: pl.Expr) -> pl.Expr:
    """``"true"``/``"false"``, ``"unknown"`` when the condition is null."""
    return (
        pl.when(cond.is_null())
        .then(pl.lit(UNKNOWN))
        .when(cond)
        .then(pl.lit("true"))
        .otherwise(pl.lit("false"))
    )
