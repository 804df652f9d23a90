"""Reading one source file (Parquet, CSV, JSONL, JSONL.gz) into a raw frame.

Text formats are parsed into string columns and validated afterwards; a line that
cannot be parsed becomes a reject, never an exception, so one bad line does not
hide the good lines around it. Parquet keeps its types for speed.
"""

from __future__ import annotations

import csv
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import orjson
import polars as pl

from kpi.contract import REQUIRED, SCHEMAS, RejectReason
from kpi.sources.validate import REJECT_SCHEMA, ROW, SOURCE

log = logging.getLogger(__name__)

Format = Literal["parquet", "csv", "jsonl", "jsonl.gz"]
#: Every column name of the contract: a CSV line made of these only is a header.
_COLUMNS: Final = frozenset(c for schema in SCHEMAS.values() for c in schema)
#: A single line longer than this is rejected unparsed (it is not a scan record).
MAX_LINE_BYTES: Final = 1 << 20


def file_format(path: Path) -> Format | None:
    """The format a file name announces, or None for files the reader ignores."""
    name = path.name.lower()
    if name.endswith(".jsonl.gz"):
        return "jsonl.gz"
    for suffix in ("parquet", "csv", "jsonl"):
        if name.endswith("." + suffix):
            return suffix
    return None


@dataclass
class RawBatch:
    """Raw rows of one source (with ``_source``/``_row``) and the rejects found while parsing."""

    frame: pl.LazyFrame
    rejects: list[dict[str, object]] = field(default_factory=list)
    #: CSV: the header in force after the last line (it may change mid-file).
    header: list[str] | None = None

    def rejects_frame(self) -> pl.DataFrame:
        """Parsing rejects in the rejects-file schema."""
        return pl.DataFrame(self.rejects, schema=REJECT_SCHEMA)


def reject(source: str, row: int | None, reason: RejectReason, detail: str) -> dict[str, object]:
    """One reject record (``field`` carries the detail for file- and line-level rejects)."""
    return {"source": source, "row": row, "reason": reason.value, "field": None, "raw": detail}


def _empty(source: str) -> pl.LazyFrame:
    return pl.LazyFrame({SOURCE: [], ROW: []}, schema={SOURCE: pl.String, ROW: pl.Int64})


def _records_frame(
    records: list[dict[str, str | None]], rows: list[int], source: str
) -> pl.LazyFrame:
    if not records:
        return _empty(source)
    cols: list[str] = []
    for rec in records:
        cols += [k for k in rec if k not in cols]
    data: dict[str, list[str | None]] = {c: [r.get(c) for r in records] for c in cols}
    # The row numbers come first: a batch of ``{}`` lines has rows but no column.
    frame = pl.DataFrame({ROW: rows}, schema={ROW: pl.Int64}).with_columns(
        pl.Series(c, data[c], dtype=pl.String) for c in cols
    )
    return frame.with_columns(pl.lit(source).alias(SOURCE)).lazy()


