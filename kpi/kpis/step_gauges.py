"""The as-of gauges of the step engine (``kpi.kpis.steps``): backlog per facility and age
band, the oldest waiting item, items in the network, overdue and stalled.

Everything comes from each item's *segments* (the spans during which one event is its
last), built once with integer codes for the item, its (product, destination) and the
facility: the one sort of the month's events and every group-by run on integers, and the
labels are joined to the summed deltas at the end (a few thousand rows per measure).
A month of 10 M events gives ~10 M segments; the gauges are collected one after the
other from them, so the peak is one measure's work, not all of them at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from kpi.events import Effect, event_has
from kpi.kpis.catalog import AGE_BAND_EDGES, AGE_BANDS
from kpi.kpis.labels import UNKNOWN
from kpi.kpis.step_base import (
    US_PER_H,
    K,
    interval_deltas,
    k_after,
    k_from,
    label,
    sum_deltas,
    us_col,
)


@dataclass(frozen=True)
class Segments:
    """Segments (``event``, ``_fl``, ``a``, ``_pd``, ``promise_us``, steps ``[_lo, _hi)``)
    and the tables that decode their codes: ``pairs`` (``_pd`` -> product, destination)
    and ``facilities`` (``_fl`` -> facility label)."""

    seg: pl.DataFrame
    pairs: pl.DataFrame
    facilities: pl.DataFrame


def item_codes(items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Items with ``_pd``, the code of their (product, destination), and the code table
    (which always has the (unknown, unknown) pair of items not yet accepted)."""
    unknown = pl.DataFrame({"product": [UNKNOWN], "destination": [UNKNOWN]})
    pairs = (
        pl.concat([items.select("product", "destination"), unknown])
        .unique(maintain_order=True)
        .with_row_index("_pd")
    )
    return items.join(pairs, on=["product", "destination"], how="left"), pairs


def segments(
    ev: pl.DataFrame, items: pl.DataFrame, pairs: pl.DataFrame, steps: pl.Series
) -> Segments:
    """Each item's segments: from an event's ``ts`` to the item's next distinct ``ts`` (or
    its finish), the event being its last at that instant (greatest stage, then greatest
    facility); product, destination and promise are known from the acceptance on."""
    unknown_pd = pairs.filter(
        (pl.col("product") == UNKNOWN) & (pl.col("destination") == UNKNOWN)
    ).item(0, "_pd")
    # Facility codes in text order (nulls first) keep the tie rule; segments carry the
    # code of the facility's label (``unknown`` for a missing or empty name).
    raw = ev.select(pl.col("facility").unique().sort(nulls_last=False)).with_row_index("_f")
    raw = raw.with_columns(label("facility").alias("_name"))
    names = raw.select(pl.col("_name").unique().sort()).with_row_index("_fl")
    raw = raw.join(names, on="_name")
    codes = items.lazy().select("item_id", "acc_us", "promise_us", "del_us", "ret_us", "_pd")
    codes = codes.with_row_index("_i")
    keyed = (
        ev.lazy()
        .select("item_id", "event", us_col("ts").alias("a"), "facility")
        .join(codes.select("item_id", "_i"), on="item_id", how="left", nulls_equal=True)
        .join(raw.lazy().select("facility", "_f", "_fl"), on="facility", nulls_equal=True)
        .select("_i", "event", "a", pl.col("event").to_physical().alias("_st"), "_f", "_fl")
    )
    nxt_item, nxt_ts = pl.col("_i").shift(-1), pl.col("a").shift(-1)
    last_at_ts = (
        keyed.sort("_i", "a", "_st", "_f", nulls_last=False)
        .with_columns(nxt_item.alias("_next_item"), nxt_ts.alias("_next_ts"))
        .filter(
            (pl.col("_next_item") != pl.col("_i"))
            | pl.col("_next_item").is_null()
            | (pl.col("_next_ts") != pl.col("a"))
        )
        .select(
            "_i",
            "event",
            "_fl",
            "a",
            pl.when(pl.col("_next_item") == pl.col("_i")).then(pl.col("_next_ts")).alias("_next"),
        )
    )
    finish = pl.min_horizontal("del_us", "ret_us")
    known = pl.col("acc_us").is_not_null() & (pl.col("acc_us") <= pl.col("a"))
    seg = (
        last_at_ts.join(codes.drop("item_id"), on="_i", how="left")
        .with_columns(pl.min_horizontal("_next", finish).alias("b"))
        .filter(pl.col("b").is_null() | (pl.col("a") < pl.col("b")))
        .select(
            "event",
            "_fl",
            "a",
            pl.when(known).then(pl.col("_pd")).otherwise(pl.lit(unknown_pd)).alias("_pd"),
            pl.when(known).then(pl.col("promise_us")).alias("promise_us"),
            k_from("a", steps).alias("_lo"),
            k_from("b", steps).alias("_hi"),
        )
        .collect()
    )
    return Segments(seg, pairs, names.rename({"_name": "facility"}))


