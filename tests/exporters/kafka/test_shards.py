"""Exporter shards over a real broker: SIGKILLs and restarts while ``kpi publish`` streams.

One folder, two ways: a single file exporter follows it, and three shards of one
consumer group consume it from 8 + 8 partitions while it is published at a steady
rate, with shards SIGKILLed and restarted at random moments. At the end the sum over
the shards of every counter series equals the file exporter's, and the real
Prometheus, which scraped the shards all along, saw no counter reset and an
``increase()`` over the run equal to the totals within a scrape's worth of events.
"""

from __future__ import annotations

import http.client
import random
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from exporters.kafka.scrape import PARTITION_RELABEL
from kpi.contract import Kind
from kpi.sources.files import read_file
from kpi.sources.folder import source_files
from tests import kafkakit, netkit, promkit
from tests.exporterkit import (
    ExporterProcess,
    SeriesKey,
    counters_only,
    fetch,
    wait_until,
)
from tests.stack_helpers import simulate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PARTITIONS = 8
RATE = 2500  # messages per second while publishing
#: Process-local metrics, not state: they restart with the process by design.
LOCAL = ("postal_exporter_batch_duration_seconds",)
PARTITION_LABELS = ("topic", "partition")


def _without_partition(samples: dict[SeriesKey, float]) -> dict[SeriesKey, float]:
    """Counter series summed over shards and partitions (their labels dropped)."""
    out: dict[SeriesKey, float] = defaultdict(float)
    for (name, labels), value in counters_only(samples, LOCAL):
        out[(name, tuple(kv for kv in labels if kv[0] not in PARTITION_LABELS))] += value
    return dict(out)


