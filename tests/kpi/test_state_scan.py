"""The state's fast path (``scan_state``) against the general path (``collect_state``).

Every answer of ``scan_state`` that is a ``ScannedState`` must equal
``collect_state(load_data_dir(d).events, as_of)``; folders that break one of the
proofs in ``kpi.state_scan``'s docstring must fall back (a string saying why).

What events mean is one property over the rules table (``kpi.events``): random events
drawn from the table's types and aliases, with rejects, duplicates, any read order and
an as-of cut; fast path = general path = a naive reference that reads the table's rows
as data. The hand cases left are the fast path's proofs and past bugs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reference import utc

from kpi.contract import EVENT_SCHEMA, EVENT_TIMESTAMPS, EVENT_TYPES, UTC, Kind
from kpi.events import EVENT_RULES, RANK_BITS, Effect
from kpi.kpis.query import Snapshot
from kpi.lifecycle import STATE_SCHEMA, collect_state, collect_state_counted
from kpi.sources.folder import DataSet, load_data_dir, source_files, validate_data_dir
from kpi.state_scan import ScannedState, maybe_padded, scan_state
from tests.conftest import write_rows

Row = dict[str, Any]

#: The typed schema of an events Parquet file as the generator writes it.
FILE_SCHEMA: dict[str, pl.DataType] = {
    c: (UTC if c in EVENT_TIMESTAMPS else pl.String()) for c in EVENT_SCHEMA
}
BASE = dt.datetime(2027, 1, 11, tzinfo=dt.UTC)
BASE_US = int(BASE.timestamp()) * 10**6


# --- helpers ---------------------------------------------------------------------


def write_parts(root: Path, parts: Sequence[Sequence[Row]], schema: Any = None) -> Path:
    """One Parquet file per part under ``root/events`` (typed schema); returns ``root``."""
    folder = root / "events"
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(parts):
        frame = pl.DataFrame(list(part), schema=schema or FILE_SCHEMA, orient="row")
        frame.write_parquet(folder / f"part-{i:02d}.parquet")
    return root


def write_events(root: Path, rows: Sequence[Row], n_files: int = 1) -> Path:
    """``rows`` split into ``n_files`` consecutive Parquet files under ``root/events``."""
    size = -(-len(rows) // n_files) if rows else 0
    parts = [rows[i * size : (i + 1) * size] for i in range(n_files)]
    return write_parts(root, parts)


def general(
    data_dir: Path, as_of: dt.datetime | None = None
) -> tuple[pl.DataFrame, dt.datetime | None, dt.datetime | None]:
    """The general path: ``collect_state`` over the validated, de-duplicated events."""
    return collect_state(load_data_dir(data_dir).events, as_of)


def scan(
    data_dir: Path, as_of: dt.datetime | None = None, *, event_ids: bool = True
) -> ScannedState | str:
    return scan_state(source_files(data_dir, Kind.EVENTS), as_of, event_ids=event_ids)


def assert_same(data_dir: Path, as_of: dt.datetime | None = None) -> ScannedState | str:
    """``scan_state``'s answer; when it is a state, asserted equal to the general path's.

    The answer without the acceptances' event ids is checked too: the same state with
    ``accepted_event_id`` null, or the same fallback.
    """
    result = scan(data_dir, as_of)
    without_ids = scan(data_dir, as_of, event_ids=False)
    state, first, last = general(data_dir, as_of)  # the general path always works
    if isinstance(result, ScannedState):
        assert result.state.schema == pl.Schema(STATE_SCHEMA)
        assert_frame_equal(result.state.sort("item_id"), state.sort("item_id"))
        assert (result.first, result.last) == (first, last)
        if as_of is not None:
            assert result.rejected is None
        assert isinstance(without_ids, ScannedState)
        assert_frame_equal(
            without_ids.state.sort("item_id"),
            state.with_columns(pl.lit(None, pl.String).alias("accepted_event_id")).sort("item_id"),
        )
        assert (without_ids.first, without_ids.last) == (first, last)
        assert without_ids.rejected == result.rejected
    else:
        assert without_ids == result
    return result


def validation_rejects(data_dir: Path, rejects_dir: Path) -> int:
    """Rows of the events files that ``validate_data_dir`` rejects."""
    reports = validate_data_dir(data_dir, rejects_dir)
    return sum(r.rejected_total for r in reports if r.kind is Kind.EVENTS)


def fast(result: ScannedState | str) -> ScannedState:
    assert isinstance(result, ScannedState), f"fell back: {result}"
    return result


def items(result: ScannedState) -> dict[str, Row]:
    return {r["item_id"]: r for r in result.state.to_dicts()}


# --- a hand-made clean folder ----------------------------------------------------


def clean_rows(kit: Any) -> list[Row]:
    ev = kit.ev
    return [
        # A1: three scans at one instant and stage: the greatest name ("P2" > "P10") wins.
        ev("A1", "accepted", "2027-01-11T02:00", "C1", promised_by="2027-01-14T00:00"),
        ev("A1", "arrived", "2027-01-11T06:00", "P10"),
        ev("A1", "arrived", "2027-01-11T06:00", "P2"),
        ev("A1", "arrived", "2027-01-11T06:00", "P1"),
        # B2: three acceptances: the earliest wins, at equal ts the smallest event id.
        ev("B2", "accepted", "2027-01-11T01:00", "C2", product="standard", event_id="b-9"),
        ev("B2", "accepted", "2027-01-11T03:00", "C1", product="economy", event_id="b-0"),
        ev("B2", "accepted", "2027-01-11T01:00", "C1", origin="CN-XZ", event_id="b-1"),
        ev("B2", "out_for_delivery", "2027-01-12T04:00", "D1"),
        # The later stage wins the last event at equal ts, whatever the facility name.
        ev("B2", "delivered", "2027-01-12T05:00", "D1"),
        ev("B2", "out_for_delivery", "2027-01-12T05:00", "D9"),
        # C3: no acceptance at all.
        ev("C3", "delivered", "2027-01-12T07:00", "D2"),
        # D4: failed, then returned.
        ev("D4", "accepted", "2027-01-11T05:00", "C2", product="standard"),
        ev("D4", "delivery_failed", "2027-01-12T08:00", "D1", reason="refused"),
        ev("D4", "returned", "2027-01-13T09:00", "C2"),
        # E5: failed (absent), delivered later.
        ev("E5", "accepted", "2027-01-11T05:30", "C1", promised_by="2027-01-12T12:00"),
        ev("E5", "departed", "2027-01-11T08:00", "P1"),
        ev("E5", "delivery_failed", "2027-01-12T09:00", "D2", reason="addressee_absent"),
        ev("E5", "delivered", "2027-01-13T10:00", "D2"),
        # F6: only an acceptance, the very last event of the folder.
        ev("F6", "accepted", "2027-01-13T23:00", "C3"),
    ]


@pytest.mark.parametrize("n_files", [1, 3])
def test_clean_folder_takes_the_fast_path(kit: Any, tmp_path: Path, n_files: int) -> None:
    data = write_events(tmp_path / "data", clean_rows(kit), n_files)
    assert len(source_files(data, Kind.EVENTS)) == n_files
    got = fast(assert_same(data))
    assert got.rejected == 0 == validation_rejects(data, tmp_path / "rejects")
    assert got.first == utc("2027-01-11T01:00") and got.last == utc("2027-01-13T23:00")
    by_id = items(got)
    assert sorted(by_id) == ["A1", "B2", "C3", "D4", "E5", "F6"]
    assert by_id["A1"]["last_facility"] == "P2"
    assert by_id["A1"]["promised_by_given"] == utc("2027-01-14T00:00")
    b2 = by_id["B2"]
    assert b2["accepted_event_id"] == "b-1" and b2["origin"] == "CN-XZ"
    assert b2["product"] == "express" and b2["accepted_at"] == utc("2027-01-11T01:00")
    assert b2["last_facility"] == "D1" and b2["delivered_at"] == utc("2027-01-12T05:00")
    c3 = by_id["C3"]
    assert c3["accepted_at"] is None and c3["product"] is None and c3["last_facility"] == "D2"
    d4 = by_id["D4"]
    assert d4["returned_at"] == utc("2027-01-13T09:00") and d4["delivered_at"] is None
    assert d4["last_facility"] == "C2"
    assert by_id["E5"]["delivered_at"] == utc("2027-01-13T10:00")
    assert by_id["E5"]["promised_by_given"] == utc("2027-01-12T12:00")
    # The first attempt is the failure: its key decodes to its instant and stage.
    attempt = by_id["E5"]["attempt_key"]
    stamp = int(utc("2027-01-12T09:00").timestamp()) * 10**6
    assert attempt == stamp * 8 + EVENT_TYPES.index("delivery_failed")


# --- proof violations fall back ----------------------------------------------------


def _first_changed(kit: Any, **changes: Any) -> list[Row]:
    rows = clean_rows(kit)
    rows[0] = {**rows[0], **changes}
    return rows


def _plus(kit: Any, *args: Any, **kw: Any) -> list[Row]:
    """The clean rows plus one more event (``kit.ev`` arguments)."""
    return [*clean_rows(kit), kit.ev(*args, **kw)]


# Event names that need mapping (case, padding, UPU aliases) are drawn by the property.
FALLBACKS: dict[str, Any] = {
    "padded item_id": lambda kit: _first_changed(kit, item_id=" A1"),
    "blank item_id": lambda kit: _first_changed(kit, item_id="  "),
    "padded item_id without acceptance": lambda kit: _plus(
        kit, "C3 ", "arrived", "2027-01-12T01:00"
    ),
    "padded event_id": lambda kit: _first_changed(kit, event_id="E1 "),
    "event_id ending in a no-break space": lambda kit: _first_changed(kit, event_id="E1\u00a0"),
    "event_id after an ideographic space": lambda kit: _first_changed(kit, event_id="\u3000E1"),
    "blank event_id": lambda kit: _first_changed(kit, event_id=""),
    "whitespace event_id": lambda kit: _first_changed(kit, event_id=" \t"),
    "repeated event_id": lambda kit: _plus(
        kit, "C3", "arrived", "2027-01-12T01:00", event_id="b-0"
    ),
    "repeated event_id on a reject": lambda kit: _plus(
        kit, "C3", "teleported", "2027-01-12T01:00", event_id="b-0"
    ),
    "padded facility": lambda kit: _first_changed(kit, facility="HUB1 "),
    "blank facility": lambda kit: _first_changed(kit, facility=""),
    "padded product": lambda kit: _first_changed(kit, product=" express"),
    "blank origin": lambda kit: _first_changed(kit, origin=""),
}


def _check_general(data: Path) -> None:
    """The general path still answers: every item id clean, the folder's last instant."""
    state, _, last = general(data)
    ids = state.get_column("item_id")
    assert state.height >= 5 and (ids == ids.str.strip_chars()).all()
    assert last == utc("2027-01-13T23:00")


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_proof_violations_fall_back(kit: Any, tmp_path: Path, case: str) -> None:
    data = write_events(tmp_path, FALLBACKS[case](kit), 2)
    assert isinstance(assert_same(data), str)
    _check_general(data)


