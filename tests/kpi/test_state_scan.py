"""The state's fast path (``scan_state``) against the general path (``collect_state``).

Every answer of ``scan_state`` that is a ``ScannedState`` must equal
``collect_state(load_data_dir(d).events, as_of)``; folders that break one of the
proofs in ``kpi.state_scan``'s docstring must fall back (a string saying why).
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


@pytest.mark.parametrize(
    "as_of",
    [
        "2027-01-11T00:00",  # before every event: nothing
        "2027-01-11T01:00",  # exactly the first event
        "2027-01-11T06:00",  # the three-way tie of A1
        "2027-01-12T05:00",  # B2's delivered / out_for_delivery tie
        "2027-01-12T08:59:59.999999",
        "2027-01-13T09:00",
        "2030-01-01T00:00",  # after everything
    ],
)
def test_as_of_cuts_like_the_general_path(kit: Any, tmp_path: Path, as_of: str) -> None:
    data = write_events(tmp_path, clean_rows(kit), 2)
    got = fast(assert_same(data, utc(as_of)))
    assert got.rejected is None
    want_items = {r["item_id"] for r in clean_rows(kit) if r["ts"] <= utc(as_of)}
    assert set(items(got)) == want_items
    if not want_items:
        assert (got.first, got.last) == (None, None)


def test_as_of_hides_the_later_acceptance_winner(kit: Any, tmp_path: Path) -> None:
    data = write_events(tmp_path, clean_rows(kit))
    got = fast(assert_same(data, utc("2027-01-11T02:00")))
    assert items(got)["B2"]["accepted_event_id"] == "b-1"
    assert "C3" not in items(got)


# --- row-level rejects -----------------------------------------------------------

# A late scan of A1 at the greatest facility name: if it were wrongly kept, A1's last
# event and facility (and the folder's last instant) would change.
LATE = "2027-01-14T12:00"


def _late(kit: Any, **changes: Any) -> Row:
    return {**kit.ev("A1", "arrived", LATE, "ZZ"), **changes}


ROW_REJECTS: dict[str, dict[str, Any]] = {
    "unknown event": {"event": "teleported"},
    "padded unknown event": {"event": "  teleported "},
    "blank event": {"event": " "},
    "null event": {"event": None},
    "null ts": {"ts": None},
    "null item_id": {"item_id": None},
    "null facility": {"facility": None},
    "null event_id": {"event_id": None},
    "failed attempt without reason": {"event": "delivery_failed"},
    "failed attempt with a blank reason": {"event": "delivery_failed", "reason": ""},
    "failed attempt with a whitespace reason": {"event": "delivery_failed", "reason": " \t"},
}
#: Row rejects that the docstring's proofs do not cover: they need the general path.
ROW_REJECTS_FALLING_BACK: dict[str, dict[str, Any]] = {
    "accepted without product": {"event": "accepted", "origin": "CN-BJ", "destination": "CN-SH"},
    "accepted without destination": {"event": "accepted", "product": "x", "origin": "CN-BJ"},
}


@pytest.mark.parametrize("case", sorted(ROW_REJECTS))
def test_row_rejects_are_left_out_on_the_fast_path(kit: Any, tmp_path: Path, case: str) -> None:
    data = write_events(tmp_path / "data", [*clean_rows(kit), _late(kit, **ROW_REJECTS[case])], 2)
    got = fast(assert_same(data))
    assert got.rejected == 1 == validation_rejects(data, tmp_path / "rejects")
    assert got.last == utc("2027-01-13T23:00")
    assert items(got)["A1"]["last_facility"] == "P2"
    assert fast(assert_same(data, utc(LATE))).state.height == 6


@pytest.mark.parametrize("case", sorted(ROW_REJECTS_FALLING_BACK))
def test_rejects_of_required_per_event_fields_fall_back(
    kit: Any, tmp_path: Path, case: str
) -> None:
    data = write_events(tmp_path, [*clean_rows(kit), _late(kit, **ROW_REJECTS_FALLING_BACK[case])])
    assert isinstance(assert_same(data), str)
    state, _, last = general(data)
    assert last == utc("2027-01-13T23:00")  # the general path leaves the row out
    assert state.filter(pl.col("item_id") == "A1").item(0, "last_facility") == "P2"


def test_many_rejects_in_many_files_are_counted(kit: Any, tmp_path: Path) -> None:
    bad = [_late(kit, **change) for change in ROW_REJECTS.values()]
    # An item whose every row is a reject does not appear.
    bad += [kit.ev("Z9", "teleported", "2027-01-12T00:00"), kit.ev(None, "arrived", LATE)]
    rows = clean_rows(kit)
    data = write_parts(tmp_path / "data", [rows[:7] + bad[:3], bad[3:6], rows[7:] + bad[6:]])
    got = fast(assert_same(data))
    assert got.rejected == len(bad) == validation_rejects(data, tmp_path / "rejects")
    assert "Z9" not in items(got)


def test_only_rejects_in_the_window(kit: Any, tmp_path: Path) -> None:
    rows = [kit.ev("A1", "teleported", "2027-01-11T00:00"), *clean_rows(kit)]
    data = write_events(tmp_path, rows)
    got = fast(assert_same(data, utc("2027-01-11T00:30")))
    assert got.state.height == 0 and (got.first, got.last) == (None, None)


# --- proof violations fall back ----------------------------------------------------


def _first_changed(kit: Any, **changes: Any) -> list[Row]:
    rows = clean_rows(kit)
    rows[0] = {**rows[0], **changes}
    return rows


def _failure_changed(kit: Any, **changes: Any) -> list[Row]:
    rows = clean_rows(kit)
    i = next(i for i, r in enumerate(rows) if r["event"] == "delivery_failed")
    rows[i] = {**rows[i], **changes}
    return rows


def _plus(kit: Any, *args: Any, **kw: Any) -> list[Row]:
    """The clean rows plus one more event (``kit.ev`` arguments)."""
    return [*clean_rows(kit), kit.ev(*args, **kw)]


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
    "capitalised event": lambda kit: _first_changed(kit, event="Accepted"),
    "padded event": lambda kit: _first_changed(kit, event=" accepted"),
    "UPU alias": lambda kit: _first_changed(kit, event="EMA"),
    "lowercase UPU alias": lambda kit: _plus(kit, "C3", "emb", "2027-01-12T01:00"),
    "padded facility": lambda kit: _first_changed(kit, facility="HUB1 "),
    "blank facility": lambda kit: _first_changed(kit, facility=""),
    "padded product": lambda kit: _first_changed(kit, product=" express"),
    "blank origin": lambda kit: _first_changed(kit, origin=""),
}


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_reasonless_failed_attempt_is_a_counted_reject(
    kit: Any, tmp_path: Path, reason: str | None
) -> None:
    data = write_events(tmp_path / "data", _failure_changed(kit, reason=reason), 2)
    got = fast(assert_same(data))
    assert got.rejected == 1 == validation_rejects(data, tmp_path / "rejects")
    # D4's only attempt (the failure) is gone: no first attempt; E5 keeps its own.
    assert items(got)["D4"]["attempt_key"] is None
    assert items(got)["E5"]["attempt_key"] is not None


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


def test_text_files_beside_parquet_are_merged_in(kit: Any, tmp_path: Path) -> None:
    """A live feed (CSV, JSONL) beside typed Parquet: Parquet on the fast path, the text
    files validated, the two states merged; items span both (B2's delivery, F6)."""
    rows = clean_rows(kit)
    data = write_events(tmp_path, rows[:8], 2)
    write_text(data / "events" / "late.csv", rows[8:12])
    write_text(data / "events" / "live.jsonl", rows[12:])
    assert len(source_files(data, Kind.EVENTS)) == 4
    got = fast(assert_same(data))
    assert got.rejected == 0 and got.last == utc("2027-01-13T23:00") and got.text_files == 2
    assert items(got)["B2"]["delivered_at"] == utc("2027-01-12T05:00")
    for as_of in ("2027-01-11T06:00", "2027-01-12T05:00", "2027-01-13T09:00"):
        assert fast(assert_same(data, utc(as_of))).rejected is None


def test_rejects_and_unreadable_text_files_are_counted(kit: Any, tmp_path: Path) -> None:
    rows = clean_rows(kit)
    data = write_events(tmp_path / "data", rows[:10])
    live = write_text(data / "events" / "live.jsonl", [*rows[10:], _late(kit, event="x")])
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


# --- property: the fast path equals the general path -----------------------------

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
ITEMS = ["I0", "I1", "I2", "I3"]
NULLABLE = ("item_id", "ts", "facility", "event_id")

raw_event = st.fixed_dictionaries(
    {
        "item_id": st.sampled_from(ITEMS),
        "event": st.sampled_from([*EVENT_TYPES, "teleported"]),
        "ts": st.sampled_from(INSTANTS),
        "facility": st.sampled_from(FACILITIES),
        "product": st.sampled_from(["express", "standard"]),
        "origin": st.sampled_from(["CN-BJ", "CN-XZ"]),
        "destination": st.sampled_from(["CN-SH", "CN-GD"]),
        "promised_by": st.none() | st.sampled_from(INSTANTS),
        "reason": st.sampled_from(["addressee_absent", "refused"]),
        # At most one field of the row nulled (a row-level reject).
        "null": st.none() | st.none() | st.none() | st.sampled_from(NULLABLE),
        "file": st.integers(0, 2),
    }
)


def _finish(raw: list[Row], ids: list[int], allow_nulls: bool, allow_unknown: bool) -> list[Row]:
    """Rows in the file schema: per-event fields only where they belong, distinct ids."""
    out = []
    for r, n in zip(raw, ids, strict=True):
        row = {c: r.get(c) for c in EVENT_SCHEMA} | {"event_id": f"e{n:03d}", "file": r["file"]}
        if row["event"] not in EVENT_TYPES and not allow_unknown:
            row["event"] = "arrived"
        if row["event"] != "accepted":
            row.update(product=None, origin=None, destination=None, promised_by=None)
        if row["event"] != "delivery_failed":
            row["reason"] = None
        if allow_nulls and r["null"] is not None:
            row[r["null"]] = None
        out.append(row)
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(dirty=st.booleans(), raw=st.lists(raw_event, min_size=1, max_size=14), data=st.data())
def test_fast_path_equals_general_path(
    tmp_path_factory: pytest.TempPathFactory, dirty: bool, raw: list[Row], data: st.DataObject
) -> None:
    ids = data.draw(st.permutations(range(len(raw))), label="ids")
    rows = _finish(raw, list(ids), allow_nulls=dirty, allow_unknown=dirty)
    repeat = data.draw(st.none() | st.none() | st.integers(0, len(rows) - 1), label="repeat")
    if repeat is not None and len(rows) > 1:
        # Another row takes this row's id (different content: its own ts/item/...).
        rows[(repeat + 1) % len(rows)]["event_id"] = rows[repeat]["event_id"]
    n_files = max(r["file"] for r in rows) + 1
    parts = [
        [{c: r[c] for c in EVENT_SCHEMA} for r in rows if r["file"] == f] for f in range(n_files)
    ]
    as_of = data.draw(
        st.none() | st.sampled_from([*INSTANTS, BASE + dt.timedelta(minutes=30)]), label="as_of"
    )
    # Some files may be a live feed in JSONL beside the Parquet ones.
    text = data.draw(st.sets(st.integers(0, n_files - 1), max_size=2), label="text files")
    folder = write_parts(tmp_path_factory.mktemp("prop"), parts)
    for i in text:
        (folder / "events" / f"part-{i:02d}.parquet").unlink()
        write_text(folder / "events" / f"part-{i:02d}.jsonl", parts[i])

    result = assert_same(folder, as_of)

    ids_seen = [r["event_id"] for r in rows if r["event_id"] is not None]
    repeated = len(set(ids_seen)) < len(ids_seen)
    rejects = sum(
        r["event"] not in EVENT_TYPES or any(r[c] is None for c in (*NULLABLE, "event"))
        for r in rows
    )
    usable = any(r["ts"] is not None and r["facility"] is not None for r in rows)
    if isinstance(result, ScannedState) and as_of is None:
        # Rows left out: the general path's own count (rows read - rows used).
        ds = load_data_dir(folder)
        assert ds.events_read is not None
        used = collect_state_counted(ds.events)[3]
        assert result.rejected == ds.events_read().rows - used
    if text:
        pass  # text files de-duplicate their own ids; the equality above is the check
    elif repeated:
        assert isinstance(result, str), "a repeated event id must fall back"
    elif usable:
        # Nulls and unknown events are row checks: the fast path keeps them out itself.
        got = fast(result)
        if as_of is None:
            assert got.rejected == rejects
    event(
        "fast path"
        if isinstance(result, ScannedState)
        else ("fell back" + (" (repeated id)" if repeated else ""))
    )
    event(f"dirty={dirty} rejects={min(rejects, 3)}{'+' if rejects > 3 else ''}")
    event(f"text files: {len(text)} of {n_files}")
    parquet_rows = any(parts[i] for i in range(n_files) if i not in text)
    if not dirty and not repeated and parquet_rows:
        assert rejects == 0 and isinstance(result, ScannedState)


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
