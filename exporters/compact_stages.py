"""The stage history of the items in the state, encoded (20 bytes per stage scan).

``kpi.kpis.stage_increments`` reads and writes ``HISTORY_SCHEMA`` rows (item id, time
key, facility name); the exporter holds them as ``(item hash UInt64, key Int64,
facility UInt32 code)`` and decodes only the rows of the items a set touches, as
``exporters.compact`` does for the item state. The history itself is the same (one row
per arrival, departure and delivery, the key exact to the microsecond; acceptances are
left out, the item state holds the first one's time: ``exporters.books_stages``), so
the histograms' answers are those of the plain history, whatever the order the scans
arrive in: the order independence needs every scan of an item (a set of departures may
come before their arrivals), so nothing is summarised away, only encoded. Strings cost
16 B each in polars (views), a hash 8 B and a code 4 B: ~20 B per scan instead of ~40.

``CompactStages`` is immutable; the facility dictionary only grows (old codes stay valid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import polars as pl

from exporters.compact import item_key, key_hashes
from exporters.seen import Hashes
from kpi.events import RANK_BITS, STAGE
from kpi.kpis.stage_increments import HISTORY_SCHEMA

#: Rechunk the table once its appends made this many chunks.
_MAX_CHUNKS: Final = 16
_ACCEPTED: Final = STAGE["accepted"]

ROWS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item": pl.UInt64(),
    "key": pl.Int64(),
    "facility": pl.UInt32(),
}
NAMES_SCHEMA: Final[dict[str, pl.DataType]] = {"facility": pl.String()}


@dataclass(frozen=True)
class CompactStages:
    """Encoded stage scans (``rows``) and the facility names their codes index (``names``)."""

    rows: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ROWS_SCHEMA))
    names: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=NAMES_SCHEMA))

    @property
    def height(self) -> int:
        """Number of stage scans held."""
        return self.rows.height

    @property
    def nbytes(self) -> int:
        """Bytes held by the scans and the dictionary."""
        return int(self.rows.estimated_size() + self.names.estimated_size())

    def history(self, hashes: pl.Series) -> pl.DataFrame:
        """The ``HISTORY_SCHEMA`` rows of the items among ``hashes`` (keyed by ``item_key``)."""
        wanted = hashes.cast(pl.UInt64).unique().implode()
        return self._decode(self.rows.filter(pl.col("item").is_in(wanted)))

    def decode(self) -> pl.DataFrame:
        """Every scan as ``HISTORY_SCHEMA`` rows (keyed by ``item_key``)."""
        return self._decode(self.rows)

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
        history with its dictionary grown by their new facilities (nothing stored yet)."""
        if history.is_empty():
            return self, pl.DataFrame(schema=ROWS_SCHEMA)
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
        return CompactStages(self.rows, names), coded

    def add_coded(self, coded: pl.DataFrame) -> CompactStages:
        """With ``coded`` rows (``ROWS_SCHEMA``, codes of this dictionary) appended, but
        acceptances."""
        new = coded.filter(pl.col("key") % RANK_BITS != _ACCEPTED)
        if new.is_empty():
            return self
        rows = pl.concat([self.rows, new], how="vertical")
        if rows.n_chunks() > _MAX_CHUNKS:
            rows = rows.rechunk()
        return CompactStages(rows, self.names)

    def coded_rows(self, hashes: pl.Series) -> pl.DataFrame:
        """The ``ROWS_SCHEMA`` rows of the items among ``hashes``."""
        wanted = hashes.cast(pl.UInt64).unique().implode()
        return self.rows.filter(pl.col("item").is_in(wanted))

    def retire(self, hashes: Hashes) -> CompactStages:
        """Without the scans of the items ``hashes`` (retired from the state)."""
        if not len(hashes):
            return self
        gone = pl.Series(np.asarray(hashes, dtype=np.uint64), dtype=pl.UInt64).implode()
        return CompactStages(self.rows.filter(~pl.col("item").is_in(gone)), self.names)
