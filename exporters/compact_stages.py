"""The stage state of the items in the state: recent scans, and one summary row per item
for the scans older than the reorder horizon.

``kpi.kpis.stage_increments`` computes a set's stage intervals from the touched items'
scans before and after the set. The exporter does not keep every scan for that: it keeps

- ``rows``: the scans of the last ``horizon`` of event time (the late grace, ``Policy``),
  as ``(item hash UInt64, key Int64, facility UInt32 code)``; held as 14 B each
  (``HELD_ROWS_SCHEMA``: the key in one ``UInt32``, ``exporters.compact.pack_key``, the
  code in 2 B while the dictionary is small), the few whose key is not a whole second
  of the packing's range as they are (``rows_exact``); and
- ``summary``: per item, what the scans older than the horizon (the *mark*, a time key)
  still decide for a scan read later: the last arrival (facility, key), the last
  departure (facility, key), the latest departure at another facility than that one
  (facility, key), whether the item was delivered, and its first departure (key). ~22 B
  per item, whatever its number of scans (times in whole seconds, 4 B each: ``pack``;
  facility codes as ``UInt16`` while the dictionary is small: ``exporters.compact.code_type``),
  held in the item's own row of ``exporters.compact`` (no hash of its own), or apart with
  its hash for an item without a row (``CompactStages.side``).

A scan of time ``>= mark`` pairs with those exactly as with the whole history: every
summarised scan is older than it, so the latest arrival or departure it pairs with is
in ``rows`` or is one the summary holds (a leg starts at the latest departure from
another facility: the last departure, or the latest one elsewhere when the item came
back to it; the first mile is closed by a departure after the acceptance, which the
summary's last departure tells; the last mile needs the last arrival and whether a
delivery came first), with one documented exception: a departure whose latest arrival at
its own facility is older than the mark and was followed by an arrival elsewhere (an
item back at a facility it left before the horizon) pairs with nothing. The summary's
rows are given back as up to four synthetic scans (``synthetic``), identical before and
after a set, so the report's rules run unchanged. A scan older than the mark is
*beyond the horizon*: its stages are not computed (the caller counts it), but for an
acceptance (often read late: ``--late-grace``) before the item's first departure, whose
first mile the summary's first departure closes exactly.

Acceptances are never stored (the item state holds the first one's time:
``exporters.books_stages``). ``CompactStages`` is immutable; the facility dictionary
only grows (old codes stay valid).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import polars as pl

from exporters.compact import (
    STAGE_COLUMNS,
    CompactItems,
    code_type,
    fit_codes,
    item_key,
    key_hashes,
    key_ok,
    pack_key,
    unpack_key,
)
from exporters.seen import Hashes
from kpi.events import RANK_BITS, STAGE
from kpi.kpis.stage_increments import HISTORY_SCHEMA

#: The summaries are brought up to the horizon when it is this far past them (a time key):
#: a fold's cost is mostly fixed (a few dozen queries, two passes over the summaries),
#: so a small stream folding often would pay it per few events; the price is the recent
#: scans of up to this much event time more.
FOLD_STEP: Final = 6 * 3_600_000_000 * RANK_BITS
#: Rechunk a table once its appends made this many chunks.
_MAX_CHUNKS: Final = 16
_ACCEPTED: Final = STAGE["accepted"]
_ARR, _DEP, _DEL = STAGE["arrived"], STAGE["departed"], STAGE["delivered"]

ROWS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "key": pl.Int64(),
    "facility": pl.UInt32(),
}
#: The recent scans as held: the key packed (``pack_key``), the code as ``code_type``.
HELD_ROWS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "key_p": pl.UInt32(),
    "facility": pl.UInt16(),
}
NAMES_SCHEMA: Final[dict[str, pl.DataType]] = {"facility": pl.String()}
#: One row per item with scans older than the mark.
SUMMARY_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "arr_fac": pl.UInt32(),
    "arr_key": pl.Int64(),
    "dep_fac": pl.UInt32(),
    "dep_key": pl.Int64(),
    "dep2_fac": pl.UInt32(),  # the latest departure at a facility other than dep_fac
    "dep2_key": pl.Int64(),
    "delivered": pl.Boolean(),
    "first_dep_key": pl.Int64(),  # the first departure (a late acceptance's first mile)
}
_SLOTS: Final = (("arr_fac", "arr_key"), ("dep_fac", "dep_key"), ("dep2_fac", "dep2_key"))
_FACS: Final = tuple(f for f, _ in _SLOTS)
#: The summary's time keys and their event's rank (implied by the slot).
_KEYS: Final = {"arr_key": _ARR, "dep_key": _DEP, "dep2_key": _DEP, "first_dep_key": _DEP}
#: Seconds of 2000-01-01T00:00Z: the epoch of the packed times (``exporters.compact``'s).
EPOCH_S: Final = 946_684_800
_US: Final = 1_000_000
_I32: Final = 2**31 - 1
#: The summaries as held: each time key in whole seconds from ``EPOCH_S`` (``Int32``, 4 B
#: instead of 8; the rank is the slot's), exact keys apart (``EXACT_SCHEMA``); the
#: facility codes as ``code_type`` of the dictionary (``UInt16`` while it is small).
PACKED_SCHEMA: Final[dict[str, pl.DataType]] = {
    c: (pl.Int32() if c in _KEYS else t) for c, t in SUMMARY_SCHEMA.items()
}
#: One row per item with a time key that is not a whole second of the packed range (null
#: where it is): the scanners of most carriers stamp whole seconds, so this stays small.
EXACT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    **{k: pl.Int64() for k in _KEYS},
}


def _whole(k: str) -> pl.Expr:
    """Whether key column ``k`` is its slot's rank at a whole second of the packed range."""
    key = pl.col(k)
    us = key // RANK_BITS
    secs = us // _US - EPOCH_S
    return ((key % RANK_BITS == _KEYS[k]) & (us % _US == 0) & (secs.abs() <= _I32)).fill_null(True)


