"""The exporter's item state in a compact encoding (about 30 bytes per tracked item).

The engine functions (``kpi.lifecycle``, ``kpi.kpis.increments``) see and return
``kpi.lifecycle.STATE_SCHEMA`` frames; the exporter holds its items encoded and
decodes only the rows a set touches (by item hash) before it calls them, then
re-encodes the result:

- ``item_id`` -> a 64-bit hash (``exporters.seen.hash_ids``; the exporter never shows
  an item id). Inside the exporter the decoded ``item_id`` is the hash's 8 bytes in
  base64 (12 characters: polars keeps strings of up to 12 bytes inside the column, no
  heap), and the events of a set carry the same key (``item_key``), so the engine's joins
  match.
- ``accepted_event_id`` -> the low 32 bits of the event id's hash, decoded as ten
  zero-padded digits (``event_key``): it only orders acceptances of one item at the
  same microsecond, and the events of a set carry the same key, so the order is still
  total and the same whatever the batching. The winner of such a tie is then the
  smallest key rather than the smallest event id (``kpi report`` keeps the latter).
- ``(product, origin, destination)`` -> one route code and ``last_facility`` -> a
  facility code; the dictionaries grow as values appear and are checkpointed with the
  codes. The codes are held as ``UInt16`` while their dictionary has at most 65,536
  entries (2 B instead of 4) and as ``UInt32`` beyond (``code_type``: the column is
  widened when the dictionary grows past it); they are ``UInt32`` outside the tables.
- ``promised_by_given``, ``attempt_key``, ``delivered_at`` and ``returned_at`` are null
  for an item in transit. Of ``delivered_at`` and ``returned_at`` only whether they are
  set is kept (a bit each in the row): once set, only that is ever read (the counters
  take the delivery's exact time from the event that brings it, the gauges look at
  unfinished items only), so no counter changes; they decode as the item's last scan
  time. The promise and the first attempt live in a sparse ``extra`` table, one row per
  item that has either and is not delivered: of a delivered item only whether it had an
  attempt is read (a later attempt is then not its first; the promise judges a new
  delivery only), so it is a bit in the row and decodes as the last scan's key.
- ``accepted_at`` and ``last_key`` are exact, held as whole seconds from ``EPOCH_S``
  (``Int32``) and as whole seconds from ``KEY_EPOCH_S`` times 8 plus the rank (``UInt32``,
  2020-2037) when they are whole seconds of that range, else exact in the sparse
  ``exact`` table (``pack_main``): scanners stamp whole seconds, so it is mostly empty. The same for ``promised_by_given`` and
  ``attempt_key`` in the sparse table (``pack_extra``; exact ones in ``extra_exact``).

``CompactItems`` is immutable: every change returns a new one (readers of an older
ledger keep a consistent cut); dictionaries only grow, so old codes stay valid.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow as pa

from exporters.seen import Hashes, hash_ids
from kpi.lifecycle import RANK_BITS, STATE_SCHEMA

#: Rechunk a table once its appends made this many chunks.
_MAX_CHUNKS: Final = 16
#: Seconds of 2000-01-01T00:00Z: the epoch of the whole-second columns.
EPOCH_S: Final = 946_684_800
_I32: Final = (-(2**31) + 1, 2**31 - 1)
#: Seconds of 2020-01-01T00:00Z: the epoch of the packed time keys (``UInt32``: whole
#: seconds times 8 plus the rank, 2020-2037; others are kept exact).
KEY_EPOCH_S: Final = 1_577_836_800
_KEY_SECS: Final = 2**32 // 8
_US: Final = 1_000_000
_LOW32: Final = np.uint64(0xFFFF_FFFF)
ROUTE: Final = ("product", "origin", "destination")
FACILITY: Final = "last_facility"

#: Whether the item was delivered, returned, attempted (a bit each): of a delivered
#: item's delivery, promise and first attempt nothing else is ever read.
_FLAGS: Final[dict[str, pl.DataType]] = {
    "has_delivery": pl.Boolean(),
    "has_return": pl.Boolean(),
    "attempted": pl.Boolean(),
}
#: The item columns as the encoding computes them (exact times).
FULL_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "accepted_at": pl.Int64(),  # microseconds
    "acc_event": pl.UInt32(),
    "route": pl.UInt32(),
    "last_key": pl.Int64(),
    "facility": pl.UInt32(),
    **_FLAGS,
}
#: ... and as they are held: the acceptance in whole seconds from ``EPOCH_S``, the last
#: scan's key in whole seconds from ``KEY_EPOCH_S`` times 8 plus its rank (``UInt32``),
#: the codes as ``code_type`` of their dictionary (``UInt32`` here, ``UInt16`` while the
#: dictionary is small: 24 B instead of 36); the times that are not whole seconds of
#: their range are kept exact in ``EXACT_SCHEMA`` rows (scanners stamp whole seconds).
MAIN_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "accepted_s": pl.Int32(),
    "acc_event": pl.UInt32(),
    "route": pl.UInt32(),
    "last_p": pl.UInt32(),  # whole seconds from KEY_EPOCH_S times 8, plus the rank
    "facility": pl.UInt32(),
    **_FLAGS,
}
#: The item's stage summary (``exporters.compact_stages.PACKED_SCHEMA`` but its hash),
#: held in the item's own row so the summary needs no hash of its own (8 B an item):
#: null when the item has none (its scans are all within the stage horizon).
STAGE_COLUMNS: Final[dict[str, pl.DataType]] = {
    "arr_fac": pl.UInt16(),
    "arr_key": pl.Int32(),
    "dep_fac": pl.UInt16(),
    "dep_key": pl.Int32(),
    "dep2_fac": pl.UInt16(),
    "dep2_key": pl.Int32(),
    "delivered": pl.Boolean(),
    "first_dep_key": pl.Int32(),
}
#: ``main`` as held: the item columns and its stage summary's.
HELD_SCHEMA: Final[dict[str, pl.DataType]] = {**MAIN_SCHEMA, **STAGE_COLUMNS}
EXACT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "accepted_at": pl.Int64(),  # null when ``accepted_s`` is exact
    "last_key": pl.Int64(),  # null when ``last_p`` is exact
}
#: The sparse table as the encoding computes it (exact times) ...
EXTRA_FULL_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "promised_by_given": pl.Int64(),  # microseconds
    "attempt_key": pl.Int64(),
}
#: ... and as it is held: the promise and the first attempt in whole seconds (the
#: attempt's rank packed with it), 16 B instead of 21; others exact in ``EXTRA_EXACT_SCHEMA``.
EXTRA_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "promised_s": pl.Int32(),
    "attempt_p": pl.UInt32(),
}
EXTRA_EXACT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "promised_by_given": pl.Int64(),  # null when ``promised_s`` is exact
    "attempt_key": pl.Int64(),  # null when ``attempt_p`` is exact
}
ROUTES_SCHEMA: Final[dict[str, pl.DataType]] = {c: pl.String() for c in ROUTE}
FACILITIES_SCHEMA: Final[dict[str, pl.DataType]] = {FACILITY: pl.String()}
_EXTRA_COLS: Final = ("promised_by_given", "attempt_key")


#: The most codes a ``UInt16`` column holds.
SMALL_CODES: Final = 1 << 16


def code_type(n_codes: int) -> pl.DataType:
    """The dtype codes into a dictionary of ``n_codes`` entries are held as."""
    return pl.UInt16() if n_codes <= SMALL_CODES else pl.UInt32()


def fit_codes(frame: pl.DataFrame, cols: tuple[str, ...], n_codes: int) -> pl.DataFrame:
    """``frame`` with its code columns ``cols`` as ``code_type(n_codes)`` (widened or kept)."""
    want = code_type(n_codes)
    if all(frame.schema[c] == want for c in cols):
        return frame
    return frame.with_columns(pl.col(c).cast(want) for c in cols)


def item_key(hashes: pl.Series | Hashes) -> pl.Series:
    """Item hashes as the ``item_id`` strings the engine functions join on (base64 of 8 bytes)."""
    array = hashes.to_numpy() if isinstance(hashes, pl.Series) else hashes
    raw = np.ascontiguousarray(array, dtype="<u8")
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(8), len(raw), [None, pa.py_buffer(raw.view(np.uint8))]
    )
    binary = pl.Series("item_id", fixed).cast(pl.Binary)
    return binary.bin.encode("base64")


def event_key(hashes: pl.Series | Hashes) -> pl.Series:
    """Event-id hashes as the ``accepted_event_id`` order key (10 digits of the low 32 bits)."""
    low = np.asarray(hashes, dtype=np.uint64) & _LOW32
    return pl.Series("event_id", low, dtype=pl.UInt64).cast(pl.String).str.zfill(10)


def key_hashes(item_ids: pl.Series) -> pl.Series:
    """The hashes back from ``item_key`` strings."""
    raw = item_ids.str.decode("base64")
    return raw.bin.reinterpret(dtype=pl.UInt64, endianness="little").alias("item")


def _secs_ok(us: pl.Expr) -> pl.Expr:
    """Whether microseconds ``us`` are a whole second of the ``Int32`` range (or null)."""
    secs = us.floordiv(_US) - EPOCH_S
    return ((us % _US == 0) & (secs >= _I32[0]) & (secs <= _I32[1])).fill_null(True)


def key_ok(k: pl.Expr) -> pl.Expr:
    """Whether time key ``k`` is at a whole second of the ``UInt32`` packing's range (or null)."""
    us = k.floordiv(RANK_BITS)
    secs = us.floordiv(_US) - KEY_EPOCH_S
    return ((us % _US == 0) & (secs >= 0) & (secs < _KEY_SECS)).fill_null(True)