def _decoded(
    deltas: pl.LazyFrame, codes: pl.DataFrame, code: str, labels: Sequence[str], n: int
) -> pl.LazyFrame:
    """Deltas per code as deltas per label set (codes with one label set summed)."""
    return sum_deltas(deltas.join(codes.lazy(), on=code, how="left"), labels, n)


def gauge_deltas(
    s: Segments, facilities: pl.DataFrame, steps: pl.Series, stall_hours: float
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """In the network, overdue, stalled and backlog deltas, and the oldest waiting ranges."""
    n = steps.len()
    seg = s.seg.lazy()
    pd = ("_pd",)
    pairs = s.pairs
    out: dict[str, pl.DataFrame] = {}
    network = interval_deltas(seg, pd, "_lo", "_hi", n)
    out["in_network"] = _decoded(network, pairs, "_pd", ("product", "destination"), n).collect()
    overdue = seg.filter(pl.col("promise_us").is_not_null()).with_columns(
        pl.max_horizontal("_lo", k_after("promise_us", steps)).alias("_lo")
    )
    overdue = interval_deltas(overdue, pd, "_lo", "_hi", n)
    out["overdue"] = _decoded(overdue, pairs, "_pd", ("product", "destination"), n).collect()
    stall_us = round(stall_hours * US_PER_H)
    stalled = seg.select(
        "_pd", pl.max_horizontal("_lo", k_after(pl.col("a") + stall_us, steps)).alias("_lo"), "_hi"
    )
    regions = pairs.select("_pd", pl.col("destination").alias("region"))
    stalled = interval_deltas(stalled, pd, "_lo", "_hi", n)
    out["stalled"] = _decoded(stalled, regions, "_pd", ("region",), n).collect()
    out["backlog"], oldest = _backlog_deltas(s, facilities, steps)
    return out, oldest


def _backlog_deltas(
    s: Segments, facilities: pl.DataFrame, steps: pl.Series
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Backlog per facility and age band, and the oldest waiting item's ranges."""
    n = steps.len()
    fac = facilities.lazy().select(
        label("facility"), label("type").alias("facility_type"), label("region")
    )
    names = (
        s.facilities.lazy()
        .join(fac.unique("facility", keep="first"), on="facility", how="left")
        .with_columns(label("facility_type"), label("region"))
        .collect()
    )
    fac_labels = ("facility", "facility_type", "region")
    waiting = s.seg.lazy().filter(event_has(Effect.WAITS)).select("_fl", "a", "_lo", "_hi")
    edges = [0, *(round(h * US_PER_H) for h in AGE_BAND_EDGES)]
    bands = []
    for j, band in enumerate(AGE_BANDS):
        lo = pl.max_horizontal("_lo", k_from(pl.col("a") + edges[j], steps))
        hi = (
            pl.min_horizontal("_hi", k_from(pl.col("a") + edges[j + 1], steps))
            if j + 1 < len(edges)
            else pl.col("_hi")
        )
        ranges = waiting.select("_fl", lo.alias("_blo"), hi.alias("_bhi"))
        deltas = interval_deltas(ranges, ("_fl",), "_blo", "_bhi", n).collect()
        bands.append(deltas.with_columns(pl.lit(band).alias("age_band")))
    backlog = _decoded(pl.concat(bands).lazy(), names, "_fl", (*fac_labels, "age_band"), n)
    # The oldest waiting item of a facility at step k: sorted by waiting-since, a segment
    # is the oldest from its first step once every earlier-starting one has ended.
    oldest = (
        waiting.filter(pl.col("_lo") < pl.col("_hi"))
        .sort("_fl", "a", "_hi")
        .with_columns(pl.col("_hi").cum_max().shift(1).over("_fl").fill_null(0).alias("_ended"))
        .select(
            "_fl",
            pl.max_horizontal("_lo", "_ended").alias(K),
            pl.col("_hi").alias("_k_end"),
            pl.col("a").alias("since_us"),
        )
        .filter(pl.col(K) < pl.col("_k_end"))
        .join(names.lazy(), on="_fl", how="left")
        .select(*fac_labels, K, "_k_end", "since_us")
    )
    return backlog.collect(), oldest.collect()