def _json_scalar(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    # Nested objects and lists are no scalar field: keep them visibly wrong.
    return orjson.dumps(value).decode()


def parse_jsonl(data: bytes, source: str, first_row: int = 1) -> RawBatch:
    """Parse JSON lines; each unparseable or non-object line is rejected on its own."""
    records: list[dict[str, str | None]] = []
    rows: list[int] = []
    rejects: list[dict[str, object]] = []
    for i, line in enumerate(data.split(b"\n"), start=first_row):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            rejects.append(reject(source, i, RejectReason.LINE_TOO_LONG, f"{len(line)} bytes"))
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            rejects.append(reject(source, i, RejectReason.MALFORMED_ROW, f"invalid JSON: {exc}"))
            continue
        if not isinstance(obj, dict):
            rejects.append(reject(source, i, RejectReason.MALFORMED_ROW, "not a JSON object"))
            continue
        records.append({str(k): _json_scalar(v) for k, v in obj.items()})
        rows.append(i)
    return RawBatch(_records_frame(records, rows, source), rejects)


def is_header(values: list[str]) -> bool:
    """Whether a CSV line is a header: distinct contract column names, a kind's required ones among them."""
    names = set(values)
    return (
        len(names) == len(values)
        and names <= _COLUMNS
        and any(set(required) <= names for required in REQUIRED.values())
    )


def parse_csv(
    data: bytes, source: str, header: list[str] | None = None, first_row: int = 1
) -> RawBatch:
    """Parse CSV text (first line is the header unless ``header`` is given).

    A later line that is a header (``is_header``: the contract's columns in any order,
    as when files with different headers are concatenated) is the header from there
    on; a change of names or order is logged once, where it happens.
    """
    rejects: list[dict[str, object]] = []
    if b"\x00" in data:
        return RawBatch(
            _empty(source),
            [reject(source, None, RejectReason.UNREADABLE_FILE, "binary content (NUL bytes)")],
        )
    lines = data.split(b"\n")
    if header is None:
        if not lines or not lines[0].strip():
            return RawBatch(_empty(source), [])
        header = next(csv.reader([lines[0].decode("utf-8", errors="replace").rstrip("\r")]))
        lines = lines[1:]
    records: list[dict[str, str | None]] = []
    rows: list[int] = []
    for i, line in enumerate(lines, start=first_row):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            rejects.append(reject(source, i, RejectReason.LINE_TOO_LONG, f"{len(line)} bytes"))
            continue
        try:
            text = line.decode("utf-8").rstrip("\r")
            values = next(csv.reader([text], strict=True))
        except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
            rejects.append(
                reject(source, i, RejectReason.MALFORMED_ROW, f"unparseable CSV line: {exc}")
            )
            continue
        if is_header([v.strip() for v in values]):
            new = [v.strip() for v in values]
            if new != header:
                log.warning(
                    "%s: line %d: the CSV header changes from %s to %s",
                    source,
                    i,
                    ",".join(header),
                    ",".join(new),
                )
            header = new
            continue
        if len(values) != len(header):
            rejects.append(
                reject(
                    source,
                    i,
                    RejectReason.MALFORMED_ROW,
                    f"{len(values)} fields, header has {len(header)}",
                )
            )
            continue
        records.append({h: (v if v != "" else None) for h, v in zip(header, values, strict=True)})
        rows.append(i)
    return RawBatch(_records_frame(records, rows, source), rejects, header)


def _gunzip(data: bytes) -> tuple[bytes, str | None]:
    """Decompress what can be decompressed; report a truncated or corrupt stream."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data)
    except zlib.error as exc:
        return b"", f"corrupt gzip: {exc}"
    if not d.eof:
        # Drop the partial last line of a truncated stream; it is reported instead.
        cut = out.rfind(b"\n")
        return out[: cut + 1], "truncated gzip stream"
    return out, None


def read_parquet(path: Path, source: str) -> RawBatch:
    """Lazily scan a Parquet file; a truncated or non-Parquet file is one reject."""
    try:
        pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several error types for corrupt files
        return RawBatch(
            _empty(source),
            [
                reject(
                    source,
                    None,
                    RejectReason.UNREADABLE_FILE,
                    f"not a readable Parquet file: {exc}",
                )
            ],
        )
    frame = (
        pl.scan_parquet(path)
        .with_row_index(ROW, offset=1)
        .with_columns(pl.col(ROW).cast(pl.Int64), pl.lit(source).alias(SOURCE))
    )
    return RawBatch(frame)


def read_file(path: Path, source: str | None = None) -> RawBatch:
    """Read one file of any supported format into a raw batch."""
    src = source or str(path)
    fmt = file_format(path)
    try:
        if fmt == "parquet":
            return read_parquet(path, src)
        data = path.read_bytes()
    except OSError as exc:
        return RawBatch(_empty(src), [reject(src, None, RejectReason.UNREADABLE_FILE, str(exc))])
    if fmt == "csv":
        return parse_csv(data, src)
    if fmt == "jsonl.gz":
        data, problem = _gunzip(data)
        batch = parse_jsonl(data, src)
        if problem:
            batch.rejects.append(reject(src, None, RejectReason.UNREADABLE_FILE, problem))
        return batch
    if fmt == "jsonl":
        return parse_jsonl(data, src)
    return RawBatch(
        _empty(src), [reject(src, None, RejectReason.UNREADABLE_FILE, "unsupported file type")]
    )
