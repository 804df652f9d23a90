"""Reading a data folder: formats, rejection reasons, duplicates, aliases, offsets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from kpi.contract import EVENT_SCHEMA, Kind
from kpi.sources.files import RawBatch, read_file
from kpi.sources.folder import (
    latest_complaints,
    load_data_dir,
    validate_data_dir,
    validated,
    validated_frames,
)
from kpi.sources.validate import ROW, ids_distinct

Writer = Callable[[str, list[dict[str, str | None]]], Path]

GOOD: list[dict[str, str | None]] = [
    {
        "event_id": "e1",
        "item_id": "RR123456785CN",
        "event": "accepted",
        "ts": "2027-01-11T08:00:00+08:00",
        "facility": "CO-GD-001",
        "product": "express",
        "origin": "CN-GD",
        "destination": "CN-BJ",
        "promised_by": "2027-01-13T23:59:59+08:00",
    },
    {
        "event_id": "e2",
        "item_id": "RR123456785CN",
        "event": "EMB",
        "ts": "2027-01-11T04:00:00Z",
        "facility": "PC-GD-01",
    },
    {
        "event_id": "e3",
        "item_id": "RR123456785CN",
        "event": "emh",
        "ts": "2027-01-12T09:30:00.5-05:00",
        "facility": "DO-BJ-001",
        "reason": "addressee_absent",
    },
    {
        "event_id": "e4",
        "item_id": "OP-000042",
        "event": "Delivered",
        "ts": "2027-01-12 10:00:00+0100",
        "facility": "DO-BJ-001",
    },
]

BAD: list[tuple[dict[str, str | None], str, str | None]] = [
    (
        {
            "event_id": "b1",
            "item_id": "",
            "event": "arrived",
            "ts": "2027-01-11T08:00:00Z",
            "facility": "F",
        },
        "missing_field",
        "item_id",
    ),
    (
        {
            "event_id": "b2",
            "item_id": "X",
            "event": "teleported",
            "ts": "2027-01-11T08:00:00Z",
            "facility": "F",
        },
        "unknown_event",
        "event",
    ),
    (
        {"event_id": "b3", "item_id": "X", "event": "arrived", "ts": "yesterday", "facility": "F"},
        "bad_timestamp",
        "ts",
    ),
    (
        {
            "event_id": "b4",
            "item_id": "X",
            "event": "arrived",
            "ts": "2027-01-11T08:00:00",
            "facility": "F",
        },
        "timestamp_without_offset",
        "ts",
    ),
    (
        {
            "event_id": "b5",
            "item_id": "X",
            "event": "accepted",
            "ts": "2027-01-11T08:00:00Z",
            "facility": "F",
            "product": "express",
            "origin": "CN-GD",
        },
        "missing_field",
        "destination",
    ),
    (
        {
            "event_id": "b6",
            "item_id": "X",
            "event": "delivery_failed",
            "ts": "2027-01-11T08:00:00Z",
            "facility": "F",
        },
        "missing_field",
        "reason",
    ),
    (
        {
            "event_id": "b7",
            "item_id": "X",
            "event": "accepted",
            "ts": "2027-01-11T08:00:00Z",
            "facility": "F",
            "product": "express",
            "origin": "CN-GD",
            "destination": "CN-GD",
            "promised_by": "soon",
        },
        "bad_timestamp",
        "promised_by",
    ),
    (
        {
            "event_id": "b8",
            "item_id": "X",
            "event": "arrived",
            "ts": "2027-13-45T08:00:00Z",
            "facility": "F",
        },
        "bad_timestamp",
        "ts",
    ),
    (
        {
            "event_id": "b9",
            "item_id": "X",
            "event": "arrived",
            "ts": "2027-01-11T08:00:00Z",
            "facility": None,
        },
        "missing_field",
        "facility",
    ),
]


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "jsonl.gz", "parquet"])
def test_every_format_gives_the_same_frame(
    tmp_path: Path, rows_writer: Writer, suffix: str
) -> None:
    rows_writer(f"{suffix}/events/part.{suffix}", GOOD)
    rows_writer("ref/events/part.csv", GOOD)
    got = load_data_dir(tmp_path / suffix).events.collect()
    ref = load_data_dir(tmp_path / "ref").events.collect()
    assert got.schema == pl.Schema(EVENT_SCHEMA)
    assert got.equals(ref)


def test_aliases_offsets_and_utc(tmp_path: Path, rows_writer: Writer) -> None:
    rows_writer("events/a.csv", GOOD)
    ev = load_data_dir(tmp_path).events.collect()
    assert ev["event"].cast(pl.String).to_list() == [
        "accepted",
        "arrived",
        "delivery_failed",
        "delivered",
    ]
    utc = dt.UTC
    assert ev["ts"].to_list() == [
        dt.datetime(2027, 1, 11, 0, 0, tzinfo=utc),
        dt.datetime(2027, 1, 11, 4, 0, tzinfo=utc),
        dt.datetime(2027, 1, 12, 14, 30, 0, 500000, tzinfo=utc),
        dt.datetime(2027, 1, 12, 9, 0, tzinfo=utc),
    ]
    assert ev["promised_by"][0] == dt.datetime(2027, 1, 13, 15, 59, 59, tzinfo=utc)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_every_rejection_reason_and_good_rows_still_count(
    tmp_path: Path, rows_writer: Writer, suffix: str
) -> None:
    rows_writer(f"events/mixed.{suffix}", GOOD[:2] + [b for b, _, _ in BAD] + GOOD[2:])
    reports = validate_data_dir(tmp_path)
    (rep,) = reports
    assert rep.accepted == len(GOOD)
    assert rep.rows_read == len(GOOD) + len(BAD)
    expected: dict[str, int] = {}
    for _, reason, _ in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(rep.rejected) == expected
    rejects = pl.read_ndjson(tmp_path / "_rejects" / "events.jsonl")
    by_row = {r["row"]: (r["reason"], r["field"]) for r in rejects.to_dicts()}
    for i, (_, reason, field) in enumerate(BAD, start=3):
        assert by_row[i] == (reason, field)
    # the raw row is kept for inspection
    assert "teleported" in rejects.filter(pl.col("reason") == "unknown_event")["raw"][0]
    assert load_data_dir(tmp_path).events.collect().height == len(GOOD)


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_validated_frames_split_as_the_lazy_plans_do(
    tmp_path: Path, rows_writer: Writer, suffix: str
) -> None:
    """The exporter's split (reasons worked out for failing rows only) gives the good rows
    and the rejects (reason, field, raw row) of ``validated``'s two plans, row for row;
    a clean batch has no rejects."""
    rows = GOOD[:2] + [b for b, _, _ in BAD] + GOOD[2:]
    if suffix == "parquet":
        # Typed columns (as a Parquet producer writes them), some values missing.
        path = tmp_path / "events" / "typed.parquet"
        path.parent.mkdir(parents=True)
        frame = pl.DataFrame(rows, schema=dict.fromkeys(EVENT_SCHEMA, pl.String))
        ts = pl.col("ts").str.to_datetime(time_zone="UTC", strict=False)
        frame.with_columns(ts).write_parquet(path)
    else:
        path = rows_writer(f"events/mixed.{suffix}", rows)
    batch = read_file(path)
    good, bad = validated_frames(batch, Kind.EVENTS)
    want_good, want_bad = (f.collect() for f in validated(batch, Kind.EVENTS))
    assert bad.height > 0
    assert_frame_equal(good, want_good)
    # In row order (the lazy plan's join leaves its order open).
    assert bad["row"].is_sorted()
    assert_frame_equal(bad, want_bad.sort("source", "row"))
    clean = RawBatch(batch.frame.filter(pl.col(ROW).is_in(want_good[ROW].implode())), [])
    good, bad = validated_frames(clean, Kind.EVENTS)
    assert_frame_equal(good, want_good)
    assert bad.height == 0 and bad.schema == want_bad.schema


def test_unknown_complaint_category_and_bad_bool(tmp_path: Path) -> None:
    (tmp_path / "complaints").mkdir()
    (tmp_path / "complaints" / "c.jsonl").write_text(
        '{"complaint_id": "c1", "opened_at": "2027-01-11T08:00:00Z", "category": "delay", "region": "CN-GD", "valid": true}\n'
        '{"complaint_id": "c2", "opened_at": "2027-01-11T08:00:00Z", "category": "rudeness", "region": "CN-GD"}\n'
        '{"complaint_id": "c3", "opened_at": "2027-01-11T08:00:00Z", "category": "loss", "region": "CN-GD", "valid": "maybe"}\n'
        '{"complaint_id": "c4", "opened_at": "2027-01-11T08:00:00Z", "category": "LOSS", "region": "CN-GD", "valid": "false"}\n'
    )
    (rep,) = validate_data_dir(tmp_path)
    assert dict(rep.rejected) == {"unknown_category": 1, "bad_type": 1}
    got = load_data_dir(tmp_path).complaints.collect()
    assert got["complaint_id"].to_list() == ["c1", "c4"]
    assert got["valid"].to_list() == [True, False]


def test_duplicates_count_once_across_files(tmp_path: Path, rows_writer: Writer) -> None:
    rows_writer("events/a.csv", GOOD)
    rows_writer("events/b.jsonl", GOOD[1:3])
    reports = validate_data_dir(tmp_path)
    assert [r.duplicate_ids for r in reports] == [0, 2]
    assert load_data_dir(tmp_path).events.collect().height == len(GOOD)


def test_first_read_wins_whether_or_not_ids_repeat(tmp_path: Path, rows_writer: Writer) -> None:
    # The reader skips de-duplication only when the raw ids cannot repeat: ids that
    # differ only by padding, or a later read of an id with other content, must still
    # leave the first read.
    rows_writer("events/a.csv", GOOD)
    first = load_data_dir(tmp_path).events.collect()
    assert first["event_id"].to_list() == ["e1", "e2", "e3", "e4"]
    later = dict(GOOD[3], event_id=" e4 ", facility="DO-XX-999")
    rows_writer("events/b.jsonl", [later, dict(GOOD[1], event_id="e5")])
    got = load_data_dir(tmp_path).events.collect()
    assert got["event_id"].to_list() == ["e1", "e2", "e3", "e4", "e5"]
    assert got.filter(pl.col("event_id") == "e4")["facility"].item() == "DO-BJ-001"


def test_ids_distinct_is_certain_only_when_true() -> None:
    def frame(ids: list[object]) -> pl.LazyFrame:
        return pl.LazyFrame({"event_id": ids})

    assert ids_distinct([frame(["a", "b"]), frame(["c", None, "  ", ""])], Kind.EVENTS)
    assert not ids_distinct([frame(["a", "b"]), frame([" b"])], Kind.EVENTS)
    assert not ids_distinct([frame([1, 2]), frame(["2"])], Kind.EVENTS)
    assert ids_distinct([pl.LazyFrame({"item_id": ["x"]})], Kind.EVENTS)


def test_invalid_s10_is_a_signal_not_a_reject(tmp_path: Path, rows_writer: Writer) -> None:
    rows = [dict(GOOD[1], event_id="x1", item_id="RR123456784CN"), dict(GOOD[1], event_id="x2")]
    rows_writer("events/a.csv", rows)
    (rep,) = validate_data_dir(tmp_path)
    assert (rep.accepted, rep.invalid_s10, rep.rejected_total) == (2, 1, 0)


def test_corrupt_files_never_stop_the_run(tmp_path: Path, rows_writer: Writer) -> None:
    rows_writer("events/good.csv", GOOD)
    good_parquet = rows_writer("events/whole.parquet", GOOD[:1])
    data = good_parquet.read_bytes()
    (tmp_path / "events" / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "events" / "binary.csv").write_bytes(bytes(range(256)) * 10)
    gz = rows_writer("events/cut.jsonl.gz", GOOD * 50).read_bytes()
    (tmp_path / "events" / "cut.jsonl.gz").write_bytes(gz[: len(gz) - 20])
    (tmp_path / "events" / "junk.jsonl").write_bytes(b'{"event_id": 1\n' + b"x" * (2 << 20) + b"\n")
    reports = {Path(r.source).name: r for r in validate_data_dir(tmp_path)}
    assert reports["truncated.parquet"].rejected == {"unreadable_file": 1}
    assert reports["binary.csv"].rejected == {"unreadable_file": 1}
    assert reports["cut.jsonl.gz"].rejected["unreadable_file"] == 1
    assert reports["junk.jsonl"].rejected == {"malformed_row": 1, "line_too_long": 1}
    assert reports["good.csv"].accepted == len(GOOD)
    events = load_data_dir(tmp_path).events.collect()
    assert set(events["event_id"]) == {"e1", "e2", "e3", "e4"}


def test_naive_parquet_timestamps_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    pl.DataFrame(
        {
            "event_id": ["n1"],
            "item_id": ["X"],
            "event": ["arrived"],
            "ts": [dt.datetime(2027, 1, 1, 8)],
            "facility": ["F"],
        }
    ).write_parquet(tmp_path / "events" / "naive.parquet")
    (rep,) = validate_data_dir(tmp_path)
    assert dict(rep.rejected) == {"timestamp_without_offset": 1}


def test_latest_complaint_version_wins() -> None:
    t = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    rows = pl.DataFrame(
        {
            "complaint_id": ["c1", "c1", "c2", "c2"],
            "opened_at": [t] * 4,
            "category": ["delay", "delay", "loss", "damage"],
            "item_id": [None] * 4,
            "region": ["CN-GD"] * 4,
            "product": [None] * 4,
            "valid": [None, True, None, None],
            "resolved_at": [None, t + dt.timedelta(days=2), None, None],
            "updated_at": [t + dt.timedelta(days=3), t + dt.timedelta(days=2), None, None],
        },
        schema_overrides={"category": pl.Enum(["delay", "loss", "damage"])},
    )
    got = latest_complaints(rows.lazy()).collect().sort("complaint_id")
    # c1: the version updated later wins even though it was read first; c2: the last read
    assert got["valid"].to_list() == [None, None]
    assert got["resolved_at"].to_list() == [None, None]
    assert got["category"].cast(pl.String).to_list() == ["delay", "damage"]
