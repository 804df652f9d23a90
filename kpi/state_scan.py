"""The lifecycle state straight from typed Parquet event files: the report's fast path.

The general path (``collect_state(load_data_dir(d).events)``) validates every row
(strips every text, maps event names and UPU aliases), de-duplicates event ids and
groups by the item id text. On a folder of typed Parquet files whose values need
none of that, the same state comes from integer work: group by a hash of the item
id, pack the last scan's facility into the key as its rank among the folder's
facility names, and take acceptances from the accepted rows alone.

``scan_state`` proves from whole-folder facts, gathered in the same passes, that
the folder is such a folder; when a proof fails it returns why, and the caller takes
the general path. The state is then identical to the general path's:

- every file is Parquet with text columns as text and tz-aware timestamps;
- every distinct ``event`` value is a canonical event name, or no name at all even
  after stripping, lowercasing and UPU aliases (such rows are rejects either way);
- no ``facility`` value is blank or padded, no acceptance's
  ``product``/``origin``/``destination`` is missing, blank or padded;
- no ``event_id`` is blank or padded (so the raw text is the stripped one) and no two
  are equal (their 64-bit hashes all differ), so there is nothing to de-duplicate;
- no ``item_id`` is blank or padded. Items are grouped by a 128-bit key, two
  independently seeded 64-bit xxh3 hashes of the id: two different ids would have to
  collide in both to be merged, about n^2 / 2^129 for n items, 1e-27 at a million
  items, far below the odds of a hardware fault;
- the packed (key, facility rank) fits in 64 bits.

Rows that fail a row check (unknown event, a missing required field, a failed
attempt without a reason) are left out as the general path leaves them out, and
counted (``ScannedState.rejected``).

CSV/JSONL files beside the Parquet ones (a live feed next to the history) are
validated as the general path validates them, and their state is merged into the
Parquet files' state (``reduce_states``, order-independent); their event ids must not
repeat a Parquet file's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from kpi.contract import EVENT_TYPES, UTC, EventType, Kind
from kpi.events import EVENT_RULES, STAGE, Effect, event_has, event_key, key_ts
from kpi.lifecycle import RANK_BITS, STATE_SCHEMA, collect_state_counted, reduce_states
from kpi.sources.files import file_format, read_file
from kpi.sources.folder import read_counts, validated_frame
from kpi.sources.validate import EVENT_NAMES

_TEXT: Final = ("event_id", "item_id", "event", "facility", "product", "origin", "destination")
_TEXT_OPTIONAL: Final = ("reason",)
_TIMES: Final = ("ts", "promised_by")
#: The manifest fields acceptances require, proved present on every accepted row.
_ACCEPTANCE: Final = tuple(
    dict.fromkeys(c for r in EVENT_RULES if Effect.ACCEPTS in r.effects for c in r.requires)
)
#: Event types that require a reason (failed attempts).
_NEEDS_REASON: Final = tuple(r.name for r in EVENT_RULES if "reason" in r.requires)
# Seeds of the two item-id hashes (xxh3 seeded from each): any two different values.
_SEED_1: Final = 0x5EED_0001
_SEED_2: Final = 0x7A11_5EED
#: The two item-id hash seeds, shared with the stage build (``kpi.kpis.stage_build``):
#: the stage rows read in this module's pass are keyed like the ones it reads itself.
ITEM_SEEDS: Final = (_SEED_1, _SEED_2)
#: The scans the stage tables are made of (``kpi.kpis.stage_build.STAGE_EVENTS``).
STAGE_SCANS: Final = ("accepted", "arrived", "departed", "delivered")
#: The stage scans this module's pass keeps (``ScannedState.stage_rows``): an item's
#: first acceptance and delivery are the state's own (``accepted_at``, ``delivered_at``).
MOVE_SCANS: Final = ("arrived", "departed")
_ID_SEED: Final = 0x1D5


class _NeedsGeneralPathError(Exception):
    """The folder needs the general path; the message says why."""


@dataclass(frozen=True)
class ScannedState:
    """``collect_state``'s answer (state and the events' time span) plus the rows left out."""

    state: pl.DataFrame
    first: dt.datetime | None
    last: dt.datetime | None
    rejected: int | None  # rows validation left out (None when as-of cuts the events)
    unreadable_files: int = 0  # text files that could not be read at all
    text_files: int = 0  # CSV/JSONL files validated beside the Parquet ones
    #: With ``stage_rows``: the arrivals and departures (``MOVE_SCANS``) of the rows the
    #: state was built from, sorted by ``h`` (the id's first hash, shared by no two
    #: items), in the order read within an item; ``key``: time and rank; ``facility``:
    #: Categorical. None also when two items share ``h``.
    stage_rows: pl.DataFrame | None = None


def scan_state(
    files: Sequence[Path],
    as_of: dt.datetime | None = None,
    *,
    event_ids: bool = True,
    stage_rows: bool = False,
) -> ScannedState | str:
    """The state of every item from typed Parquet event files, or why the general path is needed.

    Same answer as ``collect_state`` over the validated, de-duplicated events of
    ``files`` (see the module docstring for the proofs that make it so). With
    ``event_ids=False`` the state's ``accepted_event_id`` is left null (the lifecycle
    table does not carry it): the acceptances' ids are then read only for items with
    several acceptances, to pick the winner (reading them all cost 0.12 s at 10 M events).
    With ``stage_rows`` (and only Parquet files) the pass that groups the rows by item
    also keeps their stage scans (``ScannedState.stage_rows``): the stage build then
    needs no second read and hashing of the events (1 s of CPU at 10 M events).
    """
    parquet = [p for p in files if file_format(p) == "parquet"]
    try:
        if len(parquet) == len(files):
            return _scan(files, as_of, event_ids, stage_rows=stage_rows)[0]
        if not parquet:
            raise _NeedsGeneralPathError("no Parquet event files")
        return _with_text_files(parquet, [p for p in files if p not in parquet], as_of, event_ids)
    except _NeedsGeneralPathError as exc:
        return str(exc)


def _events(files: Sequence[Path]) -> pl.LazyFrame:
    if not files:
        raise _NeedsGeneralPathError("no event files")
    frames = []
    for path in files:
        if file_format(path) != "parquet":
            raise _NeedsGeneralPathError(f"{path.name} is not Parquet")
        try:
            schema = pl.read_parquet_schema(path)
        except Exception as exc:  # a corrupt file is the general path's reject
            raise _NeedsGeneralPathError(f"{path.name} is not readable Parquet") from exc
        for col in _TEXT + _TEXT_OPTIONAL:
            if schema.get(col) != pl.String:
                raise _NeedsGeneralPathError(
                    f"{path.name}: column {col} is {schema.get(col)}, not text"
                )
        for col in _TIMES:
            dtype = schema.get(col)
            if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
                raise _NeedsGeneralPathError(
                    f"{path.name}: column {col} is {dtype}, not a tz-aware timestamp"
                )
        frames.append(
            pl.scan_parquet(path).select(
                *_TEXT,
                *_TEXT_OPTIONAL,
                *(pl.col(c).dt.convert_time_zone("UTC").cast(UTC) for c in _TIMES),
            )
        )
    return pl.concat(frames, how="vertical")


def maybe_padded(text: pl.Expr) -> pl.Expr:
    """False where ``text`` certainly has nothing for ``str.strip_chars()`` to strip.

    Stripping removes Unicode White_Space: ASCII 0x09-0x0D and 0x20, and characters
    whose UTF-8 lead byte is 0xC2 or 0xE1-0xE3 and whose last byte is non-ASCII. A
    text whose first byte is none of those leads and whose last byte is above 0x20
    and ASCII has none at either end. Two byte reads per text, no copy: stripping 10 M
    texts only to compare lengths cost 0.05-0.1 s more. Null for null or empty texts.
    """
    raw = text.cast(pl.Binary)
    first = raw.bin.get(0, null_on_oob=True)
    last = raw.bin.get(-1, null_on_oob=True)
    return (first <= 0x20) | first.is_between(0xC2, 0xE3) | (last <= 0x20) | (last >= 0x80)


def _padded_or_blank(values: pl.Series) -> bool:
    """Whether any non-null text would change when validation strips it (or is blank)."""
    values = values.drop_nulls()
    quick = values.to_frame("t").select(
        maybe_padded(pl.col("t")).any().alias("maybe"),
        (pl.col("t").str.len_bytes() == 0).any().alias("empty"),
    )
    if not quick.item(0, "maybe") and not quick.item(0, "empty"):
        return False
    length = values.str.strip_chars().str.len_bytes()
    # Stripping only removes bytes: a changed text is a shorter one.
    return bool((length != values.str.len_bytes()).any() or (length == 0).any())


def _check_vocabulary(facts: pl.DataFrame) -> list[str]:
    """Facility names in rank order, after proving event and facility names clean."""
    texts = facts.get_column("event").drop_nulls().unique().sort()  # sorted: one reason
    normal = texts.str.strip_chars().str.to_lowercase()  # as validation normalises them
    for text, name in zip(texts, normal, strict=True):
        if text not in EVENT_TYPES and name in EVENT_NAMES:
            raise _NeedsGeneralPathError(f"event name {text!r} needs mapping")
    facilities = facts.get_column("facility").drop_nulls().unique()
    if _padded_or_blank(facilities):
        raise _NeedsGeneralPathError("blank or padded facility names")
    return sorted(facilities.to_list())


def _check_ids(hashes: pl.Series) -> bool:
    """Event ids (their hashes): none blank, all distinct (a hash collision falls back).

    Returns whether any id may be null (such rows are rejects). Nulls share one hash;
    a non-null id that happens to hash like a null is still distinct from every other.
    """
    blank, null = pl.Series(["", None], dtype=pl.String).hash(_ID_SEED)
    if (hashes == blank).any():
        raise _NeedsGeneralPathError("blank event ids")
    nulls = int((hashes == null).sum())
    if hashes.n_unique() != hashes.len() - max(nulls - 1, 0):
        raise _NeedsGeneralPathError("repeated event ids (first read wins needs the general path)")
    return nulls > 0


def _blank(col: str) -> pl.Expr:
    return pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "")


def _item_key() -> pl.Expr:
    """The item's 128-bit identity: two independently seeded 64-bit hashes of its id."""
    item = pl.col("item_id")
    return item.hash(_SEED_1).cast(pl.Int128) * 2**64 + item.hash(_SEED_2).cast(pl.Int128)


