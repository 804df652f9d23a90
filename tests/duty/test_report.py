"""The daily duty report against a hand-computed day, through the register, the CLI and the API."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kpi.duty.register import IncidentRegister, open_register
from kpi.duty.report import daily_report, day_window
from kpi.duty.webhook import WebhookPayload
from kpi_cli.app import app
from tests.api.conftest import api_client, write_hand_folder
from tests.duty.conftest import alert, payload, utc

DAY = dt.date(2026, 3, 4)


def _at(reg: IncidentRegister, when: str) -> None:
    reg.clock = lambda: utc(when)


def build_day(reg: IncidentRegister) -> dict[str, int]:
    """The hand-computed day (UTC): seven incidents around 2026-03-04. Returns ids by letter."""

    def fire(fp: str, starts: str, **kw: str) -> int:
        done = reg.record(WebhookPayload.model_validate(payload(alert(fp, starts, **kw))))
        return done.opened[0]

    def resolve(fp: str, starts: str, ends: str, **kw: str) -> None:
        reg.record(WebhookPayload.model_validate(payload(alert(fp, starts, ends, **kw))))

    sh = {"facility": "DO-SH", "region": "CN-SH"}
    ids = {
        # A: opened the day before, acknowledged 150 min and resolved 240 min after start.
        "A": fire("a", "2026-03-03T22:00:00Z"),
        # B: opened 10:00, acknowledged after 20 min, resolved after 180 min.
        "B": fire("b", "2026-03-04T10:00:00Z"),
        # C: a warning opened 20:00, still open and unacknowledged at midnight.
        "C": fire("c", "2026-03-04T20:00:00Z", severity="warning"),
        # D: CN-SH, opened 23:00, acknowledged only after midnight.
        "D": fire("d", "2026-03-04T23:00:00Z", **sh),
        # E: CN-SH, opened 05:00, closed by the desk at 06:30 before the alert resolved at 08:00.
        "E": fire("e", "2026-03-04T05:00:00Z", **sh),
        # F: the next day; G: two days before. Neither is in the report.
        "F": fire("f0", "2026-03-05T01:00:00Z", severity="warning", facility="CO-BJ", region="CN-BJ"),
        "G": fire("0a", "2026-03-02T00:00:00Z"),
    }  # fmt: skip
    resolve("0a", "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
    _at(reg, "2026-03-04T00:30:00Z")
    reg.acknowledge(ids["A"], "night")
    resolve("a", "2026-03-03T22:00:00Z", "2026-03-04T02:00:00Z")
    _at(reg, "2026-03-04T10:20:00Z")
    reg.acknowledge(ids["B"], "day")
    resolve("b", "2026-03-04T10:00:00Z", "2026-03-04T13:00:00Z")
    _at(reg, "2026-03-04T06:30:00Z")
    reg.close(ids["E"], "day", "false_alarm")
    resolve("e", "2026-03-04T05:00:00Z", "2026-03-04T08:00:00Z", **sh)
    _at(reg, "2026-03-05T01:00:00Z")
    reg.acknowledge(ids["D"], "night")
    return ids


def row(region: str, severity: str, *values: object) -> dict[str, object]:
    keys = (
        "opened", "resolved", "acknowledged",
        "mean_minutes_to_acknowledge", "max_minutes_to_acknowledge",
        "mean_minutes_to_resolve", "max_minutes_to_resolve",
        "open_at_end_of_day", "unacknowledged_at_end_of_day",
    )  # fmt: skip
    return {
        "date": "2026-03-04",
        "region": region,
        "severity": severity,
        **dict(zip(keys, values, strict=True)),
    }


#: Worked out by hand from the comments in build_day.
EXPECTED = [
    # A resolved (240 min, ack 150), B opened+resolved (180, ack 20).
    row("CN-GD", "critical", 1, 2, 2, 85.0, 150.0, 210.0, 240.0, 0, 0),
    # C open and unacknowledged at midnight.
    row("CN-GD", "warning", 1, 0, 0, None, None, None, None, 1, 1),
    # D open (its acknowledgement comes after midnight), E ended by the close after 90 min.
    row("CN-SH", "critical", 2, 1, 0, None, None, 90.0, 90.0, 1, 1),
    # Resolve times 240, 180, 90 -> mean 170; acknowledge times 150, 20 -> mean 85.
    row("all", "all", 4, 3, 2, 85.0, 150.0, 170.0, 240.0, 2, 2),
]


def test_report_matches_the_hand_computed_day(register: IncidentRegister) -> None:
    build_day(register)
    start, end = utc("2026-03-04T00:00:00Z"), utc("2026-03-05T00:00:00Z")
    assert daily_report(register.overlapping(start, end), DAY) == EXPECTED


def test_report_day_in_another_time_zone(register: IncidentRegister) -> None:
    """Shanghai's 5 March is [4 March 16:00Z, 5 March 16:00Z): C, D and F open in it."""
    build_day(register)
    start, end = day_window(dt.date(2026, 3, 5), "Asia/Shanghai")
    assert (start, end) == (utc("2026-03-04T16:00:00Z"), utc("2026-03-05T16:00:00Z"))
    total = daily_report(register.overlapping(start, end), dt.date(2026, 3, 5), "Asia/Shanghai")[-1]
    assert total["opened"] == 3 and total["open_at_end_of_day"] == 3
    assert total["acknowledged"] == 1  # D, 120 minutes after it fired
    assert total["mean_minutes_to_acknowledge"] == 120.0


def test_cli_and_api_give_the_same_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'duty.db'}"
    build_day(open_register(url))
    runner = CliRunner()
    out = runner.invoke(
        app, ["duty-report", "--database", url, "--date", "2026-03-04", "--format", "json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == EXPECTED
    out = runner.invoke(
        app, ["duty-report", "--database", url, "--date", "2026-03-04", "--format", "csv"]
    )
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert [(r["region"], r["severity"], r["opened"]) for r in rows] == [
        ("CN-GD", "critical", "1"), ("CN-GD", "warning", "1"), ("CN-SH", "critical", "2"), ("all", "all", "4"),
    ]  # fmt: skip
    md = runner.invoke(app, ["duty-report", "--database", url, "--date", "2026-03-04"]).output
    assert md.splitlines()[0].startswith("| date | region | severity | opened |")
    assert "| 2026-03-04 | all | all | 4 | 3 | 2 | 85.0 | 150.0 | 170.0 | 240.0 | 2 | 2 |" in md
    bad = runner.invoke(app, ["duty-report", "--database", url, "--date", "4 March"])
    assert bad.exit_code != 0

    data = write_hand_folder(tmp_path / "data")
    with api_client(data, database=url) as client:
        got = client.get("/api/v1/incidents/report", params={"date": "2026-03-04"})
        assert got.status_code == 200, got.text
        assert got.json()["rows"] == EXPECTED
        assert got.json()["start"] == "2026-03-04T00:00:00Z"
        as_csv = client.get(
            "/api/v1/incidents/report", params={"date": "2026-03-04", "format": "csv"}
        )
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert as_csv.text == out.output
        assert (
            client.get(
                "/api/v1/incidents/report", params={"date": "2026-03-04", "tz": "Mars/Olympus"}
            ).status_code
            == 400
        )


@pytest.mark.parametrize("fmt", ["md", "csv", "json"])
def test_empty_day_reports_zero_totals(tmp_path: Path, fmt: str) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    out = CliRunner().invoke(
        app, ["duty-report", "--database", url, "--date", "2026-03-04", "--format", fmt]
    )
    assert out.exit_code == 0, out.output
    assert "all" in out.output