def pack_key(k: pl.Expr) -> pl.Expr:
    """Time key ``k`` as one ``UInt32`` (whole seconds from ``KEY_EPOCH_S`` times 8 plus the
    rank) where ``key_ok``, else null."""
    packed = (k.floordiv(RANK_BITS * _US) - KEY_EPOCH_S) * RANK_BITS + k % RANK_BITS
    return pl.when(key_ok(k)).then(packed).cast(pl.UInt32)


def unpack_key(p: pl.Expr) -> pl.Expr:
    """``pack_key``'s inverse (``Int64`` time keys)."""
    p = p.cast(pl.Int64)
    return (p.floordiv(RANK_BITS) + KEY_EPOCH_S) * _US * RANK_BITS + p % RANK_BITS


def _pack(
    full: pl.DataFrame,
    schema: dict[str, pl.DataType],
    time: tuple[str, str],
    key: tuple[str, str],
    exact_schema: dict[str, pl.DataType],
    **more: pl.Expr,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``full`` as ``schema`` rows with its ``time`` (microseconds -> whole seconds) and
    ``key`` (time key -> whole seconds from ``KEY_EPOCH_S`` times 8 plus the rank, one
    ``UInt32``) packed, and the rows whose time or key is not a whole second of its range
    as ``exact_schema`` rows (``more``: other columns)."""
    (t_name, t_s), (k_name, k_p) = time, key
    t, k = pl.col(t_name), pl.col(k_name)
    t_ok, k_ok = _secs_ok(t), key_ok(k)
    made = {
        t_s: pl.when(t_ok).then(t.floordiv(_US) - EPOCH_S).cast(pl.Int32),
        k_p: pack_key(k),
        **more,
    }
    packed = full.select(made.get(c, pl.col(c)).alias(c) for c in schema)
    exact = full.filter(~(t_ok & k_ok)).select(
        "item",
        pl.when(t_ok).then(None).otherwise(t).alias(t_name),
        pl.when(k_ok).then(None).otherwise(k).alias(k_name),
    )
    return packed, exact.cast(exact_schema)  # type: ignore[arg-type]


def _unpack(
    packed: pl.DataFrame,
    exact: pl.DataFrame,
    schema: dict[str, pl.DataType],
    time: tuple[str, str],
    key: tuple[str, str],
    **more: pl.Expr,
) -> pl.DataFrame:
    """``_pack``'s inverse: ``schema`` rows in ``packed``'s order."""
    (t_name, t_s), (k_name, k_p) = time, key
    t = (pl.col(t_s).cast(pl.Int64) + EPOCH_S) * _US
    k = unpack_key(pl.col(k_p))
    if not exact.is_empty():
        packed = packed.join(exact, on="item", how="left", maintain_order="left")
        t, k = pl.coalesce(pl.col(t_name), t), pl.coalesce(pl.col(k_name), k)
    made = {t_name: t, k_name: k, **more}
    return packed.select(made.get(c, pl.col(c)).alias(c) for c in schema)


_MAIN_TIMES: Final = (("accepted_at", "accepted_s"), ("last_key", "last_p"))
_EXTRA_TIMES: Final = (("promised_by_given", "promised_s"), ("attempt_key", "attempt_p"))


def pack_main(
    full: pl.DataFrame, n_routes: int = SMALL_CODES, n_facilities: int = SMALL_CODES
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``FULL_SCHEMA`` rows as (``MAIN_SCHEMA`` rows, ``EXACT_SCHEMA`` rows; the codes as
    ``code_type`` of dictionaries of ``n_routes`` routes and ``n_facilities`` facilities)."""
    route = pl.col("route").cast(code_type(n_routes))
    facility = pl.col("facility").cast(code_type(n_facilities))
    return _pack(full, MAIN_SCHEMA, *_MAIN_TIMES, EXACT_SCHEMA, route=route, facility=facility)


def pack_extra(full: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``EXTRA_FULL_SCHEMA`` rows as (``EXTRA_SCHEMA`` rows, ``EXTRA_EXACT_SCHEMA`` rows)."""
    return _pack(full, EXTRA_SCHEMA, *_EXTRA_TIMES, EXTRA_EXACT_SCHEMA)


def unpack_extra(extra: pl.DataFrame, exact: pl.DataFrame) -> pl.DataFrame:
    """``pack_extra``'s inverse: ``EXTRA_FULL_SCHEMA`` rows (in ``extra``'s order)."""
    return _unpack(extra, exact, EXTRA_FULL_SCHEMA, *_EXTRA_TIMES)


def unpack_main(main: pl.DataFrame, exact: pl.DataFrame) -> pl.DataFrame:
    """``pack_main``'s inverse: ``FULL_SCHEMA`` rows (in ``main``'s order)."""
    route, facility = pl.col("route").cast(pl.UInt32), pl.col("facility").cast(pl.UInt32)
    return _unpack(main, exact, FULL_SCHEMA, *_MAIN_TIMES, route=route, facility=facility)


def _utc(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def sparse_extra(rows: pl.DataFrame) -> pl.DataFrame:
    """The ``EXTRA_FULL_SCHEMA`` rows of the items of ``rows`` (``EXTRA_FULL_SCHEMA`` and
    ``has_delivery``) that need one: with a promise or an attempt, not delivered."""
    kept = ~pl.col("has_delivery") & pl.any_horizontal(pl.col(c).is_not_null() for c in _EXTRA_COLS)
    return rows.filter(kept).select(EXTRA_FULL_SCHEMA.keys()).cast(EXTRA_FULL_SCHEMA)  # type: ignore[arg-type]


def _set_at_last_scan(flag: str) -> pl.Expr:
    """A finished item's delivery or return time as decoded: its last scan's (only whether
    it is set is ever read)."""
    last_us = pl.coalesce(pl.col("last_key").floordiv(RANK_BITS), pl.lit(EPOCH_S * _US))
    at = last_us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.when(pl.col(flag)).then(at)


def _coded(values: pl.DataFrame, book: pl.DataFrame) -> tuple[pl.Series, pl.DataFrame]:
    """Codes of ``values``' rows in ``book`` (row positions), the book grown by new rows."""
    cols = values.columns
    indexed = book.with_row_index("_code")
    found = values.join(indexed, on=cols, how="left", nulls_equal=True, maintain_order="left")
    missing = found.filter(pl.col("_code").is_null()).select(cols).unique(maintain_order=True)
    if missing.height:
        book = pl.concat([book, missing], how="vertical").rechunk()
        indexed = book.with_row_index("_code")
        found = values.join(indexed, on=cols, how="left", nulls_equal=True, maintain_order="left")
    return found.get_column("_code").cast(pl.UInt32), book