@dataclass(frozen=True)
class _Facts:
    """Whole-folder facts from cheap passes over the low-cardinality columns and ``ts``."""

    facilities: list[str]  # in rank (byte) order
    rows: int
    lo: dt.datetime
    hi: dt.datetime
    # Which row checks can fail at all (a check that cannot is left out of the filter).
    unknown_events: bool  # rows whose event is no event name (or none)
    null_ts: bool
    null_facility: bool
    reasonless: bool  # failed attempts without a reason (rejects)


def _facts(events: pl.LazyFrame) -> _Facts:
    facts = (
        events.group_by("event", "facility")
        .agg(pl.len().alias("n"), pl.col("reason").null_count().alias("null_reason"))
        .collect(engine="streaming")
    )
    # The time span apart: 0.04 s, as aggregations of each group 0.07 s more.
    ts = pl.col("ts")
    lo, hi, null_ts = (
        events.select(ts.min(), ts.max().alias("hi"), ts.null_count().alias("n"))
        .collect(engine="streaming")
        .row(0)
    )
    # Reasons are few: their distinct texts cost 0.02 s at 10 M events (grouping the
    # facts by reason too cost 0.12 s).
    reasons = events.select(pl.col("reason").drop_nulls().unique()).collect(engine="streaming")
    no_reason = facts.filter(pl.col("event").is_in(_NEEDS_REASON)).get_column("null_reason")
    names = _check_vocabulary(facts)
    if lo is None or not names:
        raise _NeedsGeneralPathError("no timestamped events with a facility")
    return _Facts(
        facilities=names,
        rows=int(facts.get_column("n").sum()),
        lo=lo,
        hi=hi,
        unknown_events=not facts.get_column("event").is_in(EVENT_TYPES).fill_null(False).all(),
        null_ts=bool(null_ts),
        null_facility=bool(facts.get_column("facility").null_count()),
        reasonless=bool(no_reason.sum()) or bool(reasons.filter(_blank("reason")).height),
    )


