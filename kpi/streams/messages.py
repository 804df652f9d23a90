"""Stream messages (JSON objects in the data contract) to raw frames, and rows back to messages.

A poll of a partitioned log returns thousands of message values at once. They are
parsed as one NDJSON buffer by polars (every contract field read as text, the way the
JSONL reader of ``kpi.sources.files`` reads a file), then validated by the same
expressions as files: a message is a row, and its reject reasons are the files' ones.
Messages that cannot be rows are rejected before that, each with its own reason:

- a tombstone (null value) or an empty value: ``malformed_row``;
- a value over ``MAX_MESSAGE_BYTES``: ``line_too_long`` (a scan record is small);
- not JSON, or JSON that is not an object: ``malformed_row``.

The bulk parse either takes the whole buffer or fails; when it fails the poll is parsed
again message by message (orjson), so one bad message costs its poll the fast path but
never the good messages around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import orjson
import polars as pl

from kpi.contract import ID_COLUMN, SCHEMAS, TIMESTAMPS, Kind, RejectReason
from kpi.sources.files import MAX_LINE_BYTES, RawBatch, reject
from kpi.sources.validate import ROW, SOURCE

#: A message over this size is rejected unparsed, as an over-long line of a file is.
MAX_MESSAGE_BYTES: Final = MAX_LINE_BYTES
_NEWLINE: Final = ord("\n")
#: What a key is taken from when publishing: events are keyed by item, complaints by id.
KEY_COLUMN: Final = {Kind.EVENTS: "item_id", Kind.COMPLAINTS: ID_COLUMN[Kind.COMPLAINTS]}


@dataclass(frozen=True)
class Messages:
    """Values of a poll with where each came from (``source`` and ``row`` of its rejects)."""

    values: Sequence[bytes | None]
    #: ``source`` of each message, e.g. ``kafka:postal.events/3``.
    sources: Sequence[str]
    #: Position within its source (the Kafka offset).
    rows: Sequence[int]


def source_name(topic: str, partition: int) -> str:
    """The ``source`` of a partition's messages in rejects and positions."""
    return f"kafka:{topic}/{partition}"


def _text_schema(kind: Kind) -> dict[str, pl.DataType]:
    return dict.fromkeys(SCHEMAS[kind], pl.String())


