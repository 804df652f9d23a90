"""The real exporter process on a generated data set: promtool lint and a real Prometheus scrape.

Expected numbers come from the KPI engine (``Snapshot.query``, as ``kpi report``
computes them) and the folder validator, over the same files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from exporters import catalog as cat
from kpi.contract import Kind
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.simulate import SimConfig, generate, write_data_folder
from kpi.sources.folder import load_data_dir, validate_data_dir
from tests import promkit
from tests.exporterkit import ExporterProcess, fetch

pytestmark = pytest.mark.prometheus


@dataclass
class Running:
    data: Path
    exporter: ExporterProcess
    text: bytes


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("prom")
    data = root / "data"
    write_data_folder(generate(SimConfig(items=3000, days=6, seed=11, bad_rows=0.02)), data)
    exporter = ExporterProcess(
        data, root / "state", ["--as-of", "latest", "--refresh-interval", "1s"]
    ).start()
    try:
        exporter.wait_ready()
        status, text = fetch(exporter.url + "/metrics")
        assert status == 200
        yield Running(data, exporter, text)
    finally:
        exporter.terminate()


def test_promtool_check_metrics_is_silent(running: Running, tmp_path: Path) -> None:
    promtool = promkit.require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=running.text,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == b"" and result.stderr == b""


def test_prometheus_scrape_matches_the_engine(running: Running, tmp_path: Path) -> None:
    ds = load_data_dir(running.data)
    snap = Snapshot.from_dataset(ds)
    flow = snap.query(KpiQuery(kpis=("accepted_items", "delivered_items", "returned_items"))).row(
        0, named=True
    )
    network = snap.query(KpiQuery(kpis=("in_network_items", "overdue_items", "stalled_items"))).row(
        0, named=True
    )
    complaints = snap.query(KpiQuery(kpis=("open_complaints", "overdue_complaints"))).row(
        0, named=True
    )
    backlog = {
        r["facility"]: r["backlog_items"]
        for r in snap.query(KpiQuery(kpis=("backlog_items",), by=("facility",))).iter_rows(
            named=True
        )
    }
    first_attempts = snap.lifecycle.filter(pl.col("first_attempt_at").is_not_null()).height
    reports = validate_data_dir(running.data, tmp_path / "rejects")
    ingested = sum(r.accepted - (r.duplicate_ids if r.kind is Kind.EVENTS else 0) for r in reports)
    rejected = sum(r.rejected_total + r.duplicate_ids for r in reports)
    assert rejected > 0 and flow["delivered_items"] > 0 and sum(backlog.values()) > 0

    job = cat.EXPORTER_JOB
    with promkit.run_prometheus(
        tmp_path / "prom", {job: [f"127.0.0.1:{running.exporter.port}"]}
    ) as prom:
        ingested_q = f"sum({cat.EXPORTER_EVENTS_INGESTED.series})"
        prom.wait_for(lambda: prom.query(ingested_q), timeout=30, what="first scrape")

        def value(expr: str) -> float:
            v = prom.value(expr)
            assert v is not None, expr
            return v

        assert value(ingested_q) == ingested
        assert value(f"sum({cat.EXPORTER_EVENTS_REJECTED.series})") == rejected
        assert value(f"sum({cat.ITEMS_ACCEPTED.series})") == flow["accepted_items"]
        assert value(f"sum({cat.ITEMS_DELIVERED.series})") == flow["delivered_items"]
        assert value(f"sum({cat.ITEMS_RETURNED.series})") == flow["returned_items"]
        first = f'sum({cat.DELIVERY_ATTEMPTS.series}{{attempt="first"}})'
        assert value(first) == first_attempts
        assert value(f"sum({cat.ITEMS_IN_NETWORK.series})") == network["in_network_items"]
        assert value(f"sum({cat.ITEMS_OVERDUE.series})") == network["overdue_items"]
        assert value(f"sum({cat.ITEMS_STALLED.series})") == network["stalled_items"]
        assert value(f"sum({cat.COMPLAINTS_OPEN.series})") == complaints["open_complaints"]
        assert value(f"sum({cat.COMPLAINTS_OVERDUE.series})") == complaints["overdue_complaints"]
        per_facility = {
            r["metric"]["facility"]: float(r["value"][1])
            for r in prom.query(f"sum by (facility) ({cat.BACKLOG_ITEMS.series})")
        }
        assert per_facility == backlog
        # the 72 h bucket edge is exposed exactly as the catalog says
        le = cat.TRANSIT_TIME.le(cat.SECONDS_72H)
        assert prom.query(f'{cat.TRANSIT_TIME.bucket}{{le="{le}"}}')