def test_maybe_padded_flags_every_text_stripping_changes() -> None:
    """Every code point, alone and at either end of a text: where ``strip_chars`` would
    change the text, the two-byte test must say "maybe"."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = pl.Series("t", [*chars, *(f"{c}x" for c in chars), *(f"x{c}" for c in chars)])
    got = texts.to_frame().select(
        maybe_padded(pl.col("t")).fill_null(True).alias("maybe"),
        (pl.col("t").str.strip_chars() != pl.col("t")).alias("changed"),
    )
    assert got.get_column("changed").sum() > 3 * 20  # the test sees whitespace at all
    assert got.filter(pl.col("changed") & ~pl.col("maybe")).height == 0
    # ... and lets plain ids through without the strip.
    plain = pl.Series("t", ["CP123456785CN-00", "a", "Z9", "x-é-1", "E1"]).to_frame()
    assert not plain.select(maybe_padded(pl.col("t"))).to_series().any()


def test_event_ids_with_non_ascii_ends_take_the_fast_path(kit: Any, tmp_path: Path) -> None:
    """The byte test says "maybe" for ids ending in "é"; the exact check clears them."""
    rows = [{**r, "event_id": f"{r['event_id']}é"} for r in clean_rows(kit)]
    got = fast(assert_same(write_events(tmp_path, rows, 2)))
    assert got.rejected == 0


def test_padded_item_id_merges_in_the_general_path(kit: Any, tmp_path: Path) -> None:
    data = write_events(tmp_path, _first_changed(kit, item_id=" A1"))
    assert isinstance(scan(data), str)
    a1 = general(data)[0].filter(pl.col("item_id") == "A1")
    assert a1.height == 1 and a1.item(0, "accepted_at") == utc("2027-01-11T02:00")


def write_text(path: Path, rows: Sequence[Row]) -> Path:
    """Rows as a CSV or JSONL file (by suffix), timestamps as ISO text with an offset."""
    text = [
        {c: v.isoformat() if isinstance(v, dt.datetime) else v for c, v in r.items()} for r in rows
    ]
    return write_rows(path, text)


def test_rejects_and_unreadable_text_files_are_counted(kit: Any, tmp_path: Path) -> None:
    rows = clean_rows(kit)
    data = write_events(tmp_path / "data", rows[:10])
    live = write_text(
        data / "events" / "live.jsonl", [*rows[10:], {**rows[0], "event_id": "x1", "event": "x"}]
    )
    with live.open("a") as out:
        out.write("not json\n")
    (data / "events" / "broken.csv").write_bytes(b"event_id,item_id\n\x00\x00")
    got = fast(assert_same(data))
    assert got.rejected == 2 and got.unreadable_files == 1
    reports = validate_data_dir(data, tmp_path / "rejects")
    reasons = [r for rep in reports if rep.kind is Kind.EVENTS for r in rep.rejected.elements()]
    assert sorted(reasons) == ["malformed_row", "unknown_event", "unreadable_file"]


def test_event_id_shared_by_parquet_and_text_falls_back(kit: Any, tmp_path: Path) -> None:
    rows = clean_rows(kit)
    data = write_events(tmp_path, rows[:10])
    again = {**rows[12], "event_id": rows[0]["event_id"]}  # same id, other content
    write_text(data / "events" / "live.jsonl", [*rows[10:12], again, *rows[13:]])
    result = assert_same(data)
    assert isinstance(result, str) and "repeat across Parquet and text" in result
    _check_general(data)


def test_text_files_alone_take_the_general_path(kit: Any, tmp_path: Path) -> None:
    write_text(tmp_path / "events" / "all.csv", clean_rows(kit))
    result = assert_same(tmp_path)
    assert isinstance(result, str) and "no Parquet" in result
    _check_general(tmp_path)


@pytest.mark.parametrize(
    ("column", "dtype"),
    [
        ("ts", pl.Datetime("us")),
        ("promised_by", pl.Datetime("us")),
        ("event", pl.Categorical()),
        ("reason", pl.Null()),
        ("item_id", pl.Categorical()),
    ],
)
def test_untyped_columns_fall_back(
    kit: Any, tmp_path: Path, column: str, dtype: pl.DataType
) -> None:
    rows = clean_rows(kit)
    frame = pl.DataFrame(rows, schema=FILE_SCHEMA, orient="row")
    if isinstance(dtype, pl.Datetime):
        frame = frame.with_columns(pl.col(column).dt.replace_time_zone(None))
    elif dtype == pl.Null:  # an all-null column (failed attempts lose their reason)
        frame = frame.with_columns(pl.lit(None).alias(column))
    else:
        frame = frame.with_columns(pl.col(column).cast(dtype))
    assert frame.schema[column] == dtype
    (tmp_path / "events").mkdir()
    frame.write_parquet(tmp_path / "events" / "typed.parquet")
    assert isinstance(assert_same(tmp_path), str)
    state, _, _ = general(tmp_path)  # naive ts: every row a reject; else the same items
    assert state.height == (0 if column == "ts" else 6)


def test_missing_column_falls_back(kit: Any, tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    frame = pl.DataFrame(clean_rows(kit), schema=FILE_SCHEMA, orient="row")
    frame.drop("promised_by").write_parquet(tmp_path / "events" / "narrow.parquet")
    assert isinstance(assert_same(tmp_path), str)
    assert general(tmp_path)[0].height == 6


def test_other_time_zones_units_and_layouts_take_the_fast_path(kit: Any, tmp_path: Path) -> None:
    """Any tz-aware zone and unit; columns in another order, an extra column."""
    frame = pl.DataFrame(clean_rows(kit), schema=FILE_SCHEMA, orient="row")
    (tmp_path / "events").mkdir()
    frame.head(9).with_columns(
        pl.col("ts").dt.convert_time_zone("Asia/Shanghai"),
        pl.col("promised_by").cast(pl.Datetime("ms", "UTC")),
    ).write_parquet(tmp_path / "events" / "a.parquet")
    frame.slice(9).with_columns(
        pl.col("ts").cast(pl.Datetime("ns", "UTC")).dt.convert_time_zone("America/New_York"),
        note=pl.lit("extra"),
    ).select(reversed([*FILE_SCHEMA, "note"])).write_parquet(tmp_path / "events" / "b.parquet")
    layout = list(pl.read_parquet_schema(tmp_path / "events" / "b.parquet"))
    assert layout[:2] == ["note", "reason"]
    got = fast(assert_same(tmp_path))
    assert items(got)["A1"]["last_facility"] == "P2"
    assert got.last == utc("2027-01-13T23:00")


@pytest.mark.parametrize("n_facilities", [3, 4])
def test_packing_limit_of_a_very_wide_time_range(
    kit: Any, tmp_path: Path, n_facilities: int
) -> None:
    """Years 1 to 9999: the packed key fits with 3 facility names, not with 4."""
    early, late = dt.datetime(1, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
    rows = [
        kit.ev("OLD", "accepted", early, "F0"),
        kit.ev("OLD", "arrived", early, "F1"),
        kit.ev("NEW", "arrived", late, "F1"),
        *(kit.ev("NEW", "arrived", late, f"F{i}") for i in range(2, n_facilities)),
    ]
    result = assert_same(write_events(tmp_path, rows, 2))
    if n_facilities == 3:
        got = fast(result)
        assert (got.first, got.last) == (early, late)
        assert items(got)["NEW"]["last_facility"] == "F2"
        assert items(got)["OLD"]["last_facility"] == "F1"
    else:
        assert isinstance(result, str)


def test_corrupt_parquet_falls_back(kit: Any, tmp_path: Path) -> None:
    data = write_events(tmp_path, clean_rows(kit))
    whole = (data / "events" / "part-00.parquet").read_bytes()
    (data / "events" / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    assert isinstance(assert_same(data), str)
    assert general(data)[0].height == 6


def test_many_rows_with_ties_across_files(tmp_path: Path) -> None:
    """Enough rows for parallel group-bys: ties, several acceptances, rejects, 4 files."""
    n, p = 40_000, 4_294_967_291  # p prime: i -> (a * i + b) % p is a permutation of [0, p)
    r = pl.col("r")
    accepted = pl.col("event") == "accepted"
    frame = (
        pl.select(r=(pl.int_range(1, n + 1) * 2_654_435_761 + 12_345) % p)
        .select(
            pl.format("e{}", r).alias("event_id"),  # distinct
            pl.when(r % 97 != 0).then(pl.format("I{}", r // 7 % 3000)).alias("item_id"),
            pl.lit(pl.Series([*EVENT_TYPES, "teleported"])).gather(r // 11 % 8).alias("event"),
            (BASE_US + r // 13 % 24 * 3_600_000_000).cast(UTC).alias("ts"),
            pl.lit(pl.Series(["F10", "F2", "Ž", "A"])).gather(r // 17 % 4).alias("facility"),
        )
        .with_columns(
            *(
                pl.when(accepted).then(pl.lit(v)).alias(c)
                for c, v in (("product", "express"), ("origin", "CN-BJ"), ("destination", "CN-SH"))
            ),
            pl.when(accepted).then(pl.col("ts")).alias("promised_by"),
            pl.when(pl.col("event") == "delivery_failed").then(pl.lit("refused")).alias("reason"),
        )
        .select(FILE_SCHEMA.keys())
    )
    assert frame.schema == pl.Schema(FILE_SCHEMA)
    assert frame.get_column("event_id").n_unique() == n
    (tmp_path / "events").mkdir()
    for i in range(4):
        frame.gather_every(4, i).write_parquet(tmp_path / "events" / f"p{i}.parquet")
    got = fast(assert_same(tmp_path))
    rejects = (frame.get_column("event") == "teleported") | frame.get_column("item_id").is_null()
    assert got.rejected == int(rejects.sum()) > 0
    assert (got.state.height, got.last) == (3000, BASE + dt.timedelta(hours=23))
    assert (got.state.get_column("accepted_event_id").is_not_null()).sum() > 2000
    fast(assert_same(tmp_path, BASE + dt.timedelta(hours=11)))


def test_no_events_falls_back(tmp_path: Path) -> None:
    assert isinstance(scan_state([]), str)
    data = write_parts(tmp_path, [[]])
    assert isinstance(assert_same(data), str)
    assert general(data)[0].height == 0


# --- property over the rules table: fast path = general path = naive reference -------

RULES = {rule.name: rule for rule in EVENT_RULES}
RANK = {rule.name: rank for rank, rule in enumerate(EVENT_RULES)}
ALIASES = [a for rule in EVENT_RULES for a in rule.aliases]
# Few instants (ties are common); one a microsecond off, one before 1970 (negative keys).
INSTANTS = [
    BASE,
    BASE + dt.timedelta(hours=1),
    BASE + dt.timedelta(hours=1, microseconds=1),
    BASE + dt.timedelta(hours=5),
    dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
]
# "F2" > "F10" byte-wise, and a non-ASCII name ranks above both.
FACILITIES = ["F10", "F2", "Ž"]
NULLABLE = ("item_id", "ts", "facility", "event_id")
#: Values of the fields an event type requires (``EventRule.requires``).
REQUIRED_VALUES = {
    "product": ["express", "standard"],
    "origin": ["CN-BJ", "CN-XZ"],
    "destination": ["CN-SH", "CN-GD"],
    "reason": ["addressee_absent", "refused"],
}


def canonical(text: str | None) -> str | None:
    """The event type a text names, as validation reads it (stripped, any case, aliases)."""
    if text is None:
        return None
    t = text.strip().lower()
    names = {r.name: r.name for r in EVENT_RULES} | {
        a.lower(): r.name for r in EVENT_RULES for a in r.aliases
    }
    return names.get(t)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def is_reject(row: Row) -> bool:
    """A row validation leaves out: a missing common field, an unknown event, a missing
    field its event type requires."""
    name = canonical(row["event"])
    if name is None or any(_blank(row[c]) for c in NULLABLE):
        return True
    return any(_blank(row[c]) for c in RULES[name].requires)


def reference(rows: Sequence[Row], as_of: dt.datetime | None) -> dict[str, Row]:
    """Per item, from the table's rows as data: the acceptance (earliest, then smallest
    event id), the first attempt (earliest, then earlier stage), the first delivery and
    return, the last scan (latest, then later stage, then greatest facility)."""
    by_item: dict[str, list[Row]] = {}
    for r in rows:
        if not is_reject(r) and (as_of is None or r["ts"] <= as_of):
            by_item.setdefault(r["item_id"], []).append({**r, "event": canonical(r["event"])})
    out = {}
    for item, evs in by_item.items():

        def having(effect: Effect, evs: list[Row] = evs) -> list[Row]:
            return [e for e in evs if effect in RULES[e["event"]].effects]

        acc = min(having(Effect.ACCEPTS), key=lambda e: (e["ts"], e["event_id"]), default=None)
        first = min(
            having(Effect.ATTEMPTS), key=lambda e: (e["ts"], RANK[e["event"]]), default=None
        )
        last = max(evs, key=lambda e: (e["ts"], RANK[e["event"]], e["facility"]))
        out[item] = {
            "accepted_at": acc and acc["ts"],
            "accepted_event_id": acc and acc["event_id"],
            **{c: acc and acc[c] for c in ("product", "origin", "destination")},
            "promised_by_given": acc and acc["promised_by"],
            "first_attempt": first and (first["ts"], first["event"]),
            "delivered_at": min((e["ts"] for e in having(Effect.DELIVERS)), default=None),
            "returned_at": min((e["ts"] for e in having(Effect.RETURNS)), default=None),
            "last": (last["ts"], last["event"]),
            "last_facility": last["facility"],
        }
    return out


def _decode(key: int | None) -> tuple[dt.datetime, str] | None:
    """A packed key as (instant, event type), by plain arithmetic."""
    if key is None:
        return None
    us, rank = divmod(key, RANK_BITS)
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us), EVENT_TYPES[rank]


def decoded(state: pl.DataFrame) -> dict[str, Row]:
    out = {}
    for r in state.to_dicts():
        item = r.pop("item_id")
        r["first_attempt"], r["last"] = _decode(r.pop("attempt_key")), _decode(r.pop("last_key"))
        out[item] = r
    return out


def _event_text(name: str, spelled: bool) -> st.SearchStrategy[str | None]:
    """A text naming ``name``: itself, or when spelled one of its aliases in any case, padded."""
    if not spelled:
        return st.just(name)
    spellings = [name, name.title(), f" {name}", *RULES[name].aliases]
    spellings += [a.lower() for a in RULES[name].aliases]
    return st.sampled_from(spellings) | st.just(name)


@st.composite
def event_rows(draw: st.DrawFn, spelled: bool, dirty: bool) -> Row:
    name = draw(st.sampled_from(EVENT_TYPES))
    row: Row = {
        "event_id": "",  # given after drawing (distinct), unless nulled below
        "item_id": draw(st.sampled_from(["I0", "I1", "I2"])),
        "event": draw(_event_text(name, spelled)),
        "ts": draw(st.sampled_from(INSTANTS)),
        "facility": draw(st.sampled_from(FACILITIES)),
        "product": None, "origin": None, "destination": None, "promised_by": None, "reason": None,
    }  # fmt: skip
    for field_name in RULES[name].requires:
        row[field_name] = draw(st.sampled_from(REQUIRED_VALUES[field_name]))
    if Effect.ACCEPTS in RULES[name].effects:
        row["promised_by"] = draw(st.none() | st.sampled_from(INSTANTS))
    if dirty:  # at most one defect: a null common field, an unknown event, a lost requirement
        defect = draw(st.none() | st.none() | st.sampled_from([*NULLABLE, "event", "requires"]))
        if defect == "event":
            row["event"] = draw(st.sampled_from(["teleported", " ", None]))
        elif defect == "requires" and RULES[name].requires:
            row[draw(st.sampled_from(RULES[name].requires))] = draw(
                st.sampled_from([None, "", " \t"])
            )
        elif defect in NULLABLE:
            row[defect] = None
    return row


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spelled=st.booleans(), dirty=st.booleans(), data=st.data())
def test_events_mean_what_the_table_says_on_both_paths(
    tmp_path_factory: pytest.TempPathFactory, spelled: bool, dirty: bool, data: st.DataObject
) -> None:
    rows = data.draw(st.lists(event_rows(spelled, dirty), min_size=1, max_size=16), label="rows")
    for i, row in enumerate(rows):
        row["event_id"] = None if row["event_id"] is None else f"e{i:03d}"
    # Duplicates: exact copies read again (any file, any position), or an id reused by
    # another row (then which read wins is the general path's order: the fast path falls back).
    copies = data.draw(st.just([]) | st.lists(st.sampled_from(rows), max_size=3), label="copies")
    rows = rows + [dict(r) for r in copies]
    conflict = data.draw(st.none() | st.none() | st.integers(0, len(rows) - 1), label="conflict")
    if conflict is not None and len(rows) > 1:
        rows[(conflict + 1) % len(rows)] = {
            **rows[(conflict + 1) % len(rows)],
            "event_id": rows[conflict]["event_id"],
        }
    order = data.draw(st.permutations(range(len(rows))), label="read order")
    files = data.draw(
        st.lists(st.integers(0, 2), min_size=len(rows), max_size=len(rows)), label="files"
    )
    n_files = max(files) + 1
    parts = [[rows[i] for i in order if files[i] == f] for f in range(n_files)]
    as_of = data.draw(
        st.none() | st.sampled_from([*INSTANTS, BASE + dt.timedelta(minutes=30)]), label="as_of"
    )
    text = data.draw(st.sets(st.integers(0, n_files - 1), max_size=2), label="text files")
    folder = write_parts(tmp_path_factory.mktemp("prop"), parts)
    for i in text:  # a live feed in JSONL beside the Parquet files
        (folder / "events" / f"part-{i:02d}.parquet").unlink()
        write_text(folder / "events" / f"part-{i:02d}.jsonl", parts[i])

    result = assert_same(folder, as_of)  # fast path (when taken) = general path

    ids = [r["event_id"] for r in rows if r["event_id"] is not None]
    by_id: dict[str, set[str]] = {}
    for r in rows:
        if r["event_id"] is not None:
            by_id.setdefault(r["event_id"], set()).add(repr(sorted(r.items())))
    conflicting = any(len(v) > 1 for v in by_id.values())
    if not conflicting:  # exact copies only: the general path = the table's reference
        state, _, _ = general(folder, as_of)
        assert decoded(state) == reference(rows, as_of)
    repeated = len(set(ids)) < len(ids)
    needs_mapping = any(r["event"] not in EVENT_TYPES and canonical(r["event"]) for r in rows)
    gaps = any(
        canonical(r["event"])
        and any(_blank(r[c]) for c in RULES[canonical(r["event"])].requires)
        and Effect.ACCEPTS in RULES[canonical(r["event"])].effects
        for r in rows
    )
    if repeated and not text:
        assert isinstance(result, str), "a repeated event id must fall back"
    parquet_rows = any(parts[i] for i in range(n_files) if i not in text)
    usable = any(r["ts"] is not None and r["facility"] is not None for r in rows)
    if not text and not repeated and not needs_mapping and not gaps and usable and parquet_rows:
        # Row rejects (nulls, unknown events, failures without a reason) are row checks
        # of the fast path: it must not fall back for them, and counts them.
        got = fast(result)
        if as_of is None:
            assert got.rejected == sum(map(is_reject, rows))
    event("fast path" if isinstance(result, ScannedState) else "fell back")
    event(f"spelled={spelled} dirty={dirty} copies={len(copies)} conflict={conflict is not None}")
    if isinstance(result, ScannedState) and as_of is None:
        # Rows left out: the general path's own count (rows read - rows used).
        ds = load_data_dir(folder)
        assert ds.events_read is not None
        assert result.rejected == ds.events_read().rows - collect_state_counted(ds.events)[3]


# --- the snapshot uses the fast path with the same answer --------------------------


def test_snapshot_from_files_equals_snapshot_from_rows(kit: Any, tmp_path: Path) -> None:
    data = write_events(tmp_path, clean_rows(kit), 2)
    ds = load_data_dir(data)
    assert ds.event_files and isinstance(scan(data), ScannedState)
    plain = DataSet(
        events=ds.events, complaints=ds.complaints, facilities=ds.facilities, standards=ds.standards
    )
    assert not plain.event_files
    for as_of in (None, utc("2027-01-12T06:00")):
        from_files = Snapshot.from_dataset(load_data_dir(data), as_of)
        from_rows = Snapshot.from_dataset(plain, as_of)
        assert from_files.lifecycle.height == (6 if as_of is None else 4)
        assert_frame_equal(
            from_files.lifecycle.sort("item_id"), from_rows.lifecycle.sort("item_id")
        )
        assert (from_files.as_of, from_files.first_event_at) == (
            from_rows.as_of,
            from_rows.first_event_at,
        )


def test_stage_tables_of_the_fast_path_equal_the_general_paths(kit: Any, tmp_path: Path) -> None:
    """The fast path reads the stage scans straight from the Parquet files (only the types
    the stage tables keep): the same tables as from the validated events, with every type
    of the table in the folder."""
    rows = clean_rows(kit)
    assert {r["event"] for r in rows} == set(EVENT_TYPES)
    data = write_events(tmp_path / "data", rows, 2)
    fast_stages = Snapshot.from_dataset(load_data_dir(data)).stages
    general_stages = kit.snapshot(rows).stages
    assert fast_stages.scans.height > 0 and fast_stages.items.height > 0
    for got, want in (
        (fast_stages.scans, general_stages.scans),
        (fast_stages.items, general_stages.items),
    ):
        assert_frame_equal(got.sort(got.columns), want.sort(want.columns), categorical_as_str=True)
