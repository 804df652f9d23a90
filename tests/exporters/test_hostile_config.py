"""A hostile environment (issue 18): bad reference files, batches that cannot be applied, clocks from 2099."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from exporters import catalog as cat
from exporters.books import Books
from exporters.service import ExporterConfig, ExporterService
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.sources.folder import load_data_dir
from kpi.standards import DEFAULT_STANDARDS
from kpi_cli.app import app
from tests.exporterkit import (
    ExporterProcess,
    Feed,
    append_jsonl,
    event,
    facilities_csv,
    fetch,
    parse_exposition,
    total,
    wait_until,
)
from tests.exporters.hostile import (
    Samples,
    config_valid,
    engine_counts,
    exporter_counts,
    lines,
    read_all,
    readyz,
    start,
)

# --- 1. a typo in service-standards.yaml ------------------------------------------------


def standards_yaml(time_zone: str) -> str:
    doc = DEFAULT_STANDARDS.model_dump(mode="json")
    doc["time_zone"] = time_zone
    return yaml.safe_dump(doc)


def test_bad_standards_are_refused_and_no_event_is_lost(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    live = data / "events" / "live.jsonl"
    feed = Feed()
    data.mkdir()
    (data / "service-standards.yaml").write_text(standards_yaml("Asia/Shanghai"))
    append_jsonl(live, feed.interleaved(0, 20))
    exporter = start(running, data, tmp_path / "state")
    assert config_valid(exporter.scrape(), "service-standards.yaml") == 1

    (data / "service-standards.yaml").write_text(standards_yaml("Asia/Shangai"))
    wait_until(lambda: config_valid(exporter.scrape(), "service-standards.yaml") == 0)
    append_jsonl(live, feed.interleaved(20, 30))  # events keep coming while the typo is there
    read_all(exporter, lines(live))
    status, body = readyz(exporter)
    assert status == 200 and "Asia/Shangai" in body and "refused" in body

    # kpi validate names the same problem, kpi report refuses the folder
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(data), "--rejects", str(tmp_path / "r")])
    assert result.exit_code == 1 and "Asia/Shangai" in result.output
    result = runner.invoke(app, ["report", str(data), "--kpi", "accepted_items"])
    assert result.exit_code == 2 and "Asia/Shangai" in result.output

    (data / "service-standards.yaml").write_text(standards_yaml("Asia/Shanghai"))
    wait_until(lambda: config_valid(exporter.scrape(), "service-standards.yaml") == 1)
    final = read_all(exporter, lines(live))
    assert exporter_counts(final) == engine_counts(data)
    assert total(final, cat.ITEMS_ACCEPTED.series) == 50
    assert exporter.terminate() == 0


def test_a_batch_that_cannot_be_applied_keeps_its_positions_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection in process: applying fails (as a bad reference file or a bug would)."""
    data = tmp_path / "data"
    live = data / "events" / "live.jsonl"
    feed = Feed()
    append_jsonl(live, feed.interleaved(0, 10))
    broken = threading.Event()
    real = Books.apply

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        if broken.is_set():
            raise RuntimeError("injected: cannot compute deadlines")
        return real(*args, **kwargs)

    monkeypatch.setattr(Books, "apply", flaky)
    service = ExporterService(
        ExporterConfig(
            data,
            tmp_path / "state",
            port=0,
            refresh_interval=0.1,
            batch_interval=0.05,
            checkpoint_interval=0.2,
            stuck_after=0.5,
        )
    ).start()
    try:
        assert service.wait_ready(30)
        broken.set()
        append_jsonl(live, feed.interleaved(10, 10))

        def stuck() -> bool:
            status, body = fetch(service.url + "/readyz")
            return status == 503 and b"cannot be applied" in body and b"injected" in body

        wait_until(stuck, timeout=20)
        ingested = service.ingestor.counters.value(cat.EXPORTER_EVENTS_INGESTED)
        assert ingested == len(feed.interleaved(0, 10))  # the new rows are held, not rejected
        assert service.ingestor.counters.value(cat.EXPORTER_EVENTS_REJECTED) == 0
        broken.clear()
        wait_until(lambda: fetch(service.url + "/readyz")[0] == 200, timeout=20)
        wait_until(
            lambda: service.ingestor.counters.value(cat.EXPORTER_EVENTS_INGESTED) == lines(live)
        )
        service.refresh()
        status, body = fetch(service.url + "/metrics")
        assert status == 200
        counts = exporter_counts(parse_exposition(body.decode()))
    finally:
        service.stop()
    assert counts == engine_counts(data)


