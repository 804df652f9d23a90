"""A hostile environment (issue 18): a full state disk, a flood of junk, twenty scrapers at once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from exporters import catalog as cat
from exporters.server import Endpoints, MetricsHTTPServer
from tests.exporterkit import (
    ExporterProcess,
    Feed,
    append_jsonl,
    total,
    wait_until,
)
from tests.exporters.hostile import (
    FAST,
    engine_counts,
    exporter_counts,
    lines,
    read_all,
    readyz,
    start,
)

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
        # Unbuffered: a buffered file would flush a partly written chunk again on close
        # and raise ENOSPC there (it did once the checkpoint's size left a partial chunk).
        with (self.state / "filler").open("wb", buffering=0) as fh:
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
    (events / "junk.jsonl").write_bytes(b"{}\n" * 60_000)
    # distinct bad rows (not summarised) to fill several generations
    distinct = [
        {"event_id": f"bad-{i:06d}", "item_id": "X" * 60, "event": "?", "ts": "2027-01-11T00:00Z"}
        | {"facility": "F"}
        for i in range(3000)
    ]
    append_jsonl(events / "bad.jsonl", distinct)
    feed = Feed()
    append_jsonl(events / "good.jsonl", feed.interleaved(0, 10))
    exporter = start(running, data, state, "--rejects-max-bytes", "150KiB")
    final = read_all(exporter, 60_000 + 3000 + lines(events / "good.jsonl"), timeout=60)
    rejected = cat.EXPORTER_EVENTS_REJECTED.series
    assert total(final, rejected, reason="missing_field") == 60_000
    assert total(final, rejected, reason="unknown_event") == 3000
    assert exporter_counts(final) == engine_counts(data)
    assert exporter.terminate() == 0
    files = sorted(state.glob("rejects*.jsonl"))
    assert 2 <= len(files) <= 4  # the current file and at most 3 generations
    assert all(p.stat().st_size <= 150 << 10 for p in files)
    records = [json.loads(x) for p in files for x in p.read_text().splitlines()]
    junk = [r for r in records if r["source"] == "events/junk.jsonl"]
    repeats = sum(r.get("repeats", 0) for r in junk)
    verbatim = sum("repeats" not in r for r in junk)
    assert repeats + verbatim == 60_000 and verbatim <= 50  # ten per batch at most


# --- 9. twenty scrapers at once --------------------------------------------------------------


def test_listen_queue_holds_twenty_scrapers_connecting_at_once() -> None:
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
