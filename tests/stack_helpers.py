"""The whole monitoring stack for tests: simulated data → ``kpi exporter`` → real Prometheus.

``run_stack`` generates a data folder with ``kpi simulate``, holds its last day of
events back, starts the exporter (``--as-of latest``) on the rest and Prometheus with
the generated rules and alerts (short ``for:``), lets Prometheus scrape the partial
counters, then moves the held-back day in. The counters therefore *grow* under
Prometheus' eyes, so ``rate()``/``increase()`` panels and recording rules give real
numbers, not 0/0. Every process is SIGKILLed on exit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from exporters import catalog as cat
from tests import promkit
from tests.exporterkit import ExporterProcess
from tests.exporters.mixin.synthetic import REPO, fast_rule_copy

#: The data set: small enough to simulate and ingest in a few seconds.
SIM_ARGS = ("--items", "3000", "--days", "10", "--seed", "3")
#: ``for:`` of every alert in the test copy of prometheus/alerts.yml.
FAST_FOR = "2s"
RULE_FILES = ("prometheus/rules.yml", "prometheus/alerts.yml")


@dataclass
class Stack:
    """A running exporter and Prometheus over a fully ingested data folder."""

    data: Path
    exporter: ExporterProcess
    prom: promkit.PrometheusServer
    #: Newest event ``ts`` in the data folder (the exporter's as-of with ``--as-of latest``).
    latest_event: dt.datetime
    #: Wall-clock second at which the held-back day was moved into ``events/``.
    jumped_at: float
    #: A wall-clock second after Prometheus had scraped and recorded the complete data.
    settled_at: float

    @property
    def target(self) -> str:
        """The exporter's scrape address (Prometheus' ``instance`` label)."""
        return f"127.0.0.1:{self.exporter.port}"


def simulate(out: Path) -> None:
    """``kpi simulate --out OUT`` with ``SIM_ARGS`` (the real CLI, in a subprocess)."""
    result = subprocess.run(
        [sys.executable, "-m", "kpi_cli", "simulate", "--out", str(out), *SIM_ARGS, "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def expected_rows(data: Path) -> tuple[int, dt.datetime]:
    """(event rows + complaint rows, newest event ts) of a clean simulated folder."""
    events = pl.scan_parquet(data / "events" / "*.parquet").select(
        pl.len().alias("n"), pl.col("ts").max().alias("latest")
    )
    row = events.collect().row(0, named=True)
    complaints = pl.scan_parquet(data / "complaints" / "*.parquet").select(pl.len()).collect()
    return int(row["n"]) + int(complaints.item()), row["latest"]


def _value(prom: promkit.PrometheusServer, expr: str) -> float | None:
    try:
        return prom.value(expr)
    except promkit.PromQLError:
        return None


@contextlib.contextmanager
def run_stack(root: Path) -> Iterator[Stack]:
    """Simulate, start exporter and Prometheus, feed the last day live; kill both on exit."""
    promkit.require_binary("prometheus")
    data = root / "data"
    simulate(data)
    rows, latest = expected_rows(data)
    # Hold the newest day back: Prometheus must see the counters before and after it.
    held = root / "held"
    held.mkdir()
    last_day = sorted((data / "events").glob("events-*.parquet"))[-1]
    os.replace(last_day, held / last_day.name)

    workdir = root / "prometheus"
    workdir.mkdir()
    rule_files = [
        fast_rule_copy(REPO / "prometheus/rules.yml", workdir / "rules.yml"),
        fast_rule_copy(REPO / "prometheus/alerts.yml", workdir / "alerts.yml", for_=FAST_FOR),
    ]
    exporter = ExporterProcess(
        data, root / "state", ["--as-of", "latest", "--refresh-interval", "1s"]
    )
    job = f'job="{cat.EXPORTER_JOB}"'
    ingested = f"sum({cat.EXPORTER_EVENTS_INGESTED.series}{{{job}}})"
    samples = f"count_over_time({cat.EXPORTER_EVENTS_INGESTED.series}{{{job}}}[1m])"
    last_event = f"max({cat.EXPORTER_LAST_EVENT_TIMESTAMP.series})"
    try:
        exporter.start()
        exporter.wait_ready(timeout=60)
        target = f"127.0.0.1:{exporter.port}"
        with promkit.run_prometheus(workdir, {cat.EXPORTER_JOB: [target]}, rule_files) as prom:
            # Two scrapes of the partial data, so increase() has a "before" sample.
            prom.wait_for(
                lambda: (_value(prom, samples) or 0) >= 2,
                timeout=30,
                what="two scrapes of the partial data",
            )
            partial = _value(prom, ingested)
            assert partial is not None and 0 < partial < rows
            jumped_at = time.time()
            os.replace(held / last_day.name, data / "events" / last_day.name)
            # Caught up: every row ingested and the newest event is the data's newest.
            prom.wait_for(
                lambda: (
                    _value(prom, ingested) == rows
                    and _value(prom, last_event) == latest.timestamp()
                ),
                timeout=30,
                what=f"{rows} rows ingested up to {latest.isoformat()}",
            )
            # ... and the recording rules evaluated on the complete data.
            prom.wait_for(
                lambda: (_value(prom, "count(postal:on_time:ratio_rate1d >= 0)") or 0) > 0,
                timeout=20,
                what="a recorded 1-day on-time ratio",
            )
            time.sleep(1.5)  # one more scrape + evaluation cycle
            yield Stack(data, exporter, prom, latest, jumped_at, time.time())
    finally:
        exporter.kill()