def pack(summary: pl.DataFrame, n_codes: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``SUMMARY_SCHEMA`` rows as (``PACKED_SCHEMA`` rows, their facility codes as
    ``code_type(n_codes)``; ``EXACT_SCHEMA`` rows)."""
    packed = summary.select(
        pl.when(_whole(c)).then(pl.col(c) // RANK_BITS // _US - EPOCH_S).cast(pl.Int32).alias(c)
        if c in _KEYS
        else pl.col(c).cast(code_type(n_codes))
        if c in _FACS
        else pl.col(c)
        for c in SUMMARY_SCHEMA
    )
    odd = summary.filter(~pl.all_horizontal(_whole(k) for k in _KEYS))
    exact = odd.select(
        "item", *(pl.when(_whole(k)).then(None).otherwise(pl.col(k)).alias(k) for k in _KEYS)
    )
    return packed, exact.cast(EXACT_SCHEMA)  # type: ignore[arg-type]


def unpack(packed: pl.DataFrame, exact: pl.DataFrame) -> pl.DataFrame:
    """``pack``'s inverse: ``SUMMARY_SCHEMA`` rows."""
    return _unpacked(packed.lazy(), exact).collect()


def _unpacked(packed: pl.LazyFrame, exact: pl.DataFrame) -> pl.LazyFrame:
    def key(k: str) -> pl.Expr:
        return (pl.col(k).cast(pl.Int64) + EPOCH_S) * _US * RANK_BITS + _KEYS[k]

    codes = (pl.col(f).cast(pl.UInt32) for f in _FACS)
    if exact.is_empty():
        return packed.with_columns(*(key(k).alias(k) for k in _KEYS), *codes)
    joined = packed.join(exact.lazy(), on="item", how="left", suffix="_x", maintain_order="left")
    return joined.select(
        pl.coalesce(pl.col(f"{c}_x"), key(c)).alias(c)
        if c in _KEYS
        else pl.col(c).cast(SUMMARY_SCHEMA[c])
        for c in SUMMARY_SCHEMA
    )


def empty_summary(n_codes: int = 0) -> pl.DataFrame:
    """No summary row (facility codes as ``code_type(n_codes)``)."""
    return fit_codes(pl.DataFrame(schema=PACKED_SCHEMA), _FACS, n_codes)


def fit_summary(summary: pl.DataFrame, n_codes: int) -> pl.DataFrame:
    """``summary`` (``PACKED_SCHEMA`` up to its code dtype) with codes as ``code_type(n_codes)``."""
    return fit_codes(summary, _FACS, n_codes)


def _rows() -> pl.DataFrame:
    return pl.DataFrame(schema=ROWS_SCHEMA)


def _chunked(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.rechunk() if frame.n_chunks() > _MAX_CHUNKS else frame


@dataclass(frozen=True)
class CompactStages:
    """Recent stage scans (``rows``), the summaries of older ones (below ``mark``, a time
    key; None = nothing summarised) and the facility names of the codes.

    An item's summary is held in its row of ``items`` (``exporters.compact.STAGE_COLUMNS``:
    no hash of its own) when it has one, else in ``side`` (``PACKED_SCHEMA``: items whose
    acceptance is not read yet); never in both. ``items`` is the ledger's own item table
    (``attach``; None = every summary in ``side``)."""

    #: The recent scans (``HELD_ROWS_SCHEMA``; ``rows`` gives them as ``ROWS_SCHEMA``).
    held: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=HELD_ROWS_SCHEMA))
    names: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=NAMES_SCHEMA))
    side: pl.DataFrame = field(default_factory=empty_summary)
    mark: int | None = None
    #: The summaries' time keys that are not whole seconds (``pack``).
    exact: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EXACT_SCHEMA))
    #: The stage horizon after the last set (a time key): a scan older than it is late.
    #: The summaries follow it in steps of ``FOLD_STEP`` (``mark <= horizon``).
    horizon: int | None = None
    items: CompactItems | None = field(default=None, repr=False, compare=False)
    #: The recent scans whose key does not pack (``ROWS_SCHEMA``).
    rows_exact: pl.DataFrame = field(default_factory=_rows)

    @property
    def height(self) -> int:
        """Number of recent stage scans held."""
        return self.held.height + self.rows_exact.height

    @property
    def nbytes(self) -> int:
        """Bytes held by the scans, the side summaries and the dictionary (the summaries in
        the item rows are the items' ``nbytes``)."""
        tables = (self.held, self.rows_exact, self.names, self.side, self.exact)
        return int(sum(t.estimated_size() for t in tables))

    @property
    def rows(self) -> pl.DataFrame:
        """The recent scans as ``ROWS_SCHEMA`` rows."""
        return self._recent().collect()

    def _recent(self, keep: pl.Expr | None = None) -> pl.LazyFrame:
        """The recent scans as ``ROWS_SCHEMA`` rows (those ``keep`` says, on that schema)."""
        held = self.held.lazy().select(
            "item", unpack_key(pl.col("key_p")).alias("key"), pl.col("facility").cast(pl.UInt32)
        )
        if self.rows_exact.is_empty():
            return held if keep is None else held.filter(keep)
        parts = [held, self.rows_exact.lazy()]
        return pl.concat(parts if keep is None else [p.filter(keep) for p in parts])

    def with_rows(self, rows: pl.DataFrame) -> CompactStages:
        """With ``rows`` (``ROWS_SCHEMA``, codes of this dictionary) appended as they are."""
        if rows.is_empty():
            return self
        ok = key_ok(pl.col("key"))
        want = code_type(self.names.height)
        new = rows.filter(ok).select(
            "item", pack_key(pl.col("key")).alias("key_p"), pl.col("facility").cast(want)
        )
        held = fit_codes(self.held, ("facility",), self.names.height)
        odd = rows.filter(~ok)
        return replace(
            self,
            held=_chunked(pl.concat([held, new], how="vertical")),
            rows_exact=self.rows_exact if odd.is_empty() else pl.concat([self.rows_exact, odd]),
        )

    @property
    def summary(self) -> pl.DataFrame:
        """Every summary as ``PACKED_SCHEMA`` rows (codes as held): the item rows' and ``side``."""
        return self._packed().collect()

    def _packed(self, wanted: pl.Series | None = None) -> pl.LazyFrame:
        """The ``PACKED_SCHEMA`` rows of the items among ``wanted`` (an imploded hash list;
        None = all): those in the item rows, then ``side``'s."""
        side = self.side.lazy()
        if self.items is None or not self.attached():
            return side if wanted is None else side.filter(pl.col("item").is_in(wanted))
        held = pl.col("delivered").is_not_null()
        if wanted is not None:
            held = held & pl.col("item").is_in(wanted)
            side = side.filter(pl.col("item").is_in(wanted))
        rows = self.items.main.lazy().filter(held).select(self.side.columns)
        return pl.concat([rows, side], how="vertical_relaxed")

    def attached(self) -> int:
        """Number of summaries held in the item rows."""
        if self.items is None:
            return 0
        main = self.items.main
        return main.height - main.get_column("delivered").null_count()

    def attach(self, items: CompactItems) -> CompactStages:
        """This state on ``items`` (the ledger's new item table, whose rows carry the
        summaries of the same items as this one's, but retired ones), with the ``side``
        summaries of items that have a row there moved into it (a checkpoint of format 5
        held every summary apart)."""
        main = fit_codes(items.main, _FACS, self.names.height)
        items = items if main is items.main else replace(items, main=main)
        moved = self.side.join(main.select("item"), on="item", how="semi")
        if moved.is_empty():
            return replace(self, items=items)
        side = self.side.join(moved.select("item"), on="item", how="anti")
        return replace(self, items=self._written(items, moved), side=side)

    def _written(self, items: CompactItems, summaries: pl.DataFrame) -> CompactItems:
        """``items`` with ``summaries`` (``PACKED_SCHEMA``, items of ``items`` only) in their rows."""
        n_codes = self.names.height
        new = fit_codes(summaries, _FACS, n_codes).rename({c: f"{c}_n" for c in STAGE_COLUMNS})
        main = fit_codes(items.main, _FACS, n_codes)
        joined = main.join(new, on="item", how="left", maintain_order="left")
        found = pl.col("delivered_n").is_not_null()
        main = joined.select(
            pl.when(found).then(pl.col(f"{c}_n")).otherwise(pl.col(c)).alias(c)
            if c in STAGE_COLUMNS
            else pl.col(c)
            for c in main.columns
        )
        return replace(items, main=main)

    def history(self, hashes: pl.Series) -> pl.DataFrame:
        """The ``HISTORY_SCHEMA`` rows of the items among ``hashes`` (keyed by
        ``item_key``): recent scans and the summaries' synthetic ones."""
        return self._decode(self.coded_rows(hashes))

    def decode(self) -> pl.DataFrame:
        """Every scan as ``HISTORY_SCHEMA`` rows (recent and synthetic; by ``item_key``)."""
        return self._decode(pl.concat([self.synthetic(self.summaries()), self.rows]))

    def _decode(self, rows: pl.DataFrame) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "item_id": item_key(rows.get_column("item")),
                "key": rows.get_column("key"),
                "facility": self.names.get_column("facility").gather(rows.get_column("facility")),
            },
            schema=HISTORY_SCHEMA,
        )

    def add(self, history: pl.DataFrame) -> CompactStages:
        """With ``history``'s rows (``HISTORY_SCHEMA``, keyed by ``item_key``) appended, but
        acceptances (``exporters.books_stages`` makes an item's first one from its state)."""
        grown, coded = self.encode(history.filter(pl.col("key") % RANK_BITS != _ACCEPTED))
        return grown.add_coded(coded)

    def encode(self, history: pl.DataFrame) -> tuple[CompactStages, pl.DataFrame]:
        """``history``'s rows (``HISTORY_SCHEMA``) as ``ROWS_SCHEMA`` rows, and this
        state with its dictionary grown by their new facilities (nothing stored yet)."""
        if history.is_empty():
            return self, _rows()
        names = self.names
        indexed = names.with_row_index("_code")
        wanted = history.select("facility")
        found = wanted.join(indexed, on="facility", how="left", maintain_order="left")
        missing = (
            found.filter(pl.col("_code").is_null()).select("facility").unique(maintain_order=True)
        )
        if missing.height:
            names = pl.concat([names, missing], how="vertical").rechunk()
            indexed = names.with_row_index("_code")
            found = wanted.join(indexed, on="facility", how="left", maintain_order="left")
        coded = pl.DataFrame(
            {
                "item": key_hashes(history.get_column("item_id")),
                "key": history.get_column("key"),
                "facility": found.get_column("_code").cast(pl.UInt32),
            },
            schema=ROWS_SCHEMA,
        )
        return replace(self, names=names), coded

    def add_coded(self, coded: pl.DataFrame) -> CompactStages:
        """With ``coded`` rows (``ROWS_SCHEMA``, codes of this dictionary) appended, but
        acceptances (rows older than the mark are the caller's to leave out)."""
        return self.with_rows(coded.filter(pl.col("key") % RANK_BITS != _ACCEPTED))

    def coded_rows(
        self,
        hashes: pl.Series,
        firsts: pl.Series | None = None,
        new: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """The ``ROWS_SCHEMA`` rows of the items among ``hashes``: their recent scans and
        their summaries' synthetic scans (the first departure for the items among
        ``firsts`` only, an imploded hash list; None = every item; the latest departure
        elsewhere only for the items with an arrival at their last departure's facility
        among their recent scans or ``new``, the set's ``ROWS_SCHEMA`` rows, when given:
        only such an arrival reads it)."""
        wanted = hashes.cast(pl.UInt64).unique().implode()
        item = pl.col("item").is_in(wanted)
        recent = self._recent(item)
        if self.side.is_empty() and not self.attached():
            return recent.collect()
        # One query: the summaries found, unpacked and given back as scans, and the scans.
        exact = self.exact.filter(item) if self.exact.height else self.exact
        summary = _unpacked(self._packed(wanted), exact)
        back = None
        if new is not None:
            moves = pl.concat([recent, new.lazy().select(ROWS_SCHEMA.keys())])
            back = moves.filter(pl.col("key") % RANK_BITS == _ARR).select(
                "item", pl.col("facility").alias("dep_fac")
            )
        return pl.concat([self._synthetic(summary, firsts, back), recent]).collect()

    def synthetic(self, summary: pl.DataFrame, firsts: pl.Series | None = None) -> pl.DataFrame:
        """``summary``'s rows as the scans that stand for them (``_synthetic``)."""
        return self._synthetic(summary.lazy(), firsts).collect()

    def _synthetic(
        self, summary: pl.LazyFrame, firsts: pl.Series | None, back: pl.LazyFrame | None = None
    ) -> pl.LazyFrame:
        """``summary``'s rows as the scans that stand for them (``ROWS_SCHEMA``): its last
        arrival, last departure, latest departure elsewhere, and a delivery just below
        the mark when the item was delivered (only its being first is ever read); its
        first departure for the items among ``firsts`` (None = all): only an acceptance
        older than the mark reads it, and an extra departure costs the rules a look back."""
        parts = [
            (
                summary.join(back, on=["item", "dep_fac"], how="semi")
                if back is not None and k == "dep2_key"
                else summary
            )
            .filter(pl.col(k).is_not_null())
            .select("item", pl.col(k).alias("key"), pl.col(f).alias("facility"))
            for f, k in _SLOTS
        ]
        # The first departure, unless it is one of those; when there is no departure
        # elsewhere, every past departure was at ``dep_fac``.
        first = pl.col("first_dep_key")
        distinct = first.is_not_null() & (first != pl.col("dep_key"))
        if firsts is not None:
            distinct = distinct & pl.col("item").is_in(firsts)
        parts.append(
            summary.filter(distinct & first.ne_missing(pl.col("dep2_key"))).select(
                "item", first.alias("key"), pl.col("dep_fac").alias("facility")
            )
        )
        if self.mark is not None:
            below = (self.mark // RANK_BITS - 1) * RANK_BITS + _DEL
            parts.append(
                summary.filter(pl.col("delivered")).select(
                    "item",
                    pl.lit(below, pl.Int64).alias("key"),
                    pl.lit(0, pl.UInt32).alias("facility"),
                )
            )
        return pl.concat(parts, how="vertical")

    def fold(self, horizon: int | None) -> CompactStages:
        """With the horizon at ``horizon`` (a time key, never below the current one), and
        the recent scans older than it folded into their items' summaries once it is
        ``FOLD_STEP`` past the last fold (a fold reads the touched items' summaries and
        rewrites the table: every 6 hours of event time, not at every set)."""
        if horizon is None or (self.horizon is not None and horizon <= self.horizon):
            return self
        if self.mark is not None and horizon - self.mark < FOLD_STEP:
            return replace(self, horizon=horizon)
        return replace(self._folded(horizon), horizon=horizon)

    def _folded(self, mark: int) -> CompactStages:
        key = pl.col("key")
        old = self._recent(key < mark).collect()
        if old.is_empty():
            return replace(self, mark=mark)
        items = old.get_column("item").unique().implode()
        prev = self.summaries(items)
        n_codes = self.names.height
        summary = _summarise(pl.concat([self.synthetic(prev), old]), self._name_ranks())
        folded, exact = pack(summary, n_codes)
        others = ~pl.col("item").is_in(items)
        kept = fit_codes(self.side.filter(others), _FACS, n_codes)
        held = self.items
        if held is not None:  # the items with a row hold their summary there
            in_rows = folded.get_column("item").is_in(held.main.get_column("item").implode())
            held = self._written(held, folded.filter(in_rows))
            folded = folded.filter(~in_rows)
        return replace(
            self,
            held=self.held.filter(unpack_key(pl.col("key_p")) >= mark),
            rows_exact=self.rows_exact.filter(key >= mark),
            side=_chunked(pl.concat([kept, folded])),
            exact=pl.concat([self.exact.filter(others), exact]),
            mark=mark,
            items=held,
        )

    def summaries(self, wanted: pl.Series | None = None) -> pl.DataFrame:
        """The ``SUMMARY_SCHEMA`` rows of the items among ``wanted`` (an imploded hash
        list), or of every item."""
        if wanted is None:
            return unpack(self.summary, self.exact)
        exact = self.exact.filter(pl.col("item").is_in(wanted))
        return _unpacked(self._packed(wanted), exact).collect()

    def _name_ranks(self) -> pl.Series:
        """Per facility code, its rank in name order (the report's tie rule)."""
        return self.names.get_column("facility").rank("ordinal").cast(pl.UInt32)

    def retire(self, hashes: Hashes) -> CompactStages:
        """Without the scans and summaries of the items ``hashes`` (retired from the state:
        their rows in ``items``, if any, are gone already)."""
        if not len(hashes):
            return self
        gone = pl.Series(np.asarray(hashes, dtype=np.uint64), dtype=pl.UInt64).implode()
        return replace(
            self,
            held=self.held.filter(~pl.col("item").is_in(gone)),
            rows_exact=self.rows_exact.filter(~pl.col("item").is_in(gone)),
            side=self.side.filter(~pl.col("item").is_in(gone)),
            exact=self.exact.filter(~pl.col("item").is_in(gone)),
        )


def _summarise(scans: pl.DataFrame, name_ranks: pl.Series) -> pl.DataFrame:
    """One ``SUMMARY_SCHEMA`` row per item of ``scans`` (``ROWS_SCHEMA``, every scan of the
    item below the mark that matters: the previous summary's synthetic ones included)."""
    ev = pl.col("key") % RANK_BITS
    fac = pl.col("facility")
    ranked = scans.with_columns(ev.alias("ev"), pl.lit(name_ranks).gather(fac).alias("nr")).sort(
        "item", "key", "nr"
    )
    items = scans.select(pl.col("item").unique())

    def last(rows: pl.DataFrame, f: str, k: str) -> pl.DataFrame:
        return rows.group_by("item").agg(fac.last().alias(f), pl.col("key").last().alias(k))

    deps = ranked.filter(pl.col("ev") == _DEP)
    dep = last(deps, "dep_fac", "dep_key")
    elsewhere = deps.join(dep.select("item", "dep_fac"), on="item").filter(fac != pl.col("dep_fac"))
    delivered = ranked.filter(pl.col("ev") == _DEL).select(
        pl.col("item").unique(), pl.lit(True).alias("delivered")
    )
    first_dep = deps.group_by("item").agg(pl.col("key").first().alias("first_dep_key"))
    out = (
        items.join(first_dep, on="item", how="left")
        .join(
            last(ranked.filter(pl.col("ev") == _ARR), "arr_fac", "arr_key"), on="item", how="left"
        )
        .join(dep, on="item", how="left")
        .join(last(elsewhere, "dep2_fac", "dep2_key"), on="item", how="left")
        .join(delivered, on="item", how="left")
        .with_columns(pl.col("delivered").fill_null(False))
    )
    return out.select(SUMMARY_SCHEMA.keys()).cast(SUMMARY_SCHEMA)  # type: ignore[arg-type]
