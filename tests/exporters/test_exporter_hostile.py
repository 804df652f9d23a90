"""The exporter in a hostile operations environment (issue 18): each case of the issue, for real.

Real files, real ``kpi exporter`` processes, real SIGKILL/SIGTERM, a real tmpfs for the
full disk. Every case ends with the exporter's counters equal to what the KPI engine
(``kpi report``'s ``Snapshot``) and the folder validator compute over everything
written, so no good event was lost and none counted twice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from exporters import catalog as cat
from exporters.testkit import (
    ExporterProcess,
    Feed,
    SeriesKey,
    append_jsonl,
    event,
    facilities_csv,
    fetch,
    parse_exposition,
    total,
    wait_until,
    write_parquet_atomic,
)
from kpi.cli import app
from kpi.contract import Kind
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.sources.folder import load_data_dir, validate_data_dir
from kpi.standards import DEFAULT_STANDARDS

FAST = ["--batch-interval", "0.1s", "--refresh-interval", "0.2s", "--checkpoint-interval", "0.3s"]
FLOW = ("accepted_items", "delivered_items", "returned_items")
Samples = dict[SeriesKey, float]


def engine_counts(data: Path, not_after: dt.datetime | None = None) -> dict[str, float]:
    """What ``kpi report`` (the engine) and ``kpi validate`` say about a folder."""
    snap = Snapshot.from_dataset(load_data_dir(data, not_after))
    flow = snap.query(KpiQuery(kpis=FLOW)).row(0, named=True)
    reports = validate_data_dir(data, data.parent / "validate-rejects", not_after)
    ingested = sum(r.accepted - (r.duplicate_ids if r.kind is Kind.EVENTS else 0) for r in reports)
    return {k: float(flow[k] or 0) for k in FLOW} | {"ingested": float(ingested)}


def exporter_counts(samples: Samples) -> dict[str, float]:
    """The same figures from a scrape."""
    return {
        "accepted_items": total(samples, cat.ITEMS_ACCEPTED.series),
        "delivered_items": total(samples, cat.ITEMS_DELIVERED.series),
        "returned_items": total(samples, cat.ITEMS_RETURNED.series),
        "ingested": total(samples, cat.EXPORTER_EVENTS_INGESTED.series),
    }


def read_all(exporter: ExporterProcess, rows: int, timeout: float = 30) -> Samples:
    """Wait until the exporter has handled ``rows`` input rows (ingested + rejected)."""
    out: list[Samples] = []

    def done() -> bool:
        s = exporter.scrape()
        handled = (
            total(s, cat.EXPORTER_EVENTS_INGESTED.series)
            + total(s, cat.EXPORTER_EVENTS_REJECTED.series)
            if s
            else -1
        )
        if s is not None and handled == rows:
            out.append(s)
            return True
        return False

    try:
        wait_until(done, timeout=timeout)
    except TimeoutError:
        s = exporter.scrape() or {}
        got = (
            total(s, cat.EXPORTER_EVENTS_INGESTED.series),
            total(s, cat.EXPORTER_EVENTS_REJECTED.series),
        )
        raise AssertionError(f"not all {rows} rows handled ({got}):\n{exporter.log()}") from None
    time.sleep(0.3)  # nothing more may come
    final = exporter.scrape()
    assert final is not None and exporter_counts(final) == exporter_counts(out[-1])
    return final


@pytest.fixture
def running() -> Iterator[list[ExporterProcess]]:
    """Exporters started by a test; terminated (or killed) at the end whatever happens."""
    started: list[ExporterProcess] = []
    yield started
    for exporter in started:
        if exporter.alive():
            exporter.kill()


def start(running: list[ExporterProcess], data: Path, state: Path, *args: str) -> ExporterProcess:
    exporter = ExporterProcess(data, state, [*FAST, *args]).start()
    running.append(exporter)
    exporter.wait_ready()
    return exporter


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def readyz(exporter: ExporterProcess) -> tuple[int, str]:
    try:
        status, body = fetch(exporter.url + "/readyz")
    except OSError:  # not listening yet
        return 0, ""
    return status, body.decode()


def config_valid(samples: Samples | None, file: str) -> float | None:
    if samples is None:
        return None
    return samples.get((cat.EXPORTER_CONFIG_VALID.name, (("file", file),)))


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
    from exporters import ingest
    from exporters.service import ExporterConfig, ExporterService

    data = tmp_path / "data"
    live = data / "events" / "live.jsonl"
    feed = Feed()
    append_jsonl(live, feed.interleaved(0, 10))
    broken = threading.Event()
    real = ingest.event_increments

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        if broken.is_set():
            raise RuntimeError("injected: cannot compute deadlines")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "event_increments", flaky)
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


# --- 2. inode reuse ---------------------------------------------------------------------


def test_new_parquet_on_the_inode_of_a_deleted_jsonl_is_read(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    events = data / "events"
    feed = Feed()
    append_jsonl(events / "a.jsonl", feed.interleaved(0, 5))
    exporter = start(running, data, state)
    read_all(exporter, lines(events / "a.jsonl"))
    assert exporter.terminate() == 0
    rows_a = lines(events / "a.jsonl")
    (events / "a.jsonl").unlink()
    write_parquet_atomic(events / "b.parquet", feed.interleaved(5, 20))
    # ext4 hands the freed inode to the next file: make the checkpoint say so, exactly
    # as a restart after a real reuse finds it.
    (ckpt,) = state.glob("checkpoint-*")
    meta = json.loads((ckpt / "meta.json").read_text())
    st = (events / "b.parquet").stat()
    (entry,) = meta["files"]
    entry["key"] = f"{st.st_dev}:{st.st_ino}"
    (ckpt / "meta.json").write_text(json.dumps(meta))

    exporter = start(running, data, state)
    final = read_all(exporter, rows_a + len(feed.interleaved(5, 20)))
    assert total(final, cat.EXPORTER_EVENTS_REJECTED.series) == 0
    # the engine reads b.parquet only (a.jsonl is gone): its items plus what a.jsonl gave
    expected = engine_counts(data)
    assert exporter_counts(final)["ingested"] == expected["ingested"] + rows_a
    assert total(final, cat.ITEMS_ACCEPTED.series) == 25
    assert "now named events/b.parquet" not in exporter.log()
    assert exporter.terminate() == 0


# --- 3. copytruncate ------------------------------------------------------------------


def test_copytruncate_under_a_live_writer_loses_nothing(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    events = data / "events"
    events.mkdir(parents=True)
    live = events / "live.jsonl"
    reference = tmp_path / "reference"  # every line written, in one file the engine reads
    (reference / "events").mkdir(parents=True)
    everything = reference / "events" / "all.jsonl"
    feed = Feed()
    rows = feed.interleaved(0, 400)  # ~2,900 lines
    lock = threading.Lock()
    written = threading.Event()

    def writer() -> None:
        for i in range(0, len(rows), 15):  # ~1,500 lines/s
            with lock:
                append_jsonl(live, rows[i : i + 15])
                append_jsonl(everything, rows[i : i + 15])
            time.sleep(0.01)
        written.set()

    append_jsonl(live, rows[:1])  # copies of files the exporter never followed are not read
    append_jsonl(everything, rows[:1])
    rows = rows[1:]
    exporter = start(running, data, tmp_path / "state")
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    rotations = 0
    while not written.wait(0.35):
        with lock:  # logrotate's copytruncate, between two writes
            for n in range(3, 0, -1):
                older = events / f"live.jsonl.{n}"
                if older.exists():
                    older.rename(events / f"live.jsonl.{n + 1}")
            shutil.copyfile(live, events / "live.jsonl.1")
            with live.open("r+b") as fh:
                fh.truncate(0)
            rotations += 1
    thread.join()
    final = read_all(exporter, len(rows) + 1)
    assert rotations >= 3
    assert total(final, cat.EXPORTER_EVENTS_REJECTED.series) == 0
    assert exporter_counts(final) == engine_counts(reference)
    assert exporter.terminate() == 0


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


# --- 6. a CSV header that changes mid-file ----------------------------------------------


def test_csv_header_change_mid_file_is_followed(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    feed = Feed()
    first, second = feed.interleaved(0, 15), feed.interleaved(15, 15)
    cols_a = ["event_id", "item_id", "event", "ts", "facility", "product", "origin"]
    cols_a += ["destination", "promised_by", "reason"]
    cols_b = ["item_id", "event_id", *cols_a[2:]]  # two columns swapped, same width

    def csv_lines(cols: list[str], rows: list[dict[str, str | None]]) -> str:
        return "".join(",".join(r[c] or "" for c in cols) + "\n" for r in rows)

    feed_csv = data / "events" / "feed.csv"
    feed_csv.parent.mkdir(parents=True)
    feed_csv.write_text(",".join(cols_a) + "\n" + csv_lines(cols_a, first))
    exporter = start(running, data, tmp_path / "state")
    read_all(exporter, len(first))
    with feed_csv.open("a") as fh:
        fh.write(",".join(cols_b) + "\n" + csv_lines(cols_b, second))
    final = read_all(exporter, len(first) + len(second))
    assert total(final, cat.EXPORTER_EVENTS_REJECTED.series) == 0
    # the same rows as JSON lines, where there is no header to get wrong
    reference = tmp_path / "reference"
    append_jsonl(reference / "events" / "all.jsonl", first + second)
    expected = engine_counts(reference)
    assert exporter_counts(final) == expected == engine_counts(data)
    assert exporter.log().count("CSV header changes") == 1
    assert exporter.terminate() == 0


# --- 7. disk full ---------------------------------------------------------------------


class FullDisk:
    """A small tmpfs for the state folder, filled up on demand (as root); else injected ENOSPC."""

    def __init__(self, root: Path) -> None:
        self.state = root / "state"
        self.state.mkdir()
        self.flag = root / "enospc"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(self.state)],
            capture_output=True,
            check=False,
        )
        self.mounted = result.returncode == 0
        self.prefix: list[str] = []
        if not self.mounted:
            launcher = Path(__file__).with_name("enospc_launcher.py")
            self.prefix = ["env", f"ENOSPC_FLAG={self.flag}", f"ENOSPC_DIR={self.state}"]
            self.prefix += [sys.executable, str(launcher)]

    def fill(self) -> None:
        if not self.mounted:
            self.flag.touch()
            return
        with (self.state / "filler").open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (64 << 10))
                    fh.flush()
            except OSError:
                pass

    def free(self) -> None:
        (self.state / "filler").unlink(missing_ok=True)
        self.flag.unlink(missing_ok=True)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.state)], check=False)


def bad_rows(tag: str, n: int) -> list[dict[str, str | None]]:
    return [{"event_id": f"{tag}-{i}", "item_id": "X", "event": "teleported"} for i in range(n)]


def test_full_state_disk_keeps_counting_and_recovers_cleanly(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    disk = FullDisk(tmp_path)
    try:
        data = tmp_path / "data"
        live = data / "events" / "live.jsonl"
        feed = Feed()
        append_jsonl(live, feed.interleaved(0, 20) + bad_rows("a", 30))
        exporter = ExporterProcess(data, disk.state, FAST, prefix=disk.prefix).start()
        running.append(exporter)
        exporter.wait_ready()
        read_all(exporter, lines(live))
        disk.fill()
        append_jsonl(live, feed.interleaved(20, 20) + bad_rows("b", 40))
        during = read_all(exporter, lines(live))  # counting goes on
        assert total(during, cat.EXPORTER_EVENTS_REJECTED.series) == 70

        def noted() -> bool:
            status, body = readyz(exporter)
            return status == 200 and "paused" in body and "checkpoint" in body

        wait_until(noted, timeout=20)
        assert not list(disk.state.glob("checkpoint-*.tmp"))
        assert exporter.terminate() == 0  # SIGTERM while full: a clean exit
        log = exporter.log()
        assert "Traceback" not in log and "Exception in thread" not in log

        disk.free()
        append_jsonl(live, feed.interleaved(40, 5) + bad_rows("c", 5))
        exporter = ExporterProcess(data, disk.state, FAST, prefix=disk.prefix).start()
        running.append(exporter)
        exporter.wait_ready()
        final = read_all(exporter, lines(live))
        assert exporter_counts(final) == engine_counts(data)
        assert total(final, cat.EXPORTER_EVENTS_REJECTED.series) == 75
        assert exporter.terminate() == 0
        records = [json.loads(x) for x in (disk.state / "rejects.jsonl").read_text().splitlines()]
        where = [(r["source"], r["row"], r["reason"]) for r in records]
        assert len(where) == len(set(where))  # nothing twice, nothing cut (every line parsed)
        # written again after the recovery: the rows read since the last good checkpoint
        assert any(r["raw"] and '"c-4"' in r["raw"] for r in records)
    finally:
        disk.close()


# --- 8. a flood of junk -------------------------------------------------------------------


def test_a_flood_of_junk_is_summarised_and_the_rejects_file_bounded(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    events = data / "events"
    events.mkdir(parents=True)
    (events / "junk.jsonl").write_bytes(b"{}\n" * 200_000)
    # distinct bad rows (not summarised) to fill several generations
    distinct = [
        {"event_id": f"bad-{i:06d}", "item_id": "X" * 60, "event": "?", "ts": "2027-01-11T00:00Z"}
        | {"facility": "F"}
        for i in range(6000)
    ]
    append_jsonl(events / "bad.jsonl", distinct)
    feed = Feed()
    append_jsonl(events / "good.jsonl", feed.interleaved(0, 10))
    exporter = start(running, data, state, "--rejects-max-bytes", "300KiB")
    final = read_all(exporter, 200_000 + 6000 + lines(events / "good.jsonl"), timeout=60)
    rejected = cat.EXPORTER_EVENTS_REJECTED.series
    assert total(final, rejected, reason="missing_field") == 200_000
    assert total(final, rejected, reason="unknown_event") == 6000
    assert exporter_counts(final) == engine_counts(data)
    assert exporter.terminate() == 0
    files = sorted(state.glob("rejects*.jsonl"))
    assert 2 <= len(files) <= 4  # the current file and at most 3 generations
    assert all(p.stat().st_size <= 300 << 10 for p in files)
    records = [json.loads(x) for p in files for x in p.read_text().splitlines()]
    junk = [r for r in records if r["source"] == "events/junk.jsonl"]
    repeats = sum(r.get("repeats", 0) for r in junk)
    verbatim = sum("repeats" not in r for r in junk)
    assert repeats + verbatim == 200_000 and verbatim <= 50  # ten per batch at most


# --- 9. twenty scrapers at once --------------------------------------------------------------


def test_listen_queue_holds_twenty_scrapers_connecting_at_once() -> None:
    import socket

    from exporters.server import Endpoints, MetricsHTTPServer

    server = MetricsHTTPServer(
        ("127.0.0.1", 0), Endpoints(lambda: None, lambda: False, lambda: True)
    )
    try:
        # Not accepting yet (a busy moment): the kernel queues the handshakes, up to the backlog.
        clients = []
        for _ in range(40):
            s = socket.socket()
            s.settimeout(0.5)
            s.connect(("127.0.0.1", server.port))  # with a backlog of 5, the 7th times out
            clients.append(s)
        server.start()
        for s in clients:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for s in clients:
            s.settimeout(5)
            assert s.recv(64).startswith(b"HTTP/1.1 200")
            s.close()
    finally:
        server.stop()


# --- 10. unreadable folder and files -------------------------------------------------------


def without_dac_override() -> list[str]:
    """Root reads mode-000 files: drop that capability (setpriv), as an unprivileged user has none."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


