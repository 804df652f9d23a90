"""The data contract: column names, types, vocabularies and identifier checks.

Everything that reads or writes a data folder takes its names from here, so the
reader, the generator, the lifecycle and the docs cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import polars as pl

# The event vocabulary comes from the per-event rules table (kpi/events.py); the enum's
# order is the lifecycle order, which breaks ties between events at the same instant.
from kpi import events

EVENT_TYPES: Final = events.EVENT_TYPES
#: UPU EMSEVT codes accepted as aliases of our event types (matched case-insensitively).
UPU_ALIASES: Final = events.UPU_ALIASES
EventType: Final = events.EVENT_ENUM

COMPLAINT_CATEGORIES: Final = (
    "delay",
    "loss",
    "damage",
    "misdelivery",
    "refused_acceptance",
    "staff_conduct",
    "other",
)
ComplaintCategory: Final = pl.Enum(COMPLAINT_CATEGORIES)

FACILITY_TYPES: Final = ("collection", "processing", "delivery")
FacilityType: Final = pl.Enum(FACILITY_TYPES)

UTC: Final = pl.Datetime("us", "UTC")

#: Validated tracking events, one row per distinct scan.
EVENT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "event_id": pl.String(),
    "item_id": pl.String(),
    "event": EventType,
    "ts": UTC,
    "facility": pl.String(),
    "product": pl.String(),
    "origin": pl.String(),
    "destination": pl.String(),
    "promised_by": UTC,
    "reason": pl.String(),
}
EVENT_REQUIRED: Final = ("event_id", "item_id", "event", "ts", "facility")
#: Fields required only on some event types.
#: Fields an event type requires besides EVENT_REQUIRED.
EVENT_REQUIRED_ON: Final = events.EVENT_REQUIRED_ON
EVENT_TIMESTAMPS: Final = ("ts", "promised_by")

#: Validated complaint records (all versions; the latest wins, see ``latest_complaints``).
COMPLAINT_SCHEMA: Final[dict[str, pl.DataType]] = {
    "complaint_id": pl.String(),
    "opened_at": UTC,
    "category": ComplaintCategory,
    "item_id": pl.String(),
    "region": pl.String(),
    "product": pl.String(),
    "valid": pl.Boolean(),
    "resolved_at": UTC,
    "updated_at": UTC,
}
COMPLAINT_REQUIRED: Final = ("complaint_id", "opened_at", "category", "region")
COMPLAINT_TIMESTAMPS: Final = ("opened_at", "resolved_at", "updated_at")

FACILITY_SCHEMA: Final[dict[str, pl.DataType]] = {
    "facility": pl.String(),
    "name": pl.String(),
    "type": FacilityType,
    "region": pl.String(),
    "backlog_threshold": pl.Int64(),
}

EVENT_FILE_SUFFIXES: Final = (".parquet", ".csv", ".jsonl", ".jsonl.gz")


class Kind(StrEnum):
    """The two record streams of a data folder; each lives in its own sub-folder."""

    EVENTS = "events"
    COMPLAINTS = "complaints"


SCHEMAS: Final[dict[Kind, dict[str, pl.DataType]]] = {
    Kind.EVENTS: EVENT_SCHEMA,
    Kind.COMPLAINTS: COMPLAINT_SCHEMA,
}
REQUIRED: Final[dict[Kind, tuple[str, ...]]] = {
    Kind.EVENTS: EVENT_REQUIRED,
    Kind.COMPLAINTS: COMPLAINT_REQUIRED,
}
TIMESTAMPS: Final[dict[Kind, tuple[str, ...]]] = {
    Kind.EVENTS: EVENT_TIMESTAMPS,
    Kind.COMPLAINTS: COMPLAINT_TIMESTAMPS,
}
ID_COLUMN: Final[dict[Kind, str]] = {Kind.EVENTS: "event_id", Kind.COMPLAINTS: "complaint_id"}


class RejectReason(StrEnum):
    """Why a row (or a whole file) was not accepted. Values are metric label values."""

    MISSING_FIELD = "missing_field"
    UNKNOWN_EVENT = "unknown_event"
    UNKNOWN_CATEGORY = "unknown_category"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_WITHOUT_OFFSET = "timestamp_without_offset"
    BAD_TYPE = "bad_type"
    MALFORMED_ROW = "malformed_row"
    UNREADABLE_FILE = "unreadable_file"
    LINE_TOO_LONG = "line_too_long"
    #: A repeated event_id: the same scan again; counted once, the repeat is dropped.
    DUPLICATE = "duplicate"
    #: (exporter) An event of an item that finished and left the state after the
    #: retention: it could be counted again, so it is dropped.
    RETIRED_ITEM = "retired_item"
    #: (exporter) An event older than the dedup window behind the newest event read:
    #: its id may have been forgotten, so it could be counted twice; it is dropped.
    TOO_OLD = "too_old"
    #: An event more than the allowed margin (``--max-future``, default 1 h) ahead of
    #: the reference clock (the wall clock, or the report's as-of): a scanner with a
    #: wrong clock. Accepting it would move the event-time clock to the future.
    FUTURE_TS = "future_ts"


# --- UPU S10 item identifiers ------------------------------------------------

S10_PATTERN: Final = r"^[A-Z]{2}[0-9]{9}[A-Z]{2}$"
_S10_WEIGHTS: Final = (8, 6, 4, 2, 3, 5, 9, 7)


def s10_check_digit(serial: str) -> int:
    """UPU S10 check digit of an 8-digit serial: 11 - (weighted sum mod 11), 10->0, 11->5."""
    total = sum(int(d) * w for d, w in zip(serial, _S10_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: 0, 11: 5}.get(check, check)


def is_s10(item_id: str) -> bool:
    """Whether ``item_id`` has the shape of a UPU S10 identifier (2 letters, 9 digits, 2 letters)."""
    return (
        len(item_id) == 13
        and item_id[:2].isalpha()
        and item_id[:2].isupper()
        and item_id[2:11].isdigit()
        and item_id[11:].isalpha()
        and item_id[11:].isupper()
    )


def s10_valid(item_id: str) -> bool:
    """Whether an S10-shaped id carries the right check digit (False for other shapes)."""
    return is_s10(item_id) and s10_check_digit(item_id[2:10]) == int(item_id[10])


def s10_with_check_digit(prefix: str, serial: int, country: str) -> str:
    """Build a valid S10 id, e.g. ``("RR", 12345678, "CN") -> "RR123456785CN"``."""
    digits = f"{serial:08d}"
    return f"{prefix}{digits}{s10_check_digit(digits)}{country}"


def s10_invalid_expr(col: str = "item_id") -> pl.Expr:
    """True for S10-shaped ids with a wrong check digit; False for valid S10 and other ids."""
    c = pl.col(col)
    digits = [c.str.slice(2 + i, 1).cast(pl.Int32, strict=False) for i in range(8)]
    total = pl.sum_horizontal([d * w for d, w in zip(digits, _S10_WEIGHTS, strict=True)])
    check = 11 - total % 11
    check = pl.when(check == 10).then(0).when(check == 11).then(5).otherwise(check)
    shaped = c.str.contains(S10_PATTERN)
    return (
        pl.when(shaped)
        .then(check != c.str.slice(10, 1).cast(pl.Int32, strict=False))
        .otherwise(False)
    )


#: The 31 provincial-level regions of mainland China (ISO 3166-2:CN codes), used by
#: the generator and the default service standard (remote regions).
PROVINCES: Final = tuple(
    f"CN-{c}"
    for c in [
        "AH",
        "BJ",
        "CQ",
        "FJ",
        "GD",
        "GS",
        "GX",
        "GZ",
        "HA",
        "HB",
        "HE",
        "HI",
        "HL",
        "HN",
        "JL",
        "JS",
        "JX",
        "LN",
        "NM",
        "NX",
        "QH",
        "SC",
        "SD",
        "SH",
        "SN",
        "SX",
        "TJ",
        "XJ",
        "XZ",
        "YN",
        "ZJ",
    ]
)