def _valid(facts: _Facts, null_ids: bool) -> pl.Expr:
    """The validation's row checks, for values the proofs showed need no cleaning.

    Checks that the facts show cannot fail are left out (they would cost a read of
    their columns for nothing). The fields required on acceptances and failed
    attempts are not checked here: the passes that read those rows prove them present.
    """
    checks = [pl.col("item_id").is_not_null()]
    if facts.unknown_events:  # the cast of every row's event cost 0.1 s at 10 M events
        checks.append(pl.col("event").cast(EventType, strict=False).is_not_null())
    if facts.null_ts:
        checks.append(pl.col("ts").is_not_null())
    if facts.null_facility:
        checks.append(pl.col("facility").is_not_null())
    if null_ids:
        checks.append(pl.col("event_id").is_not_null())
    if facts.reasonless:
        checks.append(~(pl.col("event").is_in(_NEEDS_REASON) & _blank("reason")))
    return pl.all_horizontal(checks)


def _acceptances(
    good: pl.LazyFrame, event_ids: bool, items: pl.Series | None = None
) -> pl.DataFrame:
    """The accepted rows (of ``items`` only, when given) as state columns, keyed by item."""
    rows = good.filter(event_has(Effect.ACCEPTS))
    if items is not None:
        rows = rows.filter(_item_key().is_in(items.implode()))
    eid = pl.col("event_id") if event_ids else pl.lit(None, pl.String)
    return rows.select(
        _item_key().alias("k"),
        "item_id",
        pl.col("ts").alias("accepted_at"),
        eid.alias("accepted_event_id"),
        *_ACCEPTANCE,
        pl.col("promised_by").alias("promised_by_given"),
    ).collect(engine="streaming")


