"""Text feeds with malformed rows (``--bad-rows``): CSV/JSONL copies, defects, raw lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC as UTC_TZ
from datetime import datetime
from typing import Final

import numpy as np
import polars as pl

from kpi import contract
from kpi.simulate.config import LOCAL_TZ, SimConfig


@dataclass
class Feeds:
    """Text feeds (relative path -> all-string rows) and which good rows moved into them."""

    files: dict[str, pl.DataFrame] = field(default_factory=dict)
    #: Unparseable lines to splice in: path -> [(data row they precede, line)].
    raw_lines: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    event_moved: pl.Series | None = None
    complaint_moved: pl.Series | None = None


_R = contract.RejectReason
#: Defect kind -> the reject reason the reader should give. Bad rows carry the kind in
#: their id (``BAD-<kind>-<csv|jsonl>-<n>``), except the missing-id kinds.
EVENT_DEFECTS: Final[dict[str, contract.RejectReason]] = {
    "missing_event_id": _R.MISSING_FIELD,
    "missing_item_id": _R.MISSING_FIELD,
    "missing_facility": _R.MISSING_FIELD,
    "missing_ts": _R.MISSING_FIELD,
    "accepted_without_product": _R.MISSING_FIELD,
    "accepted_without_route": _R.MISSING_FIELD,
    "failed_without_reason": _R.MISSING_FIELD,
    "unknown_event": _R.UNKNOWN_EVENT,
    "bad_timestamp": _R.BAD_TIMESTAMP,
    "timestamp_without_offset": _R.TIMESTAMP_WITHOUT_OFFSET,
    # The reader parses promised_by as a timestamp, so "soon" is a bad timestamp there.
    "bad_type": _R.BAD_TIMESTAMP,
    "malformed_row": _R.MALFORMED_ROW,
}
COMPLAINT_DEFECTS: Final[dict[str, contract.RejectReason]] = {
    "missing_complaint_id": _R.MISSING_FIELD,
    "missing_region": _R.MISSING_FIELD,
    "missing_opened_at": _R.MISSING_FIELD,
    "unknown_category": _R.UNKNOWN_CATEGORY,
    "bad_timestamp": _R.BAD_TIMESTAMP,
    "timestamp_without_offset": _R.TIMESTAMP_WITHOUT_OFFSET,
    "bad_type": _R.BAD_TYPE,
    "malformed_row": _R.MALFORMED_ROW,
}
#: Defects written as whole lines the parser cannot split into fields.
_LINE_DEFECTS: Final = ("malformed_row",)
#: Share of items whose (good) events travel in the text feeds instead of Parquet.
FEED_ITEM_SHARE: Final = 0.02
#: Share of complaint rows that travel in the text feeds.
FEED_COMPLAINT_SHARE: Final = 0.10
#: Feed items whose id is sent with a wrong S10 check digit.
WRONG_CHECK_DIGIT_ITEMS: Final = 5
EVENT_FEEDS: Final = ("events/partner-feed.csv", "events/partner-feed.jsonl")
COMPLAINT_FEEDS: Final = ("complaints/complaints-crm.csv", "complaints/complaints-crm.jsonl")
_ALIASES: Final = {
    "accepted": "EMA",
    "arrived": "EMD",
    "departed": "EMC",
    "delivery_failed": "EMH",
    "delivered": "EMI",
}
_ISO_LOCAL: Final = "%Y-%m-%dT%H:%M:%S%:z"
_ISO_Z: Final = "%Y-%m-%dT%H:%M:%SZ"


def _as_text(df: pl.DataFrame, timestamps: tuple[str, ...], jsonl: bool) -> pl.DataFrame:
    """Every column as a string the way a feed would send it (CSV: +08:00, JSONL: Z)."""
    fmt = [
        (
            pl.col(c).dt.strftime(_ISO_Z)
            if jsonl
            else pl.col(c).dt.convert_time_zone(LOCAL_TZ).dt.strftime(_ISO_LOCAL)
        )
        for c in timestamps
    ]
    rest = [pl.col(c).cast(pl.String) for c in df.columns if c not in timestamps]
    return df.select(*fmt, *rest).select(df.columns)


def _choose_variant(kind_idx: pl.Expr, variants: tuple[str, ...]) -> pl.Expr:
    """Cycle through a few spellings of the same defect."""
    expr = pl.lit(variants[0])
    for i, v in enumerate(variants[1:], start=1):
        expr = pl.when(kind_idx % len(variants) == i).then(pl.lit(v)).otherwise(expr)
    return expr


_NULL: Final = pl.lit(None, dtype=pl.String)
_KIND: Final = pl.col("kind")


def _kind_in(*names: str) -> pl.Expr:
    return _KIND.is_in(list(names))


def _bad_id(column: str, missing_kind: str, jsonl: bool) -> pl.Expr:
    """``BAD-<kind>-<csv|jsonl>-<n>``, or null for the kind that leaves the id out."""
    tag = pl.lit("jsonl" if jsonl else "csv")
    return (
        pl.when(missing_kind == _KIND)
        .then(_NULL)
        .otherwise(
            pl.concat_str(
                [pl.lit("BAD-"), _KIND, pl.lit("-"), tag, pl.lit("-"), pl.col("_n").cast(pl.String)]
            )
        )
        .alias(column)
    )


def _bad_event_ts_and_kind() -> list[pl.Expr]:
    """The ``ts`` and ``event`` columns of the defective events."""
    ts = (
        pl.when(_kind_in("missing_ts"))
        .then(_NULL)
        .when(_KIND == "bad_timestamp")
        .then(
            _choose_variant(
                pl.col("_n"),
                ("yesterday 08:15", "2027-02-30T08:00:00+08:00", "2027-01-11T25:61:00Z"),
            )
        )
        .when(_KIND == "timestamp_without_offset")
        .then(pl.col("ts").str.slice(0, 19))
        .otherwise(pl.col("ts"))
        .alias("ts")
    )
    event = (
        pl.when(_kind_in("accepted_without_product", "accepted_without_route"))
        .then(pl.lit("accepted"))
        .when(_KIND == "failed_without_reason")
        .then(pl.lit("delivery_failed"))
        .when(_KIND == "unknown_event")
        .then(_choose_variant(pl.col("_n"), ("teleported", "EMZ", "scanned")))
        .otherwise(pl.col("event"))
        .alias("event")
    )
    return [ts, event]


def _bad_event_manifest() -> list[pl.Expr]:
    """Rows that became ``accepted`` need the manifest fields, except the one left out."""

    def filled(column: str, left_out_by: str, filled_by: str, default: str) -> pl.Expr:
        return (
            pl.when(left_out_by == _KIND)
            .then(_NULL)
            .when(filled_by == _KIND)
            .then(pl.coalesce(pl.col(column), pl.lit(default)))
            .otherwise(pl.col(column))
            .alias(column)
        )

    product, route = "accepted_without_product", "accepted_without_route"
    return [
        filled("product", product, route, "standard"),
        filled("origin", route, product, "CN-BJ"),
        filled("destination", route, product, "CN-SH"),
    ]


def _nulled(column: str, kind: str) -> pl.Expr:
    return pl.when(kind == _KIND).then(_NULL).otherwise(pl.col(column)).alias(column)


def _bad_events(
    rng: np.random.Generator, events: pl.DataFrame, count: int, jsonl: bool
) -> pl.DataFrame:
    """``count`` copies of random events, each with one defect, kinds in rotation."""
    kinds = tuple(k for k in EVENT_DEFECTS if k not in _LINE_DEFECTS)
    base = _as_text(
        events.gather(rng.integers(0, events.height, count)), contract.EVENT_TIMESTAMPS, jsonl
    )
    n = pl.int_range(pl.len(), dtype=pl.Int64)
    k = pl.Series("kind", [kinds[i % len(kinds)] for i in range(count)])
    base = base.with_columns(k, n.alias("_n"))
    return base.with_columns(
        _bad_id("event_id", "missing_event_id", jsonl),
        _nulled("item_id", "missing_item_id"),
        _nulled("facility", "missing_facility"),
        *_bad_event_ts_and_kind(),
        *_bad_event_manifest(),
        pl.when(_KIND == "bad_type")
        .then(pl.lit("soon"))
        .otherwise(pl.col("promised_by"))
        .alias("promised_by"),
        _nulled("reason", "failed_without_reason"),
    ).drop("kind", "_n")


def _bad_complaints(
    rng: np.random.Generator, complaints: pl.DataFrame, count: int, jsonl: bool
) -> pl.DataFrame:
    """``count`` copies of random complaint rows, each with one defect, kinds in rotation."""
    kinds = tuple(k for k in COMPLAINT_DEFECTS if k not in _LINE_DEFECTS)
    if complaints.height:
        sample = complaints.gather(rng.integers(0, complaints.height, count))
    else:  # tiny runs may have no complaint to copy: use a plausible template
        sample = pl.DataFrame(
            {
                "complaint_id": ["CMP0000000"],
                "opened_at": [datetime(2027, 1, 12, 9, tzinfo=UTC_TZ)],
                "category": ["other"],
                "item_id": [None],
                "region": ["CN-BJ"],
                "product": ["standard"],
                "valid": [None],
                "resolved_at": [None],
                "updated_at": [datetime(2027, 1, 12, 9, tzinfo=UTC_TZ)],
            },
            schema={**contract.COMPLAINT_SCHEMA, "category": pl.String()},
        ).gather(np.zeros(count, dtype=np.int64))
    base = _as_text(sample, contract.COMPLAINT_TIMESTAMPS, jsonl)
    n = pl.int_range(pl.len(), dtype=pl.Int64)
    base = base.with_columns(
        pl.Series("kind", [kinds[i % len(kinds)] for i in range(count)]), n.alias("_n")
    )
    kind = pl.col("kind")
    null = pl.lit(None, dtype=pl.String)
    tag = pl.lit("jsonl" if jsonl else "csv")
    return base.with_columns(
        pl.when(kind == "missing_complaint_id")
        .then(null)
        .otherwise(
            pl.concat_str(
                [pl.lit("BAD-"), kind, pl.lit("-"), tag, pl.lit("-"), pl.col("_n").cast(pl.String)]
            )
        )
        .alias("complaint_id"),
        pl.when(kind == "missing_region").then(null).otherwise(pl.col("region")).alias("region"),
        pl.when(kind == "missing_opened_at")
        .then(null)
        .when(kind == "bad_timestamp")
        .then(_choose_variant(pl.col("_n"), ("last week", "2027-13-01T10:00:00+08:00")))
        .when(kind == "timestamp_without_offset")
        .then(pl.col("opened_at").str.slice(0, 19))
        .otherwise(pl.col("opened_at"))
        .alias("opened_at"),
        pl.when(kind == "unknown_category")
        .then(_choose_variant(pl.col("_n"), ("rudeness", "slow", "DELAYED")))
        .otherwise(pl.col("category"))
        .alias("category"),
        pl.when(kind == "bad_type").then(pl.lit("maybe")).otherwise(pl.col("valid")).alias("valid"),
    ).drop("kind", "_n")


def _malformed_lines(
    rng: np.random.Generator, rows: pl.DataFrame, id_col: str, jsonl: bool
) -> list[tuple[int, str]]:
    """A few lines a parser cannot read: truncated JSON, CSV rows with missing fields."""
    count = max(1, rows.height // 200)
    tag = "jsonl" if jsonl else "csv"
    lines = []
    for i in range(count):
        bad_id = f"BAD-malformed_row-{tag}-{i}"
        # A writer that died mid-line, or a CSV export that lost its trailing columns.
        text = f'{{"{id_col}": "{bad_id}", "item_id": "EE12' if jsonl else f"{bad_id},EE123,arrived"
        lines.append((int(rng.integers(0, rows.height + 1)), text))
    return lines


def _shuffle(rng: np.random.Generator, df: pl.DataFrame) -> pl.DataFrame:
    return df.gather(rng.permutation(df.height))


def _partner_spelling(good: pl.DataFrame, u: pl.Series, wrong_ids: pl.Series) -> pl.DataFrame:
    """UPU event codes for some events; a check digit off by one for a few items."""
    alias = pl.col("event").replace_strict(_ALIASES, default=None)
    return good.with_columns(
        pl.when(alias.is_not_null() & (u < 0.1))
        .then(alias.str.to_lowercase())
        .when(alias.is_not_null() & (u < 0.25))
        .then(alias)
        .otherwise(pl.col("event"))
        .alias("event"),
        # The partner's system mistypes a few ids: the check digit is off by one.
        pl.when(pl.col("item_id").is_in(wrong_ids.implode()))
        .then(
            pl.concat_str(
                pl.col("item_id").str.slice(0, 10),
                ((pl.col("item_id").str.slice(10, 1).cast(pl.Int64) + 1) % 10).cast(pl.String),
                pl.col("item_id").str.slice(11, 2),
            )
        )
        .otherwise(pl.col("item_id"))
        .alias("item_id"),
    )


def _event_feeds(
    rng: np.random.Generator, bad_rows: float, events: pl.DataFrame, ids: pl.Series, feeds: Feeds
) -> None:
    """Move a few items' events to the CSV and JSONL partner feeds, with repeats and defects."""
    n_items = len(ids)
    in_feed = rng.random(n_items) < FEED_ITEM_SHARE
    to_jsonl = rng.random(n_items) < 0.5
    csv_ids = ids.filter(pl.Series(in_feed & ~to_jsonl))
    jsonl_ids = ids.filter(pl.Series(in_feed & to_jsonl))
    wrong = rng.permutation(np.flatnonzero(in_feed))[:WRONG_CHECK_DIGIT_ITEMS]
    wrong_ids = ids.gather(pl.Series(wrong, dtype=pl.Int64))
    moved = pl.Series(np.zeros(events.height, dtype=np.bool_))
    in_parquet = events.filter(~events["item_id"].is_in(ids.filter(pl.Series(in_feed)).implode()))
    n_bad = max(2 * len(EVENT_DEFECTS), round(bad_rows * events.height))
    n_dup = max(4, round(0.01 * events.height * FEED_ITEM_SHARE))
    for path, feed_ids, jsonl in (
        (EVENT_FEEDS[0], csv_ids, False),
        (EVENT_FEEDS[1], jsonl_ids, True),
    ):
        mask = events["item_id"].is_in(feed_ids.implode())
        moved = moved | mask
        good = _as_text(events.filter(mask), contract.EVENT_TIMESTAMPS, jsonl)
        good = _partner_spelling(good, pl.Series(rng.random(good.height)), wrong_ids)
        parts = [good]
        if good.height:  # the same scan sent twice
            parts.append(good.gather(rng.integers(0, good.height, n_dup // 2)))
        if not jsonl and in_parquet.height:  # scans already in Parquet, re-sent by the partner
            resent = in_parquet.gather(rng.integers(0, in_parquet.height, n_dup // 2))
            parts.append(_as_text(resent, contract.EVENT_TIMESTAMPS, jsonl))
        half = n_bad // 2 if not jsonl else n_bad - n_bad // 2
        parts.append(_bad_events(rng, events, half, jsonl))
        feeds.files[path] = _shuffle(rng, pl.concat(parts))
        feeds.raw_lines[path] = _malformed_lines(rng, feeds.files[path], "event_id", jsonl)
    feeds.event_moved = moved


def _complaint_feeds(
    rng: np.random.Generator, bad_rows: float, complaints: pl.DataFrame, feeds: Feeds
) -> None:
    """Move some complaint rows to the CSV and JSONL CRM feeds, with defective rows."""
    n_rows = complaints.height
    c_in = rng.random(n_rows) < FEED_COMPLAINT_SHARE
    c_jsonl = rng.random(n_rows) < 0.5
    n_bad_c = max(2 * len(COMPLAINT_DEFECTS), round(bad_rows * n_rows))
    for path, sel, jsonl in (
        (COMPLAINT_FEEDS[0], c_in & ~c_jsonl, False),
        (COMPLAINT_FEEDS[1], c_in & c_jsonl, True),
    ):
        good = _as_text(complaints.filter(pl.Series(sel)), contract.COMPLAINT_TIMESTAMPS, jsonl)
        half = n_bad_c // 2 if not jsonl else n_bad_c - n_bad_c // 2
        bad = _bad_complaints(rng, complaints, half, jsonl)
        feeds.files[path] = _shuffle(rng, pl.concat([good, bad]))
        feeds.raw_lines[path] = _malformed_lines(rng, feeds.files[path], "complaint_id", jsonl)
    feeds.complaint_moved = pl.Series(c_in)


def text_feeds(
    rng: np.random.Generator,
    cfg: SimConfig,
    events: pl.DataFrame,
    complaints: pl.DataFrame,
    ids: pl.Series,
) -> Feeds:
    """Move a few items' events and some complaints to CSV/JSONL and mix in malformed rows."""
    feeds = Feeds()
    _event_feeds(rng, cfg.bad_rows, events, ids, feeds)
    _complaint_feeds(rng, cfg.bad_rows, complaints, feeds)
    return feeds
