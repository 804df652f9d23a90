"""Helpers of the hostile-environment tests (issue 18): counts from a scrape and from the engine.

Real files, real ``kpi exporter`` processes, real SIGKILL/SIGTERM, a real tmpfs for the
full disk. Every case ends with the exporter's counters equal to what the KPI engine
(``kpi report``'s ``Snapshot``) and the folder validator compute over everything
written, so no good event was lost and none counted twice.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from exporters import catalog as cat
from kpi.contract import Kind
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.sources.folder import load_data_dir, validate_data_dir
from tests.exporterkit import (
    ExporterProcess,
    SeriesKey,
    fetch,
    total,
    wait_until,
)

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
        rejected = total(s or {}, cat.EXPORTER_EVENTS_REJECTED.series)
        handled = total(s, cat.EXPORTER_EVENTS_INGESTED.series) + rejected if s else -1
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