def _event_ids(events: pl.LazyFrame) -> tuple[bool, pl.Series]:
    """Prove the event ids clean and distinct: whether any is null (such rows are
    rejects), and the ids' hashes."""
    # Unpadded ids are their stripped selves: the raw text is hashed (stripping every
    # id only to hash it cost 0.1 s per 10 M rows).
    eid = pl.col("event_id")
    ids = events.select(eid.hash(_ID_SEED).alias("h"), maybe_padded(eid).alias("padded")).collect(
        engine="streaming"
    )
    if ids.get_column("padded").any():  # some id may be padded: strip them all to know
        padded = events.select(
            (eid.str.strip_chars().str.len_bytes() != eid.str.len_bytes()).any()
        ).collect(engine="streaming")
        if padded.item():
            raise _NeedsGeneralPathError("padded event ids")
    hashes = ids.get_column("h")
    return _check_ids(hashes), hashes


def _totals(
    good: pl.LazyFrame, names: list[str], base: int, counted: bool, stages: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Per item: the latest scan packed with its facility's rank (ties: greatest name), the
    first attempt, delivery and return; with ``counted``, also the earliest scan and the
    number of rows (needed only where rows may be rejected). With ``stages``, also the
    arrivals and departures of ``good`` sorted by item (``ScannedState.stage_rows``),
    from the same projected rows."""
    n_fac = len(names)
    key = event_key()  # the rules table's stage rank packed below ts (text event: cast)
    rank = pl.col("facility").cast(pl.Enum(names)).to_physical().cast(pl.Int64)
    counts = (pl.col("packed").min().alias("first_packed"), pl.len()) if counted else ()
    item = pl.col("item_id")
    rows = good.select(
        _item_key().alias("k"),
        ((key - base) * n_fac + rank).alias("packed"),
        pl.when(event_has(Effect.ATTEMPTS)).then(key).alias("attempt_key"),
        pl.when(event_has(Effect.DELIVERS)).then(pl.col("ts")).alias("delivered_at"),
        pl.when(event_has(Effect.RETURNS)).then(pl.col("ts")).alias("returned_at"),
        *((item.hash(_SEED_1).alias("h"),) if stages else ()),
    )
    totals = rows.group_by("k").agg(
        pl.col("packed").max(),
        *counts,
        pl.col("attempt_key").min(),
        pl.col("delivered_at").min(),
        pl.col("returned_at").min(),
    )
    if not stages:
        return totals.collect(engine="streaming"), None
    packed = pl.col("packed")
    scan_key = packed // n_fac + base
    move_ranks = [STAGE[e] for e in MOVE_SCANS]  # base is a multiple of RANK_BITS
    scans = (
        rows.filter((scan_key % RANK_BITS).is_in(move_ranks))
        .select("h", scan_key.alias("key"), (packed % n_fac).cast(pl.UInt32).alias("fac"))
        # The stage build's order, sorted here on every core while the group-by runs
        # (0.3-0.4 s less CPU than sorting the collected rows in the build).
        .sort("h", maintain_order=True)
    )
    # One plan for both: the projected rows (read, hashed, packed) are shared.
    totals_frame, scans_frame = pl.collect_all([totals, scans], engine="streaming")
    # Items are told apart by both hashes; the stage rows carry the first alone, which
    # is enough when no two items share it (else the stage build reads the events again
    # and numbers the items by their id text). ``k // 2**64`` is the first hash.
    if totals_frame.select((pl.col("k") // 2**64).n_unique()).item() < totals_frame.height:
        return totals_frame, None
    facility = pl.Series("facility", names, pl.Categorical).gather(scans_frame["fac"])
    return totals_frame, scans_frame.drop("fac").with_columns(facility)


def _scan(
    files: Sequence[Path],
    as_of: dt.datetime | None,
    event_ids: bool,
    keep_ids: bool = False,
    stage_rows: bool = False,
) -> tuple[ScannedState, pl.Series | None]:
    """Passes, each its own streaming plan (sharing one scan between plans held every
    row in memory): facts (names, time span, reasons), item totals, event ids,
    acceptances; then item ids of items never accepted, and the acceptances' event ids
    of items accepted more than once without them, where there are such items."""
    events = _events(files)
    facts = _facts(events)
    names = facts.facilities
    n_fac = len(names)
    base = int(pl.Series([facts.lo]).dt.epoch("us").item()) * RANK_BITS
    span = (int(pl.Series([facts.hi]).dt.epoch("us").item()) + 1) * RANK_BITS - base
    if span * n_fac >= 2**63:
        raise _NeedsGeneralPathError("time range too wide to pack the facility rank")

    def cut(frame: pl.LazyFrame) -> pl.LazyFrame:
        return frame if as_of is None else frame.filter(pl.col("ts") <= as_of)

    # The item totals run first, while nothing else is held: their pass sets the peak
    # memory (the id check before it raised the peak by ~0.1 GB, holding the
    # acceptances meanwhile by ~0.25 GB). The attempts are aggregations of the same
    # group-by (a pass of their own and its join cost 0.2 s more at 10 M events).
    # When the facts show no row can be rejected but by a null item or event id, the
    # totals are taken from every row, without the rows' count and earliest scan (both
    # then known: the facts' own, and 0.1 GB less); the rows of null items gather under
    # the key of a null id and null event ids show in the id check. Either sends the
    # totals through again with the row checks.
    counted = facts.unknown_events or facts.null_ts or facts.null_facility or facts.reasonless
    if counted:
        null_ids, hashes = _event_ids(events)
    else:
        totals, scans = _totals(cut(events), names, base, counted=False, stages=stage_rows)
        null_item = pl.select(pl.lit(None, pl.String).alias("item_id")).select(_item_key()).item()
        null_ids, hashes = _event_ids(events)
        counted = null_ids or bool((totals.get_column("k") == null_item).any())
    kept = hashes if keep_ids else None
    del hashes
    good = cut(events.filter(_valid(facts, null_ids)) if counted else events)
    if counted:
        totals, scans = _totals(good, names, base, counted=True, stages=stage_rows)
    state = _with_acceptances(totals, _checked_acceptances(good, event_ids), good, event_ids)
    scanned = _scanned(_with_unaccepted_ids(state, good), facts, base, counted, as_of)
    return dataclasses.replace(scanned, stage_rows=scans), kept


def _checked_acceptances(good: pl.LazyFrame, event_ids: bool) -> pl.DataFrame:
    """The acceptances, proved free of blank or padded ids and manifest fields."""
    acc = _acceptances(good, event_ids)
    if _padded_or_blank(acc.get_column("item_id")):
        raise _NeedsGeneralPathError("blank or padded item ids")
    for col in _ACCEPTANCE:
        values = acc.get_column(col)
        if values.null_count() or _padded_or_blank(values.unique()):
            raise _NeedsGeneralPathError(f"acceptances with a missing, blank or padded {col}")
    return acc


def _with_acceptances(
    totals: pl.DataFrame, acc: pl.DataFrame, good: pl.LazyFrame, event_ids: bool
) -> pl.DataFrame:
    """The item totals joined with each item's winning acceptance."""
    state = totals.join(acc, on="k", how="left")
    # An item with several acceptances has several rows: keep the winning acceptance,
    # earliest, then the smallest event id (ids are distinct). Checked by the join's
    # height rather than counting distinct keys up front (0.04 s at 10 M events).
    if state.height > totals.height:
        repeated = acc.get_column("k").is_duplicated()
        several = acc.filter(repeated)
        if not event_ids:
            several = _acceptances(good, True, several.get_column("k").unique())
        winners = several.sort("accepted_at", "accepted_event_id").unique("k", keep="first")
        if not event_ids:
            winners = winners.with_columns(pl.lit(None, pl.String).alias("accepted_event_id"))
        acc = pl.concat([acc.filter(~repeated), winners])
        state = totals.join(acc, on="k", how="left")
    return state


def _with_unaccepted_ids(state: pl.DataFrame, good: pl.LazyFrame) -> pl.DataFrame:
    """Items without an acceptance: their id text from one more pass."""
    missing = state.filter(pl.col("item_id").is_null()).get_column("k")
    if not missing.len():
        return state
    texts = (
        good.filter(_item_key().is_in(missing.implode()))
        .group_by(_item_key().alias("k"))
        .agg(pl.col("item_id").first().alias("_id"))
        .collect(engine="streaming")
    )
    if _padded_or_blank(texts.get_column("_id")):
        raise _NeedsGeneralPathError("blank or padded item ids")
    return state.join(texts, on="k", how="left").with_columns(
        pl.coalesce("item_id", "_id").alias("item_id")
    )


def _scanned(
    state: pl.DataFrame, facts: _Facts, base: int, counted: bool, as_of: dt.datetime | None
) -> ScannedState:
    """The packed keys unpacked (last scan, its facility), the time span and the rejects."""
    names = facts.facilities
    n_fac = len(names)
    packed = pl.col("packed")
    state = state.with_columns((packed // n_fac + base).alias("last_key"))
    facility = pl.Series("last_facility", names, pl.String)
    state = state.with_columns(facility.gather(state.get_column("packed") % n_fac))
    first, last = (
        state.select(
            (
                key_ts(pl.col("first_packed").min() // n_fac + base)
                if counted
                else pl.lit(facts.lo, UTC)  # every row is good: the facts' earliest
            ).alias("first"),
            key_ts(pl.col("last_key").max()).alias("last"),
        ).row(0)
        if state.height
        else (None, None)
    )
    good_rows = int(state.get_column("len").sum()) if counted else facts.rows
    return ScannedState(
        state.select(STATE_SCHEMA.keys()).cast(STATE_SCHEMA),  # type: ignore[arg-type]
        first,
        last,
        facts.rows - good_rows if as_of is None else None,
    )


def _with_text_files(
    parquet: Sequence[Path], text: Sequence[Path], as_of: dt.datetime | None, event_ids: bool
) -> ScannedState:
    """The state of a folder of typed Parquet files plus CSV/JSONL ones (a live feed).

    The Parquet files take the fast path, the text files the general one (validated,
    de-duplicated among themselves), and the two states are merged as the exporter
    merges batches (``reduce_states``: order-independent). Exact when no event id of a
    text file is also an id of a Parquet file (then which read wins depends on the
    files' order): that is checked, and a shared id sends the folder down the general
    path. The acceptances' event ids are read (the merge's tie rule needs them), and
    left out of the answer only at the end when ``event_ids`` is false.
    """
    fast, parquet_ids = _scan(parquet, as_of, event_ids=True, keep_ids=True)
    assert parquet_ids is not None
    batches = [read_file(p) for p in text]
    events = validated_frame(batches, Kind.EVENTS).collect()
    text_ids = events.get_column("event_id").hash(_ID_SEED)
    if text_ids.is_in(parquet_ids.implode()).any():
        raise _NeedsGeneralPathError("event ids repeat across Parquet and text files")
    del parquet_ids
    text_state, first, last, used = collect_state_counted(events.lazy(), as_of)
    touched = fast.state.get_column("item_id").is_in(text_state.get_column("item_id").implode())
    merged = reduce_states(pl.concat([fast.state.filter(touched), text_state]).lazy())
    state = pl.concat([fast.state.filter(~touched), merged.collect()], how="vertical")
    if not event_ids:
        state = state.with_columns(pl.lit(None, pl.String).alias("accepted_event_id"))
    read = read_counts(batches)
    firsts = [t for t in (fast.first, first) if t is not None]
    lasts = [t for t in (fast.last, last) if t is not None]
    return ScannedState(
        state,
        min(firsts) if firsts else None,
        max(lasts) if lasts else None,
        None if fast.rejected is None or as_of is not None else fast.rejected + read.rows - used,
        unreadable_files=read.unreadable_files,
        text_files=len(text),
    )


__all__ = ["ITEM_SEEDS", "MOVE_SCANS", "STAGE_SCANS", "ScannedState", "maybe_padded", "scan_state"]
