"""``make demo-kafka``: its Prometheus config scrapes both shards as the exporter's job, and
the script brings a broker, two shards, the API, the live feed and Prometheus up, with
queries over the shards answering."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporters import catalog as cat
from exporters.kafka.scrape import PARTITION_RELABEL
from exporters.mixin.configs import shards_prometheus_config
from tests import kafkakit, netkit, promkit
from tests.exporterkit import fetch

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_config_scrapes_both_shards_as_the_exporter(tmp_path: Path) -> None:
    shards = ["127.0.0.1:9108", "127.0.0.1:9109"]
    config = shards_prometheus_config(shards, "127.0.0.1:8000", "127.0.0.1:9090")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    exporter = jobs[cat.EXPORTER_JOB]
    assert exporter["static_configs"] == [{"targets": shards}]
    assert exporter["metric_relabel_configs"] == PARTITION_RELABEL
    assert jobs[cat.API_JOB]["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]
    # The project's rules and alerts are loaded (they select the exporter's job).
    assert config["rule_files"] == ["rules.yml", "alerts.yml"]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    for name in config["rule_files"]:
        (tmp_path / name).write_text((REPO / "prometheus" / name).read_text())
    result = promkit.promtool("check", "config", path)
    assert result.returncode == 0, result.stdout + result.stderr


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    import json  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    status, body = fetch(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=5)
    assert status == 200
    result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    return result


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_the_demo_brings_shards_and_prometheus_up(tmp_path: Path) -> None:
    kafkakit.require_kafka()
    promkit.require_binary("prometheus")
    ports = {
        name: str(netkit.free_port())
        for name in ("KAFKA_PORT", "CONTROLLER_PORT", "SHARD1_PORT", "SHARD2_PORT", "API_PORT")
    }
    ports["PROM_PORT"] = str(netkit.free_port())
    env = {**os.environ, **ports, "KAFKA_LIBS": str(kafkakit.jars_dir()), "LIVE_RATE": "20"}
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        ["bash", "scripts/demo_kafka.sh", str(tmp_path / "var" / "data"), "300", "3"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    prom = f"http://127.0.0.1:{ports['PROM_PORT']}"
    try:

        def ready() -> bool:
            if demo.poll() is not None:
                raise AssertionError((tmp_path / "demo.log").read_text())
            return "demo-kafka ready" in (tmp_path / "demo.log").read_text()

        promkit.wait_for(ready, timeout=200, interval=1, what="the demo")
        # Both shards are up as targets of the exporter's job, and each holds partitions.
        promkit.wait_for(
            lambda: len(_query(prom, f'up{{job="{cat.EXPORTER_JOB}"}} == 1')) == 2,
            timeout=60,
            what="both shards scraped",
        )

        def shared() -> bool:
            """Both shards hold partitions, and together all 8 + 8 (the sticky assignor
            may give one shard only one topic's: the total is what is shared)."""
            held = _query(prom, "sum by (instance) (postal_exporter_kafka_partitions_assigned)")
            counts = [float(s["value"][1]) for s in held]
            return len(counts) == 2 and min(counts) > 0 and sum(counts) == 16

        promkit.wait_for(shared, timeout=120, what="partitions shared by both shards")
        # The events of all 8 partitions are counted, one series each (no instance).
        query = 'postal_exporter_events_ingested_total{topic="postal.events"}'

        def partitions() -> list[int]:
            return sorted(int(s["metric"]["partition"]) for s in _query(prom, query))

        promkit.wait_for(lambda: partitions() == list(range(8)), timeout=60, what="8 partitions")
        series = _query(prom, query)
        assert all("instance" not in s["metric"] for s in series)
        assert sum(float(s["value"][1]) for s in series) > 0
        # The project's recording rules run over the shards: the live feed's acceptances,
        # summed over both shards and all partitions into one series per region.
        rule = "postal:items_accepted_by_destination:increase1d"
        promkit.wait_for(
            lambda: sum(float(s["value"][1]) for s in _query(prom, rule)) > 0,
            timeout=120,
            what="the recording rule over the shards",
        )
        for s in _query(prom, rule):
            assert set(s["metric"]) == {"__name__", "job", "region"}
            assert s["metric"]["job"] == cat.EXPORTER_JOB
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
        log.close()

    # Ctrl-C stops everything: no process of the demo's session is left.
    def left() -> str:
        out = subprocess.run(
            ["ps", "-o", "pid=,args=", "-s", str(demo.pid)],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip()

    deadline = time.monotonic() + 60
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left() == ""
    # The broker (in a session of its own, stopped last) is gone too.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(ports["KAFKA_PORT"])), timeout=2).close()
