"""Row validation: raw columns (strings or typed) in, pinned-schema rows and rejects out.

Validation is a set of polars expressions, so the same code checks a 10 M-row
Parquet scan lazily and a handful of lines appended to a JSONL file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from kpi.contract import (
    COMPLAINT_CATEGORIES,
    EVENT_REQUIRED_ON,
    EVENT_TYPES,
    ID_COLUMN,
    REQUIRED,
    SCHEMAS,
    TIMESTAMPS,
    UPU_ALIASES,
    UTC,
    Kind,
    RejectReason,
)

ROW: Final = "_row"
SOURCE: Final = "_source"
REASON: Final = "_reject_reason"
FIELD: Final = "_reject_field"

#: Schema of the rejects file: where, which row, why, and the raw row for inspection.
REJECT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "source": pl.String(),
    "row": pl.Int64(),
    "reason": pl.String(),
    "field": pl.String(),
    "raw": pl.String(),
}

# ISO 8601 date-time with an explicit offset (or Z); a space instead of T is tolerated.
_TS_WITH_OFFSET: Final = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)$"
)
_TS_NO_OFFSET: Final = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?$"
_TRUE: Final = ("true", "1", "yes", "y", "t")
_FALSE: Final = ("false", "0", "no", "n", "f")

_EVENT_NAMES: Final = {e: e for e in EVENT_TYPES} | {k.lower(): v for k, v in UPU_ALIASES.items()}


@dataclass(frozen=True)
class Check:
    """One validation rule: rows where ``failed`` is true are rejected for ``reason``."""

    failed: pl.Expr
    reason: RejectReason
    field: str


def _blank(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | (c.cast(pl.String).str.strip_chars() == "")


def _parse_ts(col: str, dtype: pl.DataType) -> tuple[pl.Expr, list[Check]]:
    """Parsed UTC timestamp expression and the checks that reject bad values."""
    c = pl.col(col)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return pl.lit(None, UTC), [
                Check(c.is_not_null(), RejectReason.TIMESTAMP_WITHOUT_OFFSET, col)
            ]
        return c.dt.convert_time_zone("UTC").cast(UTC), []
    if dtype == pl.Null:
        return pl.lit(None, UTC), []
    if dtype != pl.String:
        return pl.lit(None, UTC), [Check(c.is_not_null(), RejectReason.BAD_TYPE, col)]
    s = c.str.strip_chars()
    normal = s.str.replace(r"[zZ]$", "+00:00").str.replace(" ", "T")
    parsed = normal.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
    present = s.is_not_null() & (s != "")
    has_offset = s.str.contains(_TS_WITH_OFFSET)
    no_offset = s.str.contains(_TS_NO_OFFSET)
    checks = [
        Check(present & no_offset, RejectReason.TIMESTAMP_WITHOUT_OFFSET, col),
        Check(present & (~has_offset | parsed.is_null()), RejectReason.BAD_TIMESTAMP, col),
    ]
    return pl.when(present).then(parsed).otherwise(None).cast(UTC), checks


def _as_string(col: str, dtype: pl.DataType) -> pl.Expr:
    c = pl.col(col)
    if dtype == pl.String:
        s = c.str.strip_chars()
        return pl.when(s == "").then(None).otherwise(s)
    return c.cast(pl.String)


def _parse_bool(col: str, dtype: pl.DataType) -> tuple[pl.Expr, list[Check]]:
    c = pl.col(col)
    if dtype == pl.Boolean:
        return c, []
    if dtype == pl.Null:
        return pl.lit(None, pl.Boolean), []
    s = c.cast(pl.String).str.strip_chars().str.to_lowercase()
    parsed = pl.when(s.is_in(_TRUE)).then(True).when(s.is_in(_FALSE)).then(False)
    present = s.is_not_null() & (s != "")
    return parsed.otherwise(None), [Check(present & parsed.is_null(), RejectReason.BAD_TYPE, col)]


def _prepare(kind: Kind, schema: pl.Schema) -> tuple[dict[str, pl.Expr], list[Check]]:
    """Typed column expressions and checks for a raw frame with ``schema``."""
    target = SCHEMAS[kind]
    exprs: dict[str, pl.Expr] = {}
    checks: list[Check] = [
        Check(_blank(col), RejectReason.MISSING_FIELD, col)
        if col in schema
        else Check(pl.lit(True), RejectReason.MISSING_FIELD, col)
        for col in REQUIRED[kind]
    ]
    for col, dtype in target.items():
        raw_dtype = schema.get(col, pl.Null())
        if col not in schema:
            exprs[col] = pl.lit(None, dtype)
        elif col in TIMESTAMPS[kind]:
            exprs[col], more = _parse_ts(col, raw_dtype)
            checks += more
        elif dtype == pl.Boolean:
            exprs[col], more = _parse_bool(col, raw_dtype)
            checks += more
        elif isinstance(dtype, pl.Enum):
            text = _as_string(col, raw_dtype).str.to_lowercase()
            if col == "event":
                text = text.replace_strict(_EVENT_NAMES, default=None)
                reason = RejectReason.UNKNOWN_EVENT
                allowed: tuple[str, ...] = EVENT_TYPES
            else:
                reason = RejectReason.UNKNOWN_CATEGORY
                allowed = COMPLAINT_CATEGORIES
            known = text.is_in(list(allowed))
            exprs[col] = pl.when(known).then(text).cast(dtype)
            checks.append(Check(~_blank(col) & ~known.fill_null(False), reason, col))
        else:
            exprs[col] = _as_string(col, raw_dtype)
    if kind is Kind.EVENTS:
        event = exprs["event"]
        for ev, cols in EVENT_REQUIRED_ON.items():
            checks += [
                Check((event == ev) & exprs[c].is_null(), RejectReason.MISSING_FIELD, c)
                for c in cols
            ]
    return exprs, checks


def _first_failure(checks: list[Check]) -> tuple[pl.Expr, pl.Expr]:
    """The first failing check's reason and field per row (null when the row is good)."""
    reason: pl.Expr = pl.lit(None, pl.String)
    field: pl.Expr = pl.lit(None, pl.String)
    for chk in reversed(checks):
        failed = chk.failed.fill_null(False)
        reason = pl.when(failed).then(pl.lit(chk.reason.value)).otherwise(reason)
        field = pl.when(failed).then(pl.lit(chk.field)).otherwise(field)
    return reason, field


