"""Exact means and percentiles without shipping every value to the client: rank selection.

A bucket task keeps, per group, the multiset of a stat's values (``partials``). Shipping
them all costs the client ~17 B per event. Instead the values stay on the workers and
the client finds the values at the ranks it needs in passes:

1. each bucket ships, per group, the count and sum of its values (the mean is sum /
   count) and how many values fall in each coarse bin of an order key (the float's bits
   made monotone, see ``order_keys``: bin = key >> 48, ~16 bins per power of two);
2. the client adds the counts, and for each wanted rank (``linear`` interpolation needs
   floor and ceil of (n - 1) q) finds the bin holding it and the rank within the bin;
3. each bucket ships the counts of the next 16 bits of the keys, only inside the chosen
   bins; the client narrows again (shifts 48, 32, 16, 0), straight to shift 0 once the
   chosen bins hold at most ``EXACT`` values. At shift 0 a bin is one exact value: the
   answer is interpolated from the values at those ranks as polars does.

Every pass is exact (counts of exact keys), so the percentiles are the single-process
ones; the client holds at most 65,536 bins per group and rank at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import polars as pl

from kpi.cluster.partials import COUNT, VALUE, Part

#: Shifts of the order key, pass by pass (the last is the exact value).
SHIFTS: Final = (48, 32, 16, 0)
#: Chosen bins holding at most this many values in all: the next pass ships them exactly.
EXACT: Final = 1 << 16
QUANTILES: Final = ((0.5, "p50"), (0.9, "p90"))
KEY: Final = "_k"
BIN: Final = "_b"
PARENT: Final = "_p"
GROUP: Final = "_g"
RANK: Final = "_r"
OFFSET: Final = "_o"
BEFORE: Final = "_c"
SUM: Final = "_s"
TOTAL: Final = "/total"  # suffix of a stat's totals frame in a light partial
_FLIP: Final = np.int64(0x7FFF_FFFF_FFFF_FFFF)


def order_keys(values: pl.Series) -> pl.Series:
    """Int64 keys in the order of the float values (IEEE bits, negatives' magnitude flipped)."""
    keys = values.cast(pl.Float64).to_numpy().astype(np.float64).view(np.int64).copy()
    keys[keys < 0] ^= _FLIP
    return pl.Series(KEY, keys, dtype=pl.Int64)


def key_values(keys: pl.Series) -> pl.Series:
    """The float values of order keys (``order_keys`` inverted)."""
    raw = keys.to_numpy().astype(np.int64, copy=True)
    raw[raw < 0] ^= _FLIP
    return pl.Series(VALUE, raw.view(np.float64), dtype=pl.Float64)


def _bins(frame: pl.DataFrame, keys: list[str], shift: int) -> pl.DataFrame:
    """How many values fall in each bin (key >> shift) per group."""
    return frame.group_by([*keys, (pl.col(KEY) // (1 << shift)).alias(BIN)]).agg(
        pl.col(COUNT).sum()
    )


def _keyed(multiset: pl.DataFrame) -> pl.DataFrame:
    return multiset.with_columns(order_keys(multiset[VALUE]))


def light_partial(partial: dict[str, Part]) -> dict[str, Part]:
    """The partial with each multiset replaced by its first-pass bins and totals (a task)."""
    out: dict[str, Part] = {}
    for family, part in partial.items():
        values: dict[str, pl.DataFrame] = {}
        for prefix, multiset in part.values.items():
            if VALUE not in multiset.columns:  # not a multiset (backlog's facility totals)
                values[prefix] = multiset
                continue
            keys = [c for c in multiset.columns if c not in (VALUE, COUNT)]
            values[prefix] = _bins(_keyed(multiset), keys, SHIFTS[0])
            agg = [pl.col(COUNT).sum(), (pl.col(VALUE) * pl.col(COUNT)).sum().alias(SUM)]
            totals = multiset.group_by(keys).agg(agg) if keys else multiset.select(agg)
            values[prefix + TOTAL] = totals
        out[family] = Part(part.sums, values)
    return out


def narrow_partial(
    partial: dict[str, Part], chosen: dict[str, pl.DataFrame], parent_shift: int, shift: int
) -> dict[str, pl.DataFrame]:
    """Per stat (``family/prefix``), the bins at ``shift`` inside the chosen bins at
    ``parent_shift`` (``chosen``: group keys and ``PARENT``) (a task)."""
    out: dict[str, pl.DataFrame] = {}
    for name, within in chosen.items():
        family, _, prefix = name.partition("/")
        part = partial.get(family)
        if part is None:
            continue
        multiset = _keyed(_between(part.values[prefix], within[PARENT], parent_shift))
        keys = [c for c in within.columns if c != PARENT]
        parent = (pl.col(KEY) // (1 << parent_shift)).alias(PARENT)
        inside = multiset.with_columns(parent).join(
            within, on=[*keys, PARENT], how="semi", nulls_equal=True
        )
        out[name] = _bins(inside, keys, shift)
    return out


def _between(multiset: pl.DataFrame, parents: pl.Series, shift: int) -> pl.DataFrame:
    """The rows whose value lies in the span of the chosen bins: a cheap float comparison
    before the keys and the join (the bins are the keys' prefixes, keys sort as values)."""
    if parents.is_empty():
        return multiset.clear()
    lowest, highest = int(parents.min()), int(parents.max())  # type: ignore[arg-type]
    # The keys of the span, kept within the infinities' (beyond them lie only NaN keys).
    top, bottom = int(order_keys(pl.Series([np.inf]))[0]), int(order_keys(pl.Series([-np.inf]))[0])
    lo = max(lowest << shift, bottom)
    hi = min(((highest + 1) << shift) - 1, top)
    lo_v, hi_v = key_values(pl.Series([lo, hi], dtype=pl.Int64)).to_list()
    return multiset.filter(pl.col(VALUE).is_between(lo_v, hi_v))


def _added(frames: Sequence[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    both = pl.concat(frames, how="vertical")
    return both.group_by([*keys, BIN]).agg(pl.col(COUNT).sum())


class Selection:
    """One stat's rank search: its groups, their totals, and where each wanted rank is."""

    def __init__(self, totals: Sequence[pl.DataFrame], keys: list[str]) -> None:
        self.keys = keys
        both = pl.concat(totals, how="vertical")
        agg = [pl.col(COUNT).sum(), pl.col(SUM).sum()]
        groups = both.group_by(keys).agg(agg) if keys else both.select(agg)
        self.groups = groups.filter(pl.col(COUNT) > 0).with_row_index(GROUP)
        n = pl.col(COUNT)
        wanted = [
            self.groups.select(GROUP, fn(((n - 1) * q).cast(pl.Float64)).cast(pl.Int64).alias(RANK))
            for q, _ in QUANTILES
            for fn in (pl.Expr.floor, pl.Expr.ceil)
        ]
        ranks = pl.concat(wanted).unique()
        #: per wanted rank: its offset within the current bin, and that bin (PARENT)
        self.ranks = ranks.with_columns(
            pl.col(RANK).alias(OFFSET), pl.lit(0, pl.Int64).alias(PARENT)
        )

    def _with_group(self, bins: pl.DataFrame) -> pl.DataFrame:
        if not self.keys:
            return bins.with_columns(pl.lit(0, pl.UInt32).alias(GROUP))
        ids = self.groups.select(*self.keys, GROUP)
        return bins.join(ids, on=self.keys, how="inner", nulls_equal=True)

    def locate(self, bins: Sequence[pl.DataFrame], parent_shift: int | None, shift: int) -> None:
        """Move every wanted rank into the bin at ``shift`` that holds it (``bins``: the
        counts inside the ranks' bins at ``parent_shift``; None: all of them, first pass)."""
        added = self._with_group(_added(bins, self.keys))
        if parent_shift is None:
            parent = pl.lit(0, pl.Int64)
        else:
            parent = pl.col(BIN) // (1 << (parent_shift - shift))
        added = (
            added.with_columns(parent.alias(PARENT))
            .sort(GROUP, BIN)
            .with_columns(
                (pl.col(COUNT).cum_sum().over(GROUP, PARENT) - pl.col(COUNT)).alias(BEFORE)
            )
            .sort(BEFORE)
        )
        found = self.ranks.sort(OFFSET).join_asof(
            added.select(GROUP, PARENT, BEFORE, BIN, COUNT),
            left_on=OFFSET,
            right_on=BEFORE,
            by=[GROUP, PARENT],
            strategy="backward",
            check_sortedness=False,
        )
        if found[BIN].null_count():
            raise AssertionError("a wanted rank fell outside the bins the workers counted")
        #: how many values the chosen bins hold (what an exact pass would ship)
        self.held = int(found.unique([GROUP, BIN])[COUNT].sum())
        self.ranks = found.select(
            GROUP, RANK, (pl.col(OFFSET) - pl.col(BEFORE)).alias(OFFSET), pl.col(BIN).alias(PARENT)
        )

    def no_bins(self) -> pl.DataFrame:
        """An empty bins frame of this stat's shape (no bucket had a value there)."""
        schema: dict[str, pl.DataType] = dict(self.groups.select(self.keys).schema)
        schema[BIN] = schema[COUNT] = pl.Int64()
        return pl.DataFrame(schema=schema)

    def chosen(self) -> pl.DataFrame:
        """The bins holding a wanted rank, by group keys (what the next pass counts inside)."""
        picked = self.ranks.select(GROUP, PARENT).unique()
        if not self.keys:
            return picked.select(PARENT)
        ids = self.groups.select(*self.keys, GROUP)
        return picked.join(ids, on=GROUP).select(*self.keys, PARENT)

    def stats(self, prefix: str, mean: bool) -> pl.DataFrame:
        """Mean and percentiles per group, as the single-process engine forms them."""
        at = self.ranks.select(GROUP, RANK, key_values(self.ranks[PARENT]).alias(VALUE))
        out = self.groups
        cols: list[pl.Expr] = []
        if mean:
            cols.append((pl.col(SUM) / pl.col(COUNT)).alias(f"{prefix}_hours_mean"))
        for q, name in QUANTILES:
            h = ((pl.col(COUNT) - 1) * q).cast(pl.Float64)
            lo, hi = f"_lo{name}", f"_hi{name}"
            out = out.with_columns(
                h.floor().cast(pl.Int64).alias(lo), h.ceil().cast(pl.Int64).alias(hi)
            )
            for side in (lo, hi):
                named = at.rename({RANK: side, VALUE: f"{side}_v"})
                out = out.join(named, on=[GROUP, side], how="left")
            low, high = pl.col(f"{lo}_v"), pl.col(f"{hi}_v")
            # polars' "linear": lower + (h - floor(h)) * (upper - lower), lower when equal.
            frac = h - pl.col(lo).cast(pl.Float64)
            cols.append(
                pl.when(low == high).then(low).otherwise(frac * (high - low) + low)
                .alias(f"{prefix}_hours_{name}")
            )  # fmt: skip
        out = out.select(*self.keys, *cols)
        if not self.keys and out.height == 0:  # no value at all: one row of nulls, as polars
            return pl.DataFrame({c: [None] for c in out.columns}, schema=out.schema)
        return out


#: Ship the counts inside the chosen bins (by stat) at a finer shift, from every bucket:
#: (chosen, parent shift, shift) -> one frame per stat and bucket.
Ship = Callable[[dict[str, pl.DataFrame], int, int], list[dict[str, pl.DataFrame]]]


def narrow(selections: dict[str, Selection], ship: Ship) -> None:
    """Narrow every stat's wanted ranks down to exact values, pass by pass. A pass goes
    straight to the exact values (shift 0) once the chosen bins hold at most ``EXACT``
    values in all, else 16 bits further (``SHIFTS``)."""
    shift = SHIFTS[0]
    while shift > 0 and any(s.ranks.height for s in selections.values()):
        held = max(s.held for s in selections.values())
        finer = 0 if held <= EXACT else SHIFTS[SHIFTS.index(shift) + 1]
        shipped = ship({name: s.chosen() for name, s in selections.items()}, shift, finer)
        for name, s in selections.items():
            s.locate([x[name] for x in shipped if name in x] or [s.no_bins()], shift, finer)
        shift = finer
