"""Crash safety: SIGKILL the exporter at random moments while events are appended live.

At the end every counter must equal that of one uninterrupted run over the same
files, and no counter may ever go down between two scrapes (across restarts too).
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from pathlib import Path

import pytest

from exporters import catalog as cat
from exporters.state import PROCESS_LOCAL
from kpi.simulate import live_append
from tests.exporterkit import (
    ExporterProcess,
    counters_only,
    fetch,
    raw_samples,
    total,
    wait_until,
)

ARGS = [
    "--batch-interval",
    "0.1s",
    "--checkpoint-interval",
    "0.3s",
    "--refresh-interval",
    "0.2s",
]
#: Process-local by design (reset on restart, like process_* metrics).
LOCAL = tuple(spec.name for spec in PROCESS_LOCAL)
COUNTER_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def lines_written(data: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (data / "events").glob("*.jsonl"))


def is_counter(key: str) -> bool:
    name = key.partition("{")[0]
    return name.endswith(COUNTER_SUFFIXES) and not name.startswith(LOCAL)


class Scraper(threading.Thread):
    """Scrapes whichever exporter process is current, every 20 ms, keeping counter values."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.target: ExporterProcess | None = None
        self.history: list[dict[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            target = self.target
            if target is None:
                continue
            try:
                status, body = fetch(target.url + "/metrics", timeout=2)
            except (OSError, http.client.HTTPException):
                continue  # killed (possibly mid-response), or not listening yet
            if status == 200:
                samples = raw_samples(body.decode())
                self.history.append({k: v for k, v in samples.items() if is_counter(k)})


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "events").mkdir(parents=True)
    stop_writing = threading.Event()
    writer = threading.Thread(
        target=live_append,
        kwargs={
            "out_dir": data,
            "rate": 400.0,
            "seed": 4,
            "stop": stop_writing,
            "seconds_per_hour": 0.05,
        },
        daemon=True,
    )
    scraper = Scraper()
    rng = random.Random(20261129)
    state = tmp_path / "state"
    exporter = ExporterProcess(data, state, ARGS).start()
    writer.start()
    scraper.start()
    kills = 0
    try:
        scraper.target = exporter
        for _ in range(4):
            if rng.random() < 0.75:
                exporter.wait_ready()
            time.sleep(rng.uniform(0.2, 1.5))
            exporter.kill()
            kills += 1
            exporter = ExporterProcess(data, state, ARGS).start()
            scraper.target = exporter
        exporter.wait_ready()
        time.sleep(0.5)
    finally:
        stop_writing.set()
        writer.join(timeout=10)

    try:
        lines = lines_written(data)
        rejected = cat.EXPORTER_EVENTS_REJECTED.series

        def all_read() -> bool:
            s = exporter.scrape()
            return s is not None and (
                total(s, cat.EXPORTER_EVENTS_INGESTED.series) + total(s, rejected) == lines
            )

        wait_until(all_read, timeout=60)
        time.sleep(0.3)
    finally:
        scraper.stop.set()
        scraper.join()
        final = exporter.scrape()
        assert exporter.terminate() == 0, exporter.log()
    assert final is not None and kills == 4 and lines > 1000

    reference = ExporterProcess(data, tmp_path / "reference", ARGS).start()
    try:
        reference.wait_ready()
        expected = reference.scrape()
    finally:
        reference.terminate()
    assert expected is not None
    assert dict(counters_only(final, LOCAL)) == dict(counters_only(expected, LOCAL))
    assert total(expected, cat.ITEMS_ACCEPTED.series) > 100

    # no counter ever went down between two scrapes, restarts included
    assert len(scraper.history) > 50
    for earlier, later in zip(scraper.history, scraper.history[1:], strict=False):
        for key, value in earlier.items():
            assert later.get(key, 0.0) >= value, (key, value, later.get(key))
