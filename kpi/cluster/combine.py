"""Combining partials exactly: counts add, maxima take the max, ratios are formed after
the combine; means and percentiles are found on the workers' exact values by rank
selection (``kpi.cluster.ranks``), so the same values give the same number.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from kpi.cluster.partials import ACCEPTED, SPECS, Ask, Part
from kpi.kpis.catalog import Family
from kpi.kpis.exprs import PERIOD, outer_join, ratio
from kpi.kpis.filters import backlog_facilities
from kpi.kpis.functions import backlog_thresholds, complaint_rates


def _sum(frames: Sequence[pl.DataFrame], keys: list[str], family: Family) -> pl.DataFrame:
    """Per group: the sum of each count, the max of each maximum (columns as present)."""
    spec = SPECS[family]
    both = pl.concat(frames, how="vertical")
    names = both.columns
    aggs = [pl.col(c).sum().cast(pl.Int64) for c in spec.adds if c in names]
    aggs += [pl.col(c).max() for c in spec.maxes if c in names]
    if not keys:
        return both.select(aggs) if aggs else pl.DataFrame()
    return both.group_by(keys).agg(aggs) if aggs else both.select(keys).unique()


def _beside(left: pl.DataFrame, right: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``right``'s columns on ``left``'s groups (a left join; side by side without keys)."""
    if keys:
        return left.join(right, on=keys, how="left", nulls_equal=True)
    if left.width == 0:
        return right
    return pl.concat([left, right], how="horizontal")


def _ratios(frame: pl.DataFrame, family: Family) -> pl.DataFrame:
    exprs = [
        ratio(num, den).alias(name)
        if num in frame.columns and den in frame.columns
        else pl.lit(None, pl.Float64).alias(name)
        for name, num, den in SPECS[family].ratios
    ]
    return frame.with_columns(exprs) if exprs else frame


def combine_family(
    family: Family, parts: Sequence[Part], keys: list[str], stats: dict[str, pl.DataFrame]
) -> pl.DataFrame:
    """A window or snapshot family without cross-bucket facility state, combined; its means
    and percentiles (``stats``, by ``family/prefix``) come from ``kpi.cluster.ranks``."""
    out = _sum([p.sums for p in parts], keys, family)
    for prefix, _ in SPECS[family].stats:
        out = _beside(out, stats[f"{family.value}/{prefix}"], keys)
    return _ratios(out, family)


def combine_backlog(parts: Sequence[Part], ask: Ask) -> pl.DataFrame:
    """Backlog: counts add, the oldest is the max; thresholds from each facility's whole
    backlog (the per-facility totals of every bucket added), as ``backlog_kpis`` forms them."""
    by = list(ask.by)
    counted = _sum([p.sums for p in parts], by, Family.BACKLOG)
    if "product" in by:
        return counted.with_columns(
            pl.lit(None, pl.Int64).alias("backlog_threshold_items"),
            pl.lit(None, pl.Int64).alias("backlog_over_threshold"),
        )
    totals = (
        pl.concat([p.values["facility"] for p in parts], how="vertical")
        .group_by("last_facility")
        .agg(pl.col("_fac_total").sum())
    )
    facilities = backlog_facilities(ask.facilities, ask.filters)
    fac_agg = backlog_thresholds(facilities.lazy(), totals.lazy(), by).collect()
    # backlog_kpis joined the thresholds already in every bucket: replace them.
    counted = counted.drop("backlog_threshold_items", "backlog_over_threshold", strict=False)
    joined = outer_join([counted, fac_agg], by)
    count_cols = list(SPECS[Family.BACKLOG].adds)
    return joined.with_columns(
        pl.col(count_cols).fill_null(0), pl.col("backlog_over_threshold").fill_null(0)
    )


def combine_complaints(counted: Part, accepted: Sequence[Part], ask: Ask) -> pl.DataFrame:
    """Complaints: counts from the complaints task, the accepted items from the buckets."""
    by = list(ask.by)
    item_by = [d for d in by if d in ("region", "product")]
    item_keys = [*item_by, PERIOD] if ask.w.granularity else item_by
    counts = counted.sums
    acc = pl.concat([p.sums for p in accepted], how="vertical")
    acc = (
        acc.group_by(item_keys).agg(pl.col("_accepted").sum().cast(pl.Int64))
        if item_keys
        else acc.select(pl.col("_accepted").sum().cast(pl.Int64))
    )
    if item_keys:
        joined = counts.join(acc, on=item_keys, how="left", nulls_equal=True)
    else:
        joined = counts.join(acc, how="cross")
    return joined.with_columns(complaint_rates())


def combine(
    partials: Sequence[dict[str, Part]], ask: Ask, stats: dict[str, pl.DataFrame]
) -> list[pl.DataFrame]:
    """One frame per asked family (in ``Family`` order), from every task's partials and the
    exact means and percentiles of its stats (``stats``, by ``family/prefix``)."""
    frames: list[pl.DataFrame] = []
    for family in (f for f in Family if f in ask.families):
        parts = [p[family.value] for p in partials if family.value in p]
        if family is Family.BACKLOG:
            frames.append(combine_backlog(parts, ask))
        elif family is Family.COMPLAINT:
            accepted = [p[ACCEPTED] for p in partials if ACCEPTED in p]
            frames.append(combine_complaints(parts[0], accepted, ask))
        elif family in (Family.NETWORK, Family.OPEN_COMPLAINT):
            frames.append(combine_family(family, parts, list(ask.by), stats))
        else:
            frames.append(combine_family(family, parts, ask.keys, stats))
    return frames