def _scalar(value: object) -> str | None:
    """A JSON value as the text a file's field would hold (objects and lists stay JSON)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _with_positions(frame: pl.DataFrame, sources: list[str], rows: list[int]) -> pl.LazyFrame:
    return frame.with_columns(
        pl.Series(SOURCE, sources, dtype=pl.String),
        pl.Series(ROW, rows, dtype=pl.Int64),
    ).lazy()


def _one_by_one(
    values: list[bytes], sources: list[str], rows: list[int], kind: Kind
) -> tuple[pl.LazyFrame, list[dict[str, object]]]:
    """The slow path: each value parsed on its own; bad ones become rejects."""
    schema = _text_schema(kind)
    records: dict[str, list[str | None]] = {c: [] for c in schema}
    kept_sources: list[str] = []
    kept_rows: list[int] = []
    rejects: list[dict[str, object]] = []
    for value, source, row in zip(values, sources, rows, strict=True):
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            rejects.append(reject(source, row, RejectReason.MALFORMED_ROW, f"invalid JSON: {exc}"))
            continue
        if not isinstance(obj, dict):
            rejects.append(reject(source, row, RejectReason.MALFORMED_ROW, "not a JSON object"))
            continue
        for col, column in records.items():
            column.append(_scalar(obj.get(col)))
        kept_sources.append(source)
        kept_rows.append(row)
    frame = pl.DataFrame(records, schema=schema)
    return _with_positions(frame, kept_sources, kept_rows), rejects


def _one_line_each(buffer: bytes, count: int) -> bool:
    """Whether ``count`` values joined by line breaks are ``count`` lines, none too long.

    A line break inside a value would make two lines of one message (an empty or blank
    value is a line polars skips: the heights differ later and the slow path rejects it).
    One pass over the buffer finds the breaks, and so every value's length.
    """
    breaks = np.flatnonzero(np.frombuffer(buffer, dtype=np.uint8) == _NEWLINE)
    if len(breaks) != count - 1:
        return False
    bounds = np.concatenate(([-1], breaks, [len(buffer)]))
    return int(np.diff(bounds).max()) - 1 <= MAX_MESSAGE_BYTES


def _all_at_once(messages: Messages, kind: Kind) -> RawBatch | None:
    """The usual poll (no tombstone, none too long, none empty, all JSON objects) parsed
    with no Python work per message; None when any message needs a look of its own."""
    values = messages.values
    if not values:
        return None
    try:
        buffer = b"\n".join(values)  # type: ignore[arg-type]  # a tombstone raises TypeError
    except TypeError:
        return None
    if not _one_line_each(buffer, len(values)):
        return None
    try:
        frame = pl.read_ndjson(buffer, schema=_text_schema(kind))
    except Exception:  # polars raises ComputeError and others for a bad line
        return None
    if frame.height != len(values):
        return None
    return RawBatch(_with_positions(frame, list(messages.sources), list(messages.rows)), [])


def parse_messages(messages: Messages, kind: Kind) -> RawBatch:
    """Raw text rows (with ``_source``/``_row``) of a poll's values, and the messages rejected."""
    fast = _all_at_once(messages, kind)
    if fast is not None:
        return fast
    good: list[bytes] = []
    sources: list[str] = []
    rows: list[int] = []
    rejects: list[dict[str, object]] = []
    for value, source, row in zip(messages.values, messages.sources, messages.rows, strict=True):
        if value is None:
            rejects.append(reject(source, row, RejectReason.MALFORMED_ROW, "tombstone (no value)"))
        elif len(value) > MAX_MESSAGE_BYTES:
            rejects.append(reject(source, row, RejectReason.LINE_TOO_LONG, f"{len(value)} bytes"))
        elif not value.strip():
            rejects.append(reject(source, row, RejectReason.MALFORMED_ROW, "empty message"))
        else:
            good.append(value)
            sources.append(source)
            rows.append(row)
    if not good:
        return RawBatch(_with_positions(pl.DataFrame(schema=_text_schema(kind)), [], []), rejects)
    buffer = b"\n".join(good)
    # A value with a line break of its own would read as two NDJSON lines.
    if buffer.count(b"\n") == len(good) - 1:
        try:
            frame = pl.read_ndjson(buffer, schema=_text_schema(kind))
        except Exception:  # polars raises ComputeError and others for a bad line
            pass
        else:
            if frame.height == len(good):
                return RawBatch(_with_positions(frame, sources, rows), rejects)
    frame_lazy, more = _one_by_one(good, sources, rows, kind)
    return RawBatch(frame_lazy, rejects + more)


# --- rows to messages (publishing) ------------------------------------------------------


def _as_text(frame: pl.LazyFrame, kind: Kind) -> pl.LazyFrame:
    """Contract columns as JSON-ready values: typed timestamps become ISO 8601 in UTC."""
    schema = frame.collect_schema()
    exprs: list[pl.Expr] = []
    for col in SCHEMAS[kind]:
        if col not in schema:
            continue
        dtype = schema[col]
        if col in TIMESTAMPS[kind] and isinstance(dtype, pl.Datetime) and dtype.time_zone:
            exprs.append(
                pl.col(col).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            )
        elif dtype in (pl.String, pl.Boolean) or dtype.is_numeric():
            exprs.append(pl.col(col))
        else:
            # Enums, naive timestamps (a reject at the other end, as in a file): their text.
            exprs.append(pl.col(col).cast(pl.String))
    return frame.select(exprs)


def to_messages(frame: pl.LazyFrame, kind: Kind) -> tuple[list[bytes | None], list[bytes]]:
    """(keys, values) of raw rows: a JSON object per row in the contract's fields."""
    text = _as_text(frame, kind)
    key_col = KEY_COLUMN[kind]
    names = text.collect_schema().names()
    key = (
        pl.col(key_col).cast(pl.String).str.strip_chars()
        if key_col in names
        else pl.lit(None, pl.String)
    )
    out = text.select(
        key.alias("key"), pl.struct(names).struct.json_encode().alias("value")
    ).collect()
    keys = [None if k is None else k.encode() for k in out.get_column("key").to_list()]
    values = [v.encode() for v in out.get_column("value").to_list()]
    return keys, values