API_READYZ = """
import json, sys
from fastapi.testclient import TestClient
from kpi.api.app import create_app
from kpi.api.settings import Settings
with TestClient(create_app(Settings(data_dir=sys.argv[1]))) as client:
    print(json.dumps(client.get("/readyz").json()))
"""


def test_unreadable_files_and_folder_are_reported_and_not_reread(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    events = data / "events"
    feed = Feed()
    append_jsonl(events / "a.jsonl", feed.interleaved(0, 10))
    secret = events / "secret.jsonl"
    append_jsonl(secret, feed.interleaved(10, 5))
    secret.chmod(0)
    exporter = ExporterProcess(data, state, FAST, prefix=without_dac_override()).start()
    running.append(exporter)
    wait_until(lambda: "secret.jsonl" in readyz(exporter)[1], timeout=30)
    time.sleep(1.0)  # ten polls
    status, body = readyz(exporter)
    assert status == 503 and "cannot read events/secret.jsonl" in body
    assert exporter.log().count("cannot read events/secret.jsonl") == 1  # warned once

    # the API's /readyz says so too (run with the same privileges)
    api = subprocess.run(
        [*without_dac_override(), sys.executable, "-c", API_READYZ, str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert api.returncode == 0, api.stderr
    answer = json.loads(api.stdout.strip().splitlines()[-1])
    assert any("events/secret.jsonl" in u for u in answer["unreadable"]), answer

    secret.chmod(0o644)
    read_all(exporter, lines(events / "a.jsonl") + lines(secret))
    assert readyz(exporter)[0] == 200

    # an unlistable events/ folder across a restart: nothing is re-read afterwards
    events.chmod(0)
    wait_until(lambda: "cannot read events/" in readyz(exporter)[1], timeout=10)
    exporter.kill()
    exporter = ExporterProcess(data, state, FAST, prefix=without_dac_override()).start()
    running.append(exporter)
    wait_until(lambda: "cannot read events/" in readyz(exporter)[1], timeout=30)
    time.sleep(0.6)
    events.chmod(0o755)
    final = read_all(exporter, lines(events / "a.jsonl") + lines(secret))
    assert total(final, cat.EXPORTER_EVENTS_REJECTED.series, reason="duplicate") == 0
    assert exporter_counts(final) == engine_counts(data)
    assert exporter.terminate() == 0
