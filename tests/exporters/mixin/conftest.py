"""A real Prometheus running the generated rules against a synthetic catalog exposition."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporters.mixin import rules
from exporters.mixin.config import MixinConfig
from tests import promkit
from tests.exporters.mixin.synthetic import REPO, Live, SyntheticExporter, fast_rule_copy


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Prometheus (1s scrape/eval) with the generated rules, scraping a synthetic exporter."""
    promkit.require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("live-prometheus")
    config = MixinConfig()
    rule_files = [
        fast_rule_copy(REPO / "prometheus/rules.yml", workdir / "rules.yml"),
        fast_rule_copy(REPO / "prometheus/alerts.yml", workdir / "alerts.yml", for_="2s"),
    ]
    exporter = SyntheticExporter()
    registry = CollectorRegistry()
    registry.register(exporter)
    with (
        promkit.serve_exposition(lambda: generate_latest(registry)) as target,
        promkit.run_prometheus(workdir, {config.job: [target.address]}, rule_files) as prom,
    ):
        # Recording rules need two scrapes for rate(); wait for a value that needs them.
        prom.wait_for(
            lambda: prom.query(rules.on_time_ratio("1h")), timeout=30, what="first recorded ratio"
        )
        yield Live(prom, exporter, config)