# --- 4. a clock from 2099 ---------------------------------------------------------------


def test_an_event_from_2099_is_rejected_and_moves_no_clock(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    live = data / "events" / "live.jsonl"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    feed = Feed(start=now - dt.timedelta(days=3), step=dt.timedelta(hours=5))
    append_jsonl(live, feed.interleaved(0, 10))  # finished items, all in the past
    exporter = start(running, data, tmp_path / "state", "--max-future", "1h")
    before = exporter.scrape()
    assert before is not None
    last = before[(cat.EXPORTER_LAST_EVENT_TIMESTAMP.name, ())]
    wrong = event("x-2099", feed.lifecycle(11)[0]["item_id"] or "", "arrived", now.replace(2099))
    append_jsonl(live, [wrong])
    # then a valid scan of a finished item (retention would have retired it at 2099)
    item0 = feed.lifecycle(0)
    late = event("late-0", item0[0]["item_id"] or "", "arrived", now - dt.timedelta(hours=1))
    append_jsonl(live, [late])
    final = read_all(exporter, lines(live))
    rejected = cat.EXPORTER_EVENTS_REJECTED.series
    assert total(final, rejected, reason="future_ts") == 1
    assert total(final, rejected, reason="retired_item") == 0
    assert total(final, rejected) == 1
    clock = final[(cat.EXPORTER_LAST_EVENT_TIMESTAMP.name, ())]
    assert last <= clock <= now.timestamp() + 3600
    # kpi report / kpi validate with the same margin agree
    assert exporter_counts(final) == engine_counts(data, now + dt.timedelta(hours=1))
    result = CliRunner().invoke(
        app, ["validate", str(data), "--max-future", "1h", "--rejects", str(tmp_path / "r")]
    )
    assert result.exit_code == 1 and "future_ts=1" in result.output
    assert exporter.terminate() == 0


# --- 5. facilities.csv edited badly -----------------------------------------------------

GOOD_FACILITIES = [
    ("PC-SH-01", "Shanghai hub", "processing", "CN-SH", 5),
    ("DO-SH-001", "Shanghai office", "delivery", "CN-SH", 3),
    ("PC-GD-01", "Guangzhou hub", "processing", "CN-GD", 5),
]


def backlog(samples: Samples) -> tuple[float, float]:
    return total(samples, cat.BACKLOG_ITEMS.series), total(samples, cat.BACKLOG_THRESHOLD.series)


def test_bad_facilities_versions_are_refused(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    live = data / "events" / "live.jsonl"
    data.mkdir()
    facilities = data / "facilities.csv"
    facilities_csv(facilities, GOOD_FACILITIES)
    feed = Feed()
    append_jsonl(live, [r for i in range(12) for r in feed.lifecycle(i, stages=3 + i % 3)])
    exporter = start(running, data, tmp_path / "state", "--as-of", "latest")
    first = read_all(exporter, lines(live))
    good = backlog(first)
    assert good[0] > 0 and config_valid(first, "facilities.csv") == 1

    runner = CliRunner()
    for bad in (
        [*GOOD_FACILITIES, GOOD_FACILITIES[0]],  # a duplicated row
        [(*GOOD_FACILITIES[0][:4], "abc"), *GOOD_FACILITIES[1:]],  # a threshold "abc"
    ):
        text = "facility,name,type,region,backlog_threshold\n" + "".join(
            ",".join(str(v) for v in row) + "\n" for row in bad
        )
        facilities.write_text(text)
        wait_until(lambda: config_valid(exporter.scrape(), "facilities.csv") == 0)
        time.sleep(0.5)  # a few refreshes
        samples = exporter.scrape()
        assert samples is not None and backlog(samples) == good
        result = runner.invoke(app, ["validate", str(data), "--rejects", str(tmp_path / "r")])
        assert result.exit_code == 1 and "facilities.csv" in result.output
        result = runner.invoke(app, ["report", str(data), "--kpi", "backlog_items"])
        assert result.exit_code == 2 and "facilities.csv" in result.output

    facilities_csv(facilities, GOOD_FACILITIES)
    wait_until(lambda: config_valid(exporter.scrape(), "facilities.csv") == 1)
    snap = Snapshot.from_dataset(load_data_dir(data))
    engine = snap.query(KpiQuery(kpis=("backlog_items",), by=("facility",)))
    final = exporter.scrape()
    assert final is not None
    assert backlog(final)[0] == engine["backlog_items"].sum() == good[0]
    assert exporter_counts(final) == engine_counts(data)
    assert exporter.terminate() == 0