@dataclass(frozen=True)
class CompactItems:
    """Encoded item states: ``main`` (every item), ``extra`` (sparse) and two dictionaries."""

    main: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=HELD_SCHEMA))
    extra: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EXTRA_SCHEMA))
    routes: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ROUTES_SCHEMA))
    facilities: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=FACILITIES_SCHEMA))
    #: Times of ``main`` that are not whole seconds, exact (``pack_main``).
    exact: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EXACT_SCHEMA))
    #: Times of ``extra`` that are not whole seconds, exact (``pack_extra``).
    extra_exact: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema=EXTRA_EXACT_SCHEMA)
    )

    # --- building -------------------------------------------------------------------------

    @classmethod
    def from_state(cls, state: pl.DataFrame) -> CompactItems:
        """Encode a ``STATE_SCHEMA`` frame keyed by real item and event ids (e.g. a migration)."""
        keyed = state.with_columns(
            item_key(hash_ids(state.get_column("item_id"))),
            pl.when(pl.col("accepted_event_id").is_not_null())
            .then(event_key(hash_ids(state.get_column("accepted_event_id"))))
            .alias("accepted_event_id"),
        )
        return cls().replace(keyed)

    def replace(self, merged: pl.DataFrame) -> CompactItems:
        """The items with ``merged``'s rows (``STATE_SCHEMA``, keyed by ``item_key``) replacing theirs."""
        if merged.is_empty():
            return self
        full, full_extra, routes, facilities = self._encode(merged)
        main, exact = pack_main(full, routes.height, facilities.height)
        extra, extra_exact = pack_extra(full_extra)
        touched = main.get_column("item").implode()
        others = ~pl.col("item").is_in(touched)
        mine = self.main.get_column("item").is_in(touched)
        # The touched items keep their stage summaries (``exporters.compact_stages``).
        carried = self.main.filter(mine).select("item", *STAGE_COLUMNS)
        main = main.join(carried, on="item", how="left", maintain_order="left")
        kept = fit_codes(self.main.filter(~mine), ("route",), routes.height)
        kept = fit_codes(kept, ("facility",), facilities.height)
        return CompactItems(
            _appended(kept, main),
            _appended(self.extra.filter(others), extra),
            routes,
            facilities,
            _appended(self.exact.filter(others), exact),
            _appended(self.extra_exact.filter(others), extra_exact),
        )

    def _encode(
        self, state: pl.DataFrame
    ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        route, routes = _coded(state.select(ROUTE), self.routes)
        facility, facilities = _coded(state.select(FACILITY), self.facilities)
        item = key_hashes(state.get_column("item_id"))
        main = pl.DataFrame(
            {
                "item": item,
                "accepted_at": state.get_column("accepted_at").dt.epoch("us"),
                "acc_event": state.get_column("accepted_event_id").cast(pl.UInt32),
                "route": route,
                "last_key": state.get_column("last_key"),
                "facility": facility,
                "has_delivery": state.get_column("delivered_at").is_not_null(),
                "has_return": state.get_column("returned_at").is_not_null(),
                "attempted": state.get_column("attempt_key").is_not_null(),
            },
            schema=FULL_SCHEMA,
        )
        extra = sparse_extra(
            state.select(
                item,
                pl.col("promised_by_given").dt.epoch("us"),
                "attempt_key",
                pl.col("delivered_at").is_not_null().alias("has_delivery"),
            )
        )
        return main, extra, routes, facilities

    # --- reading --------------------------------------------------------------------------

    @property
    def height(self) -> int:
        """Number of items held."""
        return self.main.height

    @property
    def nbytes(self) -> int:
        """Bytes held by the tables and dictionaries."""
        tables = (self.main, self.extra, self.routes, self.facilities, self.exact, self.extra_exact)
        return int(sum(t.estimated_size() for t in tables))

    def hashes(self) -> pl.Series:
        """Every item's hash."""
        return self.main.get_column("item")

    def contains(self, hashes: pl.Series) -> pl.Series:
        """Whether each hash is an item held."""
        return hashes.is_in(self.main.get_column("item").implode()).fill_null(False)

    def subset(self, hashes: pl.Series) -> CompactItems:
        """The items among ``hashes`` only (same dictionaries): a set reads its items' rows
        and their stage summaries from this, one pass over the tables."""
        wanted = pl.col("item").is_in(hashes.cast(pl.UInt64).unique().implode())
        return CompactItems(
            self.main.filter(wanted),
            self.extra.filter(wanted),
            self.routes,
            self.facilities,
            self.exact.filter(wanted) if self.exact.height else self.exact,
            self.extra_exact.filter(wanted) if self.extra_exact.height else self.extra_exact,
        )

    def rows(self, hashes: pl.Series) -> pl.DataFrame:
        """The ``STATE_SCHEMA`` rows of the items among ``hashes`` (keyed by ``item_key``)."""
        wanted = hashes.cast(pl.UInt64).unique().implode()
        return self._decode(
            self.main.select(MAIN_SCHEMA.keys()).filter(pl.col("item").is_in(wanted)),
            self.extra.filter(pl.col("item").is_in(wanted)),
        )

    def decode(self) -> pl.DataFrame:
        """Every item as ``STATE_SCHEMA`` rows (keyed by ``item_key``)."""
        return self._decode(self.main, self.extra)

    def at_facilities(self, codes: pl.Series, without: pl.Series) -> pl.DataFrame:
        """The ``STATE_SCHEMA`` rows of the items whose facility code is among ``codes``,
        but those among the hashes ``without`` (a refresh decodes the state by parts)."""
        main = self.main.select(MAIN_SCHEMA.keys()).filter(  # not the summaries' columns
            pl.col("facility").is_in(
                codes.cast(self.main.schema["facility"], strict=False).implode()
            )
            & ~pl.col("item").is_in(without.cast(pl.UInt64).implode())
        )
        extra = self.extra.filter(pl.col("item").is_in(main.get_column("item").implode()))
        return self._decode(main, extra)

    def newest_keys(self, hashes: pl.Series) -> pl.DataFrame:
        """``item_id`` (the hash, ``UInt64``) and ``last_key`` of the items among ``hashes``."""
        wanted = hashes.cast(pl.UInt64).unique().implode()
        rows = self._full(self.main.select(MAIN_SCHEMA.keys()).filter(pl.col("item").is_in(wanted)))
        return rows.select(pl.col("item").alias("item_id"), "last_key")

    def _full(self, main: pl.DataFrame) -> pl.DataFrame:
        """``main`` rows (some of this state's) with their exact times."""
        main = main.select(MAIN_SCHEMA.keys())  # not the summaries' columns (no copy)
        if self.exact.is_empty():
            return unpack_main(main, self.exact)
        return unpack_main(main, self.exact.filter(pl.col("item").is_in(main["item"].implode())))

    def _full_extra(self, extra: pl.DataFrame) -> pl.DataFrame:
        """``extra`` rows (some of this state's) with their exact times."""
        exact = self.extra_exact
        if exact.height:
            exact = exact.filter(pl.col("item").is_in(extra["item"].implode()))
        return unpack_extra(extra, exact)

    def _decode(self, main: pl.DataFrame, extra: pl.DataFrame) -> pl.DataFrame:
        full_extra = self._full_extra(extra)
        joined = self._full(main).join(full_extra, on="item", how="left", maintain_order="left")
        joined = joined.with_columns(item_key(joined.get_column("item")))
        route = pl.col("route")
        facility = pl.col("facility")
        return joined.select(
            pl.col("item_id"),
            _utc("accepted_at").alias("accepted_at"),
            pl.col("acc_event").cast(pl.String).str.zfill(10).alias("accepted_event_id"),
            *(pl.lit(self.routes.get_column(c)).gather(route).alias(c) for c in ROUTE),
            _utc("promised_by_given").alias("promised_by_given"),
            pl.coalesce("attempt_key", pl.when(pl.col("attempted")).then(pl.col("last_key"))),
            _set_at_last_scan("has_delivery").alias("delivered_at"),
            _set_at_last_scan("has_return").alias("returned_at"),
            pl.col("last_key"),
            pl.lit(self.facilities.get_column(FACILITY)).gather(facility).alias(FACILITY),
        ).cast(STATE_SCHEMA)  # type: ignore[arg-type]

    # --- retention -------------------------------------------------------------------------

    def retire(self, clock_us: int | None, retention_us: int | None) -> tuple[CompactItems, Hashes]:
        """Without the finished items whose last scan is past the retention; their hashes."""
        none = np.empty(0, dtype=np.uint64)
        if retention_us is None or clock_us is None:
            return self, none
        done = self.main.lazy().filter(pl.col("has_delivery") | pl.col("has_return"))
        horizon_key = (clock_us - retention_us) * RANK_BITS
        old = (
            self._full(done.select(list(MAIN_SCHEMA)).collect())
            .filter(pl.col("last_key") < horizon_key)
            .get_column("item")
        )
        if old.is_empty():
            return self, none
        gone = old.implode()
        others = ~pl.col("item").is_in(gone)
        kept = CompactItems(
            self.main.filter(others),
            self.extra.filter(others),
            self.routes,
            self.facilities,
            self.exact.filter(others),
            self.extra_exact.filter(others),
        )
        return kept, old.to_numpy().astype(np.uint64)


def _appended(base: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    out = pl.concat([base, new], how="vertical") if new.height else base
    return out.rechunk() if out.n_chunks() > _MAX_CHUNKS else out


@functools.cache
def _libc() -> Any:
    """glibc, with large blocks always mmapped (None on another C library)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        # M_MMAP_THRESHOLD = -3: a fixed 1 MiB (glibc raises it up to 32 MiB after freeing
        # large blocks, after which big numpy temporaries stay on the heap as holes).
        libc.mallopt(-3, 1 << 20)
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (numpy temporaries of a restore or
    a set leave holes that glibc keeps: ~30 B per item after a restore). polars has its
    own allocator (jemalloc, which returns memory by itself after its decay time)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
