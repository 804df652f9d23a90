"""Serialising tidy KPI frames: table, CSV, JSON, Parquet, Arrow IPC.

Timestamps are written as ISO 8601 with their UTC offset; numbers stay numbers and
missing values are null, so a JSON answer reads back into the same frame.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Final, Literal

import orjson
import polars as pl

Format = Literal["table", "csv", "json", "parquet", "arrow"]
FORMATS: Final = ("table", "csv", "json", "parquet", "arrow")


class TimestampError(ValueError):
    """A timestamp that cannot be used: unparseable or without a UTC offset."""


def parse_timestamp(text: str, name: str = "timestamp") -> dt.datetime:
    """An ISO 8601 timestamp that must carry a UTC offset (never guessed), as UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError as exc:
        raise TimestampError(f"{name}: {text!r} is not an ISO 8601 timestamp") from exc
    if value.tzinfo is None:
        raise TimestampError(
            f"{name}: {text!r} has no UTC offset; add one, e.g. {text}+08:00 or {text}Z"
        )
    return value.astimezone(dt.UTC)


def _iso(col: str) -> pl.Expr:
    return pl.col(col).dt.strftime("%Y-%m-%dT%H:%M:%S%.f%:z").str.replace(r"\.000000", "")


def with_iso_timestamps(df: pl.DataFrame) -> pl.DataFrame:
    """Datetime columns as ISO 8601 strings with offset (for text formats)."""
    cols = [c for c, t in df.schema.items() if isinstance(t, pl.Datetime)]
    return df.with_columns(_iso(c) for c in cols) if cols else df


def to_records(df: pl.DataFrame) -> list[dict[str, object]]:
    """Rows as JSON-ready dicts (NaN becomes null: JSON has no NaN)."""
    floats = [c for c, t in df.schema.items() if t.is_float()]
    clean = df.with_columns(pl.col(floats).fill_nan(None)) if floats else df
    return with_iso_timestamps(clean).to_dicts()


def to_json(df: pl.DataFrame) -> bytes:
    """A JSON array of objects."""
    return orjson.dumps(to_records(df))


def to_table(df: pl.DataFrame) -> str:
    """The whole frame as a text table for a terminal: every row and column, no shape line."""
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        return str(df)


def to_bytes(df: pl.DataFrame, fmt: Format) -> bytes:
    """The frame in one of the machine formats (csv, json, parquet, arrow)."""
    if fmt == "json":
        return to_json(df)
    buf = io.BytesIO()
    if fmt == "csv":
        with_iso_timestamps(df).write_csv(buf)
    elif fmt == "parquet":
        df.write_parquet(buf)
    elif fmt == "arrow":
        df.write_ipc_stream(buf)
    else:
        raise ValueError(f"no byte format {fmt!r}")
    return buf.getvalue()
