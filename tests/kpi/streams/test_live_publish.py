"""``kpi simulate --live --kafka``: the live feed published to a real broker, keyed by item."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from kpi import contract
from kpi.simulate.live_kafka import live_publish
from kpi_cli.app import app
from tests import kafkakit

pytestmark = [pytest.mark.timeout(180)]


def _read(bootstrap: str, topic: str, partitions: int, at_least: int) -> list[dict[str, Any]]:
    """Every message of the topic so far (waiting up to 30 s for ``at_least`` of them)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": kafkakit.unique("read"), "log_level": 0}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    idle = 0
    while time.monotonic() < deadline and (len(out) < at_least or idle < 2):
        batch = consumer.consume(1000, timeout=0.5)
        idle = 0 if batch else idle + 1
        for m in batch:
            assert m.error() is None
            value = m.value()
            assert value is not None
            out.append({"key": m.key(), "value": orjson.loads(value), "p": m.partition()})
    consumer.close()
    return out


def _partitions(bootstrap: str, topic: str) -> int:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(meta.topics[topic].partitions)


def test_live_publish_sends_due_scans_keyed_by_item(kafka: kafkakit.KafkaBroker) -> None:
    topic = kafkakit.unique("live")
    before = datetime.now(UTC)
    sent = live_publish(
        kafka.bootstrap,
        topic,
        rate=400,
        seed=3,
        max_events=300,
        partitions=3,
        seconds_per_hour=0.01,
        tick=0.02,
    )
    after = datetime.now(UTC)
    assert (sent.sent, sent.delivered, sent.failed) == (300, 300, 0)
    assert _partitions(kafka.bootstrap, topic) == 3
    got = _read(kafka.bootstrap, topic, 3, 300)
    assert len(got) == 300
    rows = [m["value"] for m in got]
    assert all(list(r) == list(contract.EVENT_SCHEMA) for r in rows)
    assert len({r["event_id"] for r in rows}) == 300
    assert all(m["key"] == m["value"]["item_id"].encode() for m in got)
    stamps = [datetime.fromisoformat(r["ts"]) for r in rows]
    assert all(before - timedelta(seconds=1) <= t <= after for t in stamps)
    # Every scan of an item in one partition, in the order of its times.
    by_item: dict[str, list[dict[str, Any]]] = {}
    for m in got:
        by_item.setdefault(m["value"]["item_id"], []).append(m)
    assert len(by_item) > 3
    for scans in by_item.values():
        assert len({m["p"] for m in scans}) == 1
        times = [m["value"]["ts"] for m in scans]
        assert times == sorted(times)
    assert len({m["p"] for m in got}) > 1


def test_cli_publishes_the_live_feed_until_sigterm(
    kafka: kafkakit.KafkaBroker, tmp_path: Path
) -> None:
    topic = kafkakit.unique("live")
    out = tmp_path / "data"
    args = ["--out", str(out), "--items", "200", "--days", "2", "--live", "--rate", "200"]
    args += ["--kafka", kafka.bootstrap, "--topic", topic, "--partitions", "4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpi_cli", "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            meta = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=5)
            if topic in meta.topics and len(_read(kafka.bootstrap, topic, 4, 1)) >= 50:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = output.decode()
    assert proc.returncode == 0, text
    got = _read(kafka.bootstrap, topic, 4, 50)
    # The summary counts what the broker acknowledged: all of it is on the topic.
    assert f"live: {len(got):,} events published to {topic}" in text
    assert len(got) >= 50
    assert all(m["key"] == m["value"]["item_id"].encode() for m in got)
    # The base folder is written as without --kafka; the live events go to Kafka only.
    assert (out / "facilities.csv").exists()
    assert not list((out / "events").glob("live-*.jsonl"))


def test_kafka_needs_live(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(tmp_path), "--kafka", "127.0.0.1:1", "-q"]
    )
    assert result.exit_code != 0
    assert "add --live" in result.output