def _scrape(shard: ExporterProcess) -> dict[SeriesKey, float]:
    """The shard's samples (empty while it is down or not ready)."""
    try:
        status, body = fetch(shard.url + "/metrics", timeout=10)
    except (OSError, http.client.HTTPException):
        return {}
    if status != 200:
        return {}
    return _parse(body.decode())


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _parse(text: str) -> dict[SeriesKey, float]:
    """A text exposition's samples (a lax parser: prometheus_client's is too slow here)."""
    out: dict[SeriesKey, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name, _, labels = key.partition("{")
        out[(name, tuple(sorted(_LABEL.findall(labels))))] = float(value)
    return out


def _ingested(shards: list[ExporterProcess]) -> float:
    """Sum of ``postal_exporter_events_ingested_total`` over the shards (a quick read)."""
    out = 0.0
    for shard in shards:
        try:
            status, body = fetch(shard.url + "/metrics", timeout=10)
        except (OSError, http.client.HTTPException):
            continue
        if status == 200:
            out += sum(
                float(line.rpartition(" ")[2])
                for line in body.decode().splitlines()
                if line.startswith("postal_exporter_events_ingested_total{")
            )
    return out


def _unsent(data: Path) -> int:
    """Lines of the folder's text files that are no record (``kpi publish`` cannot send them)."""
    return sum(len(read_file(p).rejects) for kind in Kind for p in source_files(data, kind))


def _shard(
    data: Path,
    state: Path,
    broker: kafkakit.KafkaBroker,
    topics: tuple[str, str],
    group: str,
    port: int,
) -> ExporterProcess:
    return ExporterProcess(
        data,
        state,
        args=[
            "--kafka",
            broker.bootstrap,
            "--topic",
            topics[0],
            "--complaints-topic",
            topics[1],
            "--group",
            group,
            "--checkpoint-interval",
            "1s",
            "--refresh-interval",
            "0.5s",
            "--session-timeout",
            "3s",
            "--log-level",
            "WARNING",
        ],
        port=port,
        log_path=state.parent / f"shard-{port}.log",
    ).start()


def _publish_with_kills(
    data: Path,
    kafka: kafkakit.KafkaBroker,
    topics: tuple[str, str],
    shards: list[ExporterProcess],
    ports: list[int],
    group: str,
    state: Path,
) -> int:
    """Stream the folder at ``RATE`` while SIGKILLing and restarting random shards."""
    rng = random.Random(12)
    publish = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kpi_cli",
            "publish",
            str(data),
            "--kafka",
            kafka.bootstrap,
            "--topic",
            topics[0],
            "--complaints-topic",
            topics[1],
            "--rate",
            str(RATE),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    kills = 0
    while publish.poll() is None:
        time.sleep(rng.uniform(1.5, 3.0))
        if publish.poll() is not None:
            break
        victim = rng.randrange(len(shards))
        shards[victim].kill()
        kills += 1
        time.sleep(rng.uniform(0.0, 1.0))
        shards[victim] = _shard(data, state, kafka, topics, group, ports[victim])
    assert publish.wait(60) == 0, publish.stdout.read() if publish.stdout else ""
    return kills


def test_shards_survive_sigkills_and_sum_to_one_exporter(
    kafka: kafkakit.KafkaBroker, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    simulate(data)
    reference = ExporterProcess(data, tmp_path / "reference-state").start()

    topics = (kafkakit.unique("events"), kafkakit.unique("complaints"))
    for topic in topics:
        kafka.create_topic(topic, PARTITIONS)
    group = kafkakit.unique("shards")
    state = tmp_path / "shared-state"
    ports = [netkit.free_port() for _ in range(3)]
    shards = [_shard(data, state, kafka, topics, group, port) for port in ports]
    config = promkit.prometheus_config({"postal-exporter": [f"127.0.0.1:{p}" for p in ports]})
    config["scrape_configs"][0]["metric_relabel_configs"] = PARTITION_RELABEL
    with promkit.run_prometheus(tmp_path / "prom", config=config) as prom:
        try:
            for shard in shards:
                shard.wait_ready()
            # As in production, the group settles before the traffic: every partition is
            # shown (at 0) and scraped once, so increase() sees each series from its start.
            wait_until(lambda: _held(shards) == 2 * PARTITIONS, timeout=60)
            prom.wait_for(
                lambda: len(prom.query("postal_exporter_events_ingested_total")) == 2 * PARTITIONS,
                timeout=30,
            )
            started = time.time()
            kills = _publish_with_kills(data, kafka, topics, shards, ports, group, state)
            assert kills >= 2

            reference.wait_ready()
            expected = _without_partition(_scrape(reference))
            assert expected, "the reference exporter shows no counters"
            unsent = _unsent(data)

            def summed() -> dict[SeriesKey, float]:
                out: dict[SeriesKey, float] = defaultdict(float)
                for shard in shards:
                    for key, value in _without_partition(_scrape(shard)).items():
                        out[key] += value
                return dict(out)

            ingested = ("postal_exporter_events_ingested_total", ())
            try:
                wait_until(lambda: _ingested(shards) == expected[ingested], timeout=90, interval=1)
            except TimeoutError:
                raise AssertionError(f"{_ingested(shards)} != {expected[ingested]}") from None
            # Every partition shown by exactly one live shard (the group settled).
            wait_until(lambda: _held(shards) == 2 * PARTITIONS, timeout=30)
            got = summed()
            malformed = ("postal_exporter_events_rejected_total", (("reason", "malformed_row"),))
            if unsent:  # lines no message could carry: rejected by the file exporter only
                expected[malformed] = expected.get(malformed, 0) - unsent
            assert {k: v for k, v in got.items() if v} == {k: v for k, v in expected.items() if v}

            # Per-partition state was taken over from checkpoints: every events partition
            # has one (the counters above prove nothing was lost or counted twice).
            dirs = sorted(p.name for p in state.iterdir() if p.is_dir())
            assert dirs == sorted(f"{t}-{p}" for t in topics for p in range(PARTITIONS))
            assert all(any((state / f"{topics[0]}-{p}").glob("checkpoint-*")) for p in range(8))

            _check_prometheus(prom, expected[ingested], started)
        finally:
            for shard in shards:
                shard.kill()
            reference.kill()


def _check_prometheus(prom: promkit.PrometheusServer, total: float, started: float) -> None:
    """No partition series ever reset; increase() over the run equals the totals."""
    prom.wait_for(
        lambda: prom.value("sum(postal_exporter_events_ingested_total)") == total,
        timeout=20,
    )
    window = f"{int(time.time() - started) + 30}s"
    resets = prom.value(f"sum(resets(postal_exporter_events_ingested_total[{window}]))")
    assert resets == 0
    increase = prom.value(f"sum(increase(postal_exporter_events_ingested_total[{window}]))")
    assert increase is not None
    # A series' first sample is its first batch (Prometheus assumes no zero before
    # it): about one scrape (1 s) of the publish rate is not seen by increase().
    assert total - 1.5 * RATE <= increase <= total * 1.05
    series = prom.query("postal_exporter_events_ingested_total")
    assert len(series) == 2 * PARTITIONS  # one series per partition, not per owner
    assert all("instance" not in s["metric"] for s in series)


def _held(shards: list[ExporterProcess]) -> int:
    seen: list[tuple[str, str]] = []
    for shard in shards:
        for (name, labels), _ in _scrape(shard).items():
            if name == "postal_exporter_kafka_lag_messages":
                d = dict(labels)
                seen.append((d["topic"], d["partition"]))
    return len(seen) if len(seen) == len(set(seen)) else -1
