"""The serving process (``exporters/serving.py``): real ``kpi exporter`` processes, real kills.

The exporter serves ``/metrics``, ``/healthz`` and ``/readyz`` from a child process of
its own. Checked here: what it serves is what the collectors produce; a SIGKILLed
child is replaced on the same listening socket (no scrape refused) and the exporter
stops with an error once it keeps dying; a frozen exporter is reported, not served
stale; the child dies with the exporter; the listen backlog is at least 128.
"""

from __future__ import annotations

import gzip
import http.client
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from exporters import serving
from exporters.exposition import collectors, registry_of, render
from exporters.service import ExporterConfig, ExporterService
from tests.exporterkit import (
    ExporterProcess,
    Feed,
    alive,
    append_jsonl,
    facilities_csv,
    fetch,
    only_child,
    wait_until,
)

FEED = Feed()


def _server_pid(exporter: ExporterProcess) -> int:
    """The exporter's one live child: its serving process (waits for a restart to finish)."""
    assert exporter.process is not None
    return only_child(exporter.process.pid)


def _start(running: list[ExporterProcess], tmp_path: Path) -> ExporterProcess:
    data = tmp_path / "data"
    append_jsonl(data / "events" / "live.jsonl", FEED.interleaved(0, 40))
    exporter = ExporterProcess(data, tmp_path / "state", args=["--refresh-interval", "0.5s"])
    running.append(exporter.start())
    exporter.wait_ready()
    return exporter


def _samples(families: object) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    out = set()
    for family in families:  # type: ignore[attr-defined]
        for s in family.samples:
            assert isinstance(s, Sample)
            out.add((s.name, tuple(sorted(s.labels.items())), s.value))
    return out


def test_metrics_are_what_the_collectors_produce(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    facilities_csv(data / "facilities.csv", [("PC-SH-01", "Hub", "processing", "CN-SH", 5)])
    append_jsonl(data / "events" / "live.jsonl", FEED.interleaved(0, 60))
    config = ExporterConfig(data, tmp_path / "state", port=0, as_of="latest", refresh_interval=3600)
    service = ExporterService(config).start()
    try:
        assert service.wait_ready(30)
        served = isinstance(service._server, serving.ProcessServer)
        assert served and service._server.pid not in (None, os.getpid())
        # An independent rendering of the same view by a fresh registry of the collectors.
        expected = render(registry_of(collectors(lambda: service.view)))
        status, text = fetch(service.url + "/metrics")
        om_headers = {"Accept": "application/openmetrics-text;version=1.0.0"}
        om_status, om = _get(service.port, om_headers)
        gz_status, gz = _get(service.port, {"Accept-Encoding": "gzip"})
    finally:
        service.stop()
    assert status == om_status == gz_status == 200
    want = _samples(text_string_to_metric_families(expected.text.decode()))
    assert len(want) > 100
    assert _samples(text_string_to_metric_families(text.decode())) == want
    assert _samples(text_string_to_metric_families(gzip.decompress(gz).decode())) == want
    want_om = _samples(openmetrics_families(expected.openmetrics.decode()))
    assert _samples(openmetrics_families(om.decode())) == want_om


def _get(port: int, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_a_killed_serving_process_is_replaced_and_no_scrape_is_refused(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    exporter = _start(running, tmp_path)
    before = exporter.scrape()
    assert before is not None
    child = _server_pid(exporter)
    os.kill(child, signal.SIGKILL)
    # Scrapes meanwhile wait in the listen queue the exporter keeps: none is refused.
    deadline = time.monotonic() + 20
    answered = 0
    while time.monotonic() < deadline and answered < 20:
        status, _ = fetch(exporter.url + "/metrics", timeout=20)  # OSError fails the test
        assert status == 200
        answered += 1
    assert answered == 20
    new = _server_pid(exporter)
    assert new != child and not alive(child)
    assert exporter.scrape() == before  # the same state, served by the new process
    assert "serving process killed by SIGKILL; starting a new one" in exporter.log()
    assert exporter.alive()


def test_a_serving_process_that_keeps_dying_stops_the_exporter_with_an_error(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    exporter = _start(running, tmp_path)
    assert exporter.process is not None
    for _ in range(serving.RESTARTS + 1):
        if not exporter.alive():
            break
        os.kill(_server_pid(exporter), signal.SIGKILL)
        time.sleep(serving.HEARTBEAT * 2)
    assert exporter.process.wait(30) == 1
    log = exporter.log()
    assert f"error: the serving process ended {serving.RESTARTS + 1} times within 60s" in log
    assert "Traceback" not in log


def test_a_frozen_exporter_is_reported_not_served_stale(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    exporter = _start(running, tmp_path)
    assert exporter.process is not None
    _server_pid(exporter)
    exporter.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(serving.SILENT_AFTER + 1.5)
        health, why = fetch(exporter.url + "/healthz")
        ready, reasons = fetch(exporter.url + "/readyz")
        metrics, body = fetch(exporter.url + "/metrics")
    finally:
        exporter.process.send_signal(signal.SIGCONT)
    assert health == 500 and b"no word from the exporter's ingest process" in why
    assert ready == 503 and b"no word from the exporter's ingest process" in reasons
    assert metrics == 503 and b"nothing served" in body
    wait_until(lambda: fetch(exporter.url + "/healthz")[0] == 200, timeout=10)
    assert exporter.scrape() is not None


def test_the_serving_process_dies_with_the_exporter(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    exporter = _start(running, tmp_path)
    child = _server_pid(exporter)
    exporter.kill()  # SIGKILL: no chance to stop it
    wait_until(lambda: not alive(child), timeout=10)
    with pytest.raises(OSError):  # nothing listens any more
        fetch(exporter.url + "/healthz", timeout=2)


def test_listen_backlog_is_at_least_128(tmp_path: Path, running: list[ExporterProcess]) -> None:
    exporter = _start(running, tmp_path)
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{exporter.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # A listening socket's Send-Q column is its backlog (capped by net.core.somaxconn).
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert out[0] == "LISTEN" and int(out[2]) >= 128, (out, somaxconn)
