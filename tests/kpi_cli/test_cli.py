"""The ``kpi`` command: validate, report (defaults, formats, errors), docs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from exporters.service import RETENTION_DEFAULT as SERVICE_DEFAULT
from kpi.contract import Kind, RejectReason
from kpi.kpis.catalog import KPIS
from kpi.sources.folder import validate_data_dir
from kpi_cli.app import app
from kpi_cli.options import RETENTION_DEFAULT, parse_duration, parse_retention
from tests.conftest import write_rows

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

# Two items: A accepted 08:00+08 (express, same region: due end of next local day) and
# delivered on time; B accepted later, still waiting at a hub; one more scan of A after
# the as-of used below.
EVENTS: list[dict[str, str | None]] = [
    {
        "event_id": "a1",
        "item_id": "A",
        "event": "accepted",
        "ts": "2027-01-11T08:00:00+08:00",
        "facility": "CO-1",
        "product": "express",
        "origin": "CN-GD",
        "destination": "CN-GD",
    },
    {
        "event_id": "a2",
        "item_id": "A",
        "event": "delivered",
        "ts": "2027-01-12T10:00:00+08:00",
        "facility": "DO-1",
    },
    {
        "event_id": "b1",
        "item_id": "B",
        "event": "accepted",
        "ts": "2027-01-12T09:00:00+08:00",
        "facility": "CO-1",
        "product": "express",
        "origin": "CN-GD",
        "destination": "CN-BJ",
    },
    {
        "event_id": "b2",
        "item_id": "B",
        "event": "arrived",
        "ts": "2027-01-12T12:00:00+08:00",
        "facility": "PC-1",
    },
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_rows(tmp_path / "events" / "e.csv", EVENTS)
    return tmp_path


def _json(args: list[str]) -> list[dict[str, object]]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_report_defaults_to_the_latest_event(folder: Path) -> None:
    rows = _json(
        [
            "report",
            str(folder),
            "--kpi",
            "accepted_items,delivered_items,on_time_ratio,backlog_items,in_network_items",
            "--format",
            "json",
        ]
    )
    assert rows == [
        {
            "accepted_items": 2,
            "delivered_items": 1,
            "on_time_ratio": 1.0,
            "backlog_items": 1,
            "in_network_items": 1,
        }
    ]


def test_report_as_of_ignores_later_events_and_allows_a_later_to(folder: Path) -> None:
    rows = _json(
        [
            "report",
            str(folder),
            "--as-of",
            "2027-01-12T09:30:00+08:00",
            "--to",
            "2027-02-01T00:00:00Z",
            "--kpi",
            "accepted_items,delivered_items,in_network_items",
            "--format",
            "json",
        ]
    )
    # at 09:30 local on the 12th A is delivered (10:00 is later: not yet), B accepted
    assert rows == [{"accepted_items": 2, "delivered_items": 0, "in_network_items": 2}]


def test_report_grouped_by_day_in_a_time_zone(folder: Path) -> None:
    rows = _json(
        [
            "report",
            str(folder),
            "--by",
            "destination",
            "--granularity",
            "day",
            "--tz",
            "Asia/Shanghai",
            "--kpi",
            "accepted_items",
            "--format",
            "json",
        ]
    )
    assert rows == [
        {"destination": "CN-BJ", "period": "2027-01-12T00:00:00+08:00", "accepted_items": 1},
        {"destination": "CN-GD", "period": "2027-01-11T00:00:00+08:00", "accepted_items": 1},
        # A's delivery day: the flow family has activity there, so the row exists with 0
        {"destination": "CN-GD", "period": "2027-01-12T00:00:00+08:00", "accepted_items": 0},
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_report_machine_formats_read_back(folder: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"r.{fmt}"
    args = [
        "report",
        str(folder),
        "--by",
        "region",
        "--kpi",
        "accepted_items,on_time_ratio",
        "--format",
        fmt,
        "--output",
        str(out),
    ]
    assert runner.invoke(app, args).exit_code == 0
    read = {"csv": pl.read_csv, "parquet": pl.read_parquet, "arrow": pl.read_ipc_stream}[fmt]
    got = read(out).sort("region")
    assert got["region"].to_list() == ["CN-BJ", "CN-GD"]
    assert got["accepted_items"].to_list() == [1, 1]
    assert got["on_time_ratio"].to_list() == [None, 1.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--by", "facility", "--kpi", "on_time_ratio"],
            "supports ['product', 'origin', 'destination', 'region']",
        ),
        (["--kpi", "speed"], "unknown KPI 'speed'"),
        (["--as-of", "2027-01-12T09:30:00"], "has no UTC offset"),
        (["--from", "2027-01-12T00:00:00Z", "--to", "2027-01-11T00:00:00Z"], "must be before"),
        (["--granularity", "fortnight"], "unknown granularity"),
    ],
)
def test_report_errors_say_what_to_change(folder: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["report", str(folder), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_report_list_prints_every_kpi() -> None:
    result = runner.invoke(app, ["report", ".", "--list"])
    assert result.exit_code == 0
    assert all(k.name in result.stdout for k in KPIS)


def test_generated_data_passes_validate_and_bad_rows_do_not(tmp_path: Path) -> None:
    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    for out, rate in ((clean, "0"), (dirty, "0.05")):
        args = [
            "simulate",
            "--out",
            str(out),
            "--items",
            "400",
            "--days",
            "5",
            "--seed",
            "2",
            "--bad-rows",
            rate,
            "--quiet",
        ]
        assert runner.invoke(app, args).exit_code == 0
    ok = runner.invoke(app, ["validate", str(clean)])
    assert ok.exit_code == 0, ok.output
    assert "rejected: 0" in ok.stdout
    bad = runner.invoke(app, ["validate", str(dirty)])
    assert bad.exit_code == 1
    rejects = pl.read_ndjson(dirty / "_rejects" / "events.jsonl")
    assert {"missing_field", "unknown_event", "bad_timestamp", "timestamp_without_offset"} <= set(
        rejects["reason"]
    )


def test_report_window_is_half_open(folder: Path) -> None:
    accepted_b = dt.datetime(2027, 1, 12, 1, 0, tzinfo=dt.UTC).isoformat()
    rows = _json(
        ["report", str(folder), "--to", accepted_b, "--kpi", "accepted_items", "--format", "json"]
    )
    assert rows == [{"accepted_items": 1}]  # B's acceptance is exactly at `to`: outside
    rows = _json(
        ["report", str(folder), "--from", accepted_b, "--kpi", "accepted_items", "--format", "json"]
    )
    assert rows == [{"accepted_items": 1}]  # ... and exactly at `from`: inside


def test_kpi_docs_are_current() -> None:
    result = runner.invoke(app, ["docs", "--check", "--out", str(ROOT / "docs" / "kpis.md")])
    assert result.exit_code == 0, "docs/kpis.md is stale: run `kpi docs`"


def test_report_says_how_the_lifecycle_was_built_and_what_it_left_out(
    folder: Path, tmp_path: Path
) -> None:
    unknown = {**EVENTS[3], "event_id": "b3", "event": "teleported"}
    parquet = tmp_path / "pq"
    write_rows(parquet / "events" / "e.parquet", [*EVENTS, unknown], typed=True)
    args = ["report", "--format", "json", "--log-level", "INFO"]
    fast = runner.invoke(app, [*args[:1], str(parquet), *args[1:]])
    general = runner.invoke(app, [*args[:1], str(folder), *args[1:]])
    assert fast.exit_code == 0 and general.exit_code == 0, fast.output + general.output
    assert "typed-Parquet fast path" in fast.stderr
    assert "note: 1 event row(s) were left out (failed validation" in fast.stderr
    assert "validated rows: no Parquet event files" in general.stderr
    # Both paths answer alike: the rejected row changes nothing.
    assert json.loads(fast.stdout) == json.loads(general.stdout)
    quiet = runner.invoke(app, ["report", str(parquet), "--format", "json"])
    assert "fast path" not in quiet.stderr and "note: 1 event row" in quiet.stderr


def test_report_counts_what_the_general_path_left_out(folder: Path) -> None:
    """CSV and JSONL take the general path; its left-out rows are counted too.

    Hand count: a row with an unknown event, a row without an item id, a JSONL line
    that is no JSON object, and a repeated event id (same content, second read) = 4
    rows; one file that is not readable at all.
    """
    bad = [
        {**EVENTS[3], "event_id": "b3", "event": "teleported"},
        {**EVENTS[3], "event_id": "b4", "item_id": None},
        EVENTS[1],  # a2 again
    ]
    write_rows(folder / "events" / "f.jsonl", bad)
    with (folder / "events" / "f.jsonl").open("a") as out:
        out.write("[1, 2]\n")
    (folder / "events" / "g.parquet").write_bytes(b"PAR1 not really")
    result = runner.invoke(app, ["report", str(folder), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "note: 4 event row(s) were left out" in result.stderr
    assert "note: 1 event file(s) could not be read" in result.stderr
    # The same rows by `kpi validate`'s own count (rejects plus repeated ids).
    files = [r for r in validate_data_dir(folder) if r.kind is Kind.EVENTS]
    file_level = sum(r.rejected[RejectReason.UNREADABLE_FILE] for r in files)
    rows = sum(r.rejected_total + r.duplicate_ids for r in files) - file_level
    assert (rows, file_level) == (4, 1)
    # The left-out rows change nothing: the report equals the clean folder's.
    clean = runner.invoke(app, ["report", str(folder), "--format", "json", "--kpi",
                                "accepted_items,delivered_items,backlog_items"])  # fmt: skip
    assert json.loads(clean.stdout) == [{"accepted_items": 2, "delivered_items": 1,
                                         "backlog_items": 1}]  # fmt: skip


def test_report_with_as_of_does_not_count_left_out_rows(folder: Path) -> None:
    """With an as-of the rows left out cannot be split by time: no count, no note."""
    write_rows(folder / "events" / "f.csv", [{**EVENTS[3], "event_id": "b3", "event": "x"}])
    as_of = dt.datetime(2027, 1, 12, 5, 0, tzinfo=dt.UTC).isoformat()
    result = runner.invoke(app, ["report", str(folder), "--as-of", as_of, "--format", "json"])
    assert result.exit_code == 0 and "left out" not in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), ("1.5h", 5400.0), ("30d", 2_592_000.0),
     ("7", 7.0), ("forever", None), (" Forever ", None)],
)  # fmt: skip
def test_retention_and_durations_parse(text: str, seconds: float | None) -> None:
    assert parse_retention(text) == seconds
    if seconds is not None:
        assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30 days", "-1d", "1w", "forever and ever"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_retention(text)


def test_retention_default_of_the_cli_is_the_services() -> None:
    assert parse_retention(RETENTION_DEFAULT) == SERVICE_DEFAULT == 30 * 86_400
