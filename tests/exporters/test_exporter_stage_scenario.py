"""The demo's scripted incidents stand out in Prometheus too: after the exporter caught up
on the demo folder, the stage histograms as Prometheus reads them name the slowed hub as
the worst dwell p90 and the delayed trunk route as the worst leg p90 (all time, from the
cumulative buckets; the report and the API say the same in tests/kpi/test_stage_scenario.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporters import catalog as cat
from exporters.collectors.stages import StageCollector
from exporters.ingest import IngestConfig, Ingestor
from exporters.view import MetricsView
from kpi.simulate import INCIDENT_ROUTE, INCIDENT_SLOW_HUB, SimConfig, generate, write_data_folder
from tests import promkit

pytestmark = pytest.mark.prometheus


def _worst(prom: promkit.PrometheusServer, spec: cat.MetricSpec, by: str) -> list[dict[str, str]]:
    expr = f"topk(2, histogram_quantile(0.9, sum by ({by}, le) ({spec.bucket})))"
    rows = prom.wait_for(lambda: prom.query(expr), timeout=30, what=f"{spec.name} scraped")
    rows = sorted(rows, key=lambda r: -float(r["value"][1]))
    assert float(rows[0]["value"][1]) > float(rows[1]["value"][1])  # not a tie at an edge
    return [r["metric"] for r in rows]


def test_prometheus_names_the_slow_hub_and_the_delayed_route(tmp_path: Path) -> None:
    promkit.require_binary("prometheus")
    data = tmp_path / "data"
    write_data_folder(generate(SimConfig(items=20000, days=30, seed=3)), data)
    ing = Ingestor(IngestConfig(data, tmp_path / "state"))
    while ing.step().pending:
        pass
    ing.step()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StageCollector(lambda: MetricsView(counters=ing.counters)))
    body = generate_latest(registry)  # rendered once: the counters are final
    with (
        promkit.serve_exposition(lambda: body) as target,
        promkit.run_prometheus(tmp_path / "prom", {cat.EXPORTER_JOB: [target.address]}) as prom,
    ):
        hubs = _worst(prom, cat.STAGE_DWELL, "facility")
        assert hubs[0]["facility"] == INCIDENT_SLOW_HUB
        pairs = _worst(prom, cat.STAGE_LEG, "from_region, to_region")
        assert (pairs[0]["from_region"], pairs[0]["to_region"]) == INCIDENT_ROUTE
    ing.close()