def validate_lazy(raw: pl.LazyFrame, kind: Kind) -> pl.LazyFrame:
    """Typed frame with every schema column plus ``reason``/``field`` (null for good rows).

    ``raw`` may hold strings (CSV, JSONL) or typed columns (Parquet); it must carry
    ``_row`` (row number within its source) and ``_source``. Unknown extra columns
    are ignored.
    """
    schema = raw.collect_schema()
    exprs, checks = _prepare(kind, schema)
    reason, field = _first_failure(checks)
    return raw.select(
        pl.col(SOURCE),
        pl.col(ROW),
        *(e.alias(c) for c, e in exprs.items()),
        reason.alias(REASON),
        field.alias(FIELD),
    )


def good_rows(validated: pl.LazyFrame, kind: Kind) -> pl.LazyFrame:
    """Rows that passed every check, in the pinned schema (plus ``_source``/``_row``)."""
    return validated.filter(pl.col(REASON).is_null()).select(SOURCE, ROW, *SCHEMAS[kind].keys())


def rejected_rows(validated: pl.LazyFrame, raw: pl.LazyFrame) -> pl.LazyFrame:
    """Rejects in ``REJECT_SCHEMA``: source, row, reason, field and the raw row as JSON."""
    raw_cols = [c for c in raw.collect_schema().names() if c not in (SOURCE, ROW)]
    raw_json = (
        pl.struct([pl.col(c).cast(pl.String) for c in raw_cols]).struct.json_encode()
        if raw_cols
        else pl.lit("{}")
    )
    bad = validated.filter(pl.col(REASON).is_not_null()).select(SOURCE, ROW, REASON, FIELD)
    return bad.join(
        raw.select(SOURCE, ROW, raw_json.alias("raw")), on=[SOURCE, ROW], how="left"
    ).select(
        pl.col(SOURCE).alias("source"),
        pl.col(ROW).cast(pl.Int64).alias("row"),
        pl.col(REASON).alias("reason"),
        pl.col(FIELD).alias("field"),
        pl.col("raw"),
    )


def dedupe(good: pl.LazyFrame, kind: Kind) -> pl.LazyFrame:
    """Events: one row per ``event_id`` (first read wins). Complaints keep every version."""
    if kind is not Kind.EVENTS:
        return good
    return good.unique(subset=ID_COLUMN[kind], keep="first", maintain_order=True)
