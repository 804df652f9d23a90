"""Rank selection (``kpi.cluster.ranks``): the values never leave the buckets, yet the mean
and percentiles equal polars' over all of them; property-tested against polars itself."""

from __future__ import annotations

import math

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from kpi.cluster.partials import COUNT, VALUE, Part
from kpi.cluster.ranks import (
    SHIFTS,
    TOTAL,
    Selection,
    key_values,
    light_partial,
    narrow,
    narrow_partial,
    order_keys,
)

NAME = "flow/transit"

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
#: Values with many ties and both signs, next to wide-ranging ones (hours: a mean of values
#: near the float limits would differ by the order of the sum alone, as in one process).
hours = st.floats(-1e7, 1e7, allow_nan=False)
values = st.one_of(st.sampled_from([0.0, -0.0, 1.5, 1.5000000000000002, -3.25, 48.0]), hours)
rows = st.lists(st.tuples(st.sampled_from(["a", "b", None]), values), max_size=60)


def multiset(bucket: list[tuple[str | None, float]], keyed: bool) -> pl.DataFrame:
    frame = pl.DataFrame(bucket, schema={"g": pl.String, VALUE: pl.Float64}, orient="row")
    keys = ["g", VALUE] if keyed else [VALUE]
    return frame.group_by(keys).agg(pl.len().cast(pl.Int64).alias(COUNT))


def rank_selected(buckets: list[pl.DataFrame], keys: list[str]) -> tuple[pl.DataFrame, int]:
    """The stats through the passes, and the most rows the client received in one pass."""
    partials = [{"flow": Part(pl.DataFrame(), {"transit": m})} for m in buckets]
    light = [light_partial(p)["flow"] for p in partials]
    received = sum(p.values["transit"].height for p in light)
    selection = Selection([p.values["transit" + TOTAL] for p in light], keys)
    selection.locate([p.values["transit"] for p in light], None, SHIFTS[0])

    def ship(
        chosen: dict[str, pl.DataFrame], parent: int, shift: int
    ) -> list[dict[str, pl.DataFrame]]:
        nonlocal received
        shipped = [narrow_partial(p, chosen, parent, shift) for p in partials]
        received = max(received, sum(s[NAME].height for s in shipped))
        return shipped

    narrow({NAME: selection}, ship)
    return selection.stats("transit", mean=True), received


def reference(buckets: list[list[tuple[str | None, float]]], keys: list[str]) -> pl.DataFrame:
    every = [r for b in buckets for r in b]
    frame = pl.DataFrame(every, schema={"g": pl.String, "v": pl.Float64}, orient="row")
    v = pl.col("v")
    agg = [v.mean().alias("transit_hours_mean"), v.quantile(0.5, "linear").alias("transit_hours_p50"),
           v.quantile(0.9, "linear").alias("transit_hours_p90")]  # fmt: skip
    return frame.group_by(keys).agg(agg) if keys else frame.select(agg)


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, min_size=1, max_size=4), st.booleans())
def test_rank_selection_equals_polars(
    buckets: list[list[tuple[str | None, float]]], keyed: bool
) -> None:
    keys = ["g"] if keyed else []
    got, _ = rank_selected([multiset(b, keyed) for b in buckets], keys)
    want = reference(buckets, keys)
    if keys:
        got, want = got.sort("g", nulls_last=True), want.sort("g", nulls_last=True)
    # Percentiles are the very values (or polars' interpolation of them); the mean is a sum
    # in another order, so equal to rounding (1e-9 of the values' scale).
    for col in ("transit_hours_p50", "transit_hours_p90"):
        assert_frame_equal(got.select(*keys, col), want.select(*keys, col), rel_tol=1e-12)
    scale = max((abs(v) for b in buckets for _, v in b), default=1.0)
    for a, b in zip(got["transit_hours_mean"], want["transit_hours_mean"], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale)), (a, b)


@settings(deadline=None)  # a loaded machine: no per-example deadline
@given(st.lists(finite, min_size=1, max_size=50))
def test_order_keys_sort_as_the_values_and_invert(xs: list[float]) -> None:
    s = pl.Series(xs, dtype=pl.Float64)
    keys = order_keys(s)
    assert key_values(keys).to_list() == xs or all(
        a == b for a, b in zip(key_values(keys).to_list(), xs, strict=True)
    )
    by_key = s.gather(keys.arg_sort()).to_list()
    assert by_key == sorted(xs)


def test_the_client_receives_bins_not_values() -> None:
    # 20,000 distinct transit times in 8 buckets: the first pass ships a few bins, the next
    # ones only the sub-bins inside the ~1/16 of an octave that holds each wanted rank.
    buckets = [
        pl.DataFrame({VALUE: [1.0 + (i * 8 + b) * 0.001 for i in range(2_500)], COUNT: [1] * 2_500})
        for b in range(8)
    ]
    got, received = rank_selected(buckets, [])
    everything = pl.concat(buckets)[VALUE]
    assert got["transit_hours_p90"].item() == everything.quantile(0.9, "linear")
    assert received <= 20_000 // 5, received  # vs 20,000 values shipped by the multisets
