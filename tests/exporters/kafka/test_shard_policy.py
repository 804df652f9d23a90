"""The file exporter's time rules reach every partition's books: ``--late-grace``,
``--dedup-window`` and ``--max-future`` of ``kpi exporter --kafka``.

Two shards of two groups read the same one-partition topic: one with tight rules, one
with the defaults (and ``--max-future off``). A hand-made case separates them: each
rule changes one number on the tight shard and leaves the default one where the
defaults put it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from tests import kafkakit
from tests.exporterkit import (
    ExporterProcess,
    SeriesKey,
    event,
    facilities_csv,
    fetch,
    item_id,
    total,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TIGHT = ["--late-grace", "30m", "--dedup-window", "1h", "--max-future", "10m"]


def _shard(
    data: Path, state: Path, kafka: kafkakit.KafkaBroker, topic: str, *extra: str
) -> ExporterProcess:
    return ExporterProcess(
        data,
        state,
        args=[
            "--kafka",
            kafka.bootstrap,
            "--topic",
            topic,
            "--group",
            kafkakit.unique("policy"),
            "--refresh-interval",
            "0.3s",
            "--checkpoint-interval",
            "1s",
            "--log-level",
            "WARNING",
            *extra,
        ],
        log_path=state.parent / f"{state.name}.log",
    ).start()


def _send(kafka: kafkakit.KafkaBroker, topic: str, rows: list[dict[str, str | None]]) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for row in rows:
        producer.produce(topic, orjson.dumps(row), (row["item_id"] or "").encode())
    assert producer.flush(30) == 0


def _accepted(n: int, ts: dt.datetime) -> dict[str, str | None]:
    item = item_id(n)
    return event(f"{item}-a", item, "accepted", ts, "CO-1", "express", "CN-BJ", "CN-SH")


def _handled(samples: dict[SeriesKey, float] | None) -> float:
    if samples is None:
        return -1.0
    return total(samples, "postal_exporter_events_ingested_total") + total(
        samples, "postal_exporter_events_rejected_total"
    )


def test_time_rules_are_wired_to_each_partition(
    kafka: kafkakit.KafkaBroker, tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    facilities_csv(
        data / "facilities.csv",
        [("CO-1", "Counter", "collection", "CN-BJ", None),
         ("DO-1", "Office", "delivery", "CN-SH", None)],
    )  # fmt: skip
    topic = kafka.create_topic(kafkakit.unique("policy"), partitions=1)
    tight = _shard(data, tmp_path / "tight", kafka, topic, *TIGHT)
    loose = _shard(data, tmp_path / "loose", kafka, topic)
    running += [tight, loose]
    tight.wait_ready()
    loose.wait_ready()

    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    lone = item_id(2)
    # The delivery of an item never accepted waits for its acceptance for the late
    # grace (event time): 2 h later it is counted under 30 min, still held under 24 h.
    first = [
        _accepted(1, t0),
        event(f"{lone}-d", lone, "delivered", t0, "DO-1"),
        _accepted(3, t0 + dt.timedelta(hours=2)),
    ]
    _send(kafka, topic, first)
    for shard in (tight, loose):
        wait_until(lambda s=shard: _handled(s.scrape()) == 3, timeout=60)
    # Once the clock is at t0+2h: an event 1.5 h behind it is past a 1 h dedup window
    # (too_old) and inside 14 days; one 30 min ahead of the wall clock is past a 10 min
    # margin (future_ts) and accepted with none; a fresh one counts everywhere.
    second = [
        _accepted(4, t0 + dt.timedelta(minutes=30)),
        _accepted(5, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)),
        _accepted(6, t0 + dt.timedelta(hours=2, minutes=1)),
    ]
    _send(kafka, topic, second)
    for shard in (tight, loose):
        wait_until(lambda s=shard: _handled(s.scrape()) == 6, timeout=60)

    def settled(shard: ExporterProcess, awaiting: float) -> dict[SeriesKey, float]:
        wait_until(
            lambda: (
                total(shard.scrape() or {}, "postal_exporter_deliveries_awaiting_acceptance")
                == awaiting
            ),
            timeout=30,
        )
        samples = shard.scrape()
        assert samples is not None
        return samples

    got = settled(tight, 0)
    assert total(got, "postal_exporter_events_rejected_total", reason="too_old") == 1
    assert total(got, "postal_exporter_events_rejected_total", reason="future_ts") == 1
    assert total(got, "postal_items_delivered_total") == 1
    assert total(got, "postal_items_accepted_total") == 3  # items 1, 3 and 6

    base = settled(loose, 1)
    assert total(base, "postal_exporter_events_rejected_total") == 0
    assert total(base, "postal_items_delivered_total") == 0
    assert total(base, "postal_items_accepted_total") == 5  # items 1, 3, 4, 5 and 6

    # The rejects went to the partition's own rejects file, with their reasons.
    rejects = (tmp_path / "tight" / f"{topic}-0" / "rejects.jsonl").read_text().splitlines()
    reasons = sorted(json.loads(line)["reason"] for line in rejects)
    assert reasons == ["future_ts", "too_old"]


def test_contradicting_rules_stop_the_shard_at_start(
    kafka: kafkakit.KafkaBroker, tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shard = _shard(
        data, tmp_path / "state", kafka, "unused", "--late-grace", "2h", "--dedup-window", "1h"
    )
    running.append(shard)
    assert shard.process is not None
    assert shard.process.wait(60) == 1
    assert "dedup window must be at least the late grace" in shard.log()


def _readyz(process: ExporterProcess) -> tuple[int, str]:
    try:
        status, body = fetch(process.url + "/readyz", timeout=5)
    except OSError:  # not listening yet
        return 0, ""
    return status, body.decode()


def test_nothing_is_applied_without_a_valid_service_standard(
    kafka: kafkakit.KafkaBroker, tmp_path: Path, running: list[ExporterProcess]
) -> None:
    # As the file exporter reads nothing until a valid standard is loaded, a shard applies
    # nothing: the records wait in the partition and are counted once the file is fixed.
    # Meanwhile both answer /readyz 503 with the same reason.
    data = tmp_path / "data"
    data.mkdir()
    standards = data / "service-standards.yaml"
    standards.write_text("products: [express\n")  # not YAML
    topic = kafka.create_topic(kafkakit.unique("standards"), partitions=1)
    shard = _shard(data, tmp_path / "state", kafka, topic, "--max-future", "off")
    running.append(shard)
    files = ExporterProcess(data, tmp_path / "file-state", log_path=tmp_path / "file.log").start()
    running.append(files)
    # Waiting before any message: the shard says why it is not ready (it was 200 here).
    reason = "no valid service standard, nothing is read: service-standards.yaml: unreadable"
    wait_until(lambda: all(_readyz(p)[1].startswith(reason) for p in (shard, files)), timeout=60)
    status, body = _readyz(shard)
    assert status == 503, body
    assert body == _readyz(files)[1]
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    _send(kafka, topic, [_accepted(1, t0), _accepted(2, t0)])
    time.sleep(3)  # several polls while the standard is missing: none may skip the records
    assert _handled(shard.scrape()) == 0
    assert _readyz(shard) == (status, body)  # still 503, same reason, with records waiting
    standards.unlink()  # no file: the built-in standard, valid
    wait_until(lambda: _handled(shard.scrape()) == 2, timeout=60)
    got = shard.scrape()
    assert got is not None
    assert total(got, "postal_items_accepted_total") == 2
    assert total(got, "postal_exporter_events_rejected_total") == 0
    assert _readyz(shard) == (200, "ready\n")
    assert shard.log().count("no valid service standard") == 1  # logged once, not per poll


def test_a_shard_exposes_the_stage_targets_of_its_standard(
    kafka: kafkakit.KafkaBroker, tmp_path: Path, running: list[ExporterProcess]
) -> None:
    # The same target gauges as the file exporter (tests/exporters/test_stage_targets.py),
    # one series per shard: a shard reads the file when it applies a poll.
    from tests.exporters.test_stage_targets import (  # noqa: PLC0415 - shared helpers
        expected,
        standards_text,
        targets,
    )

    data = tmp_path / "data"
    data.mkdir()
    standards = data / "service-standards.yaml"
    first = standards_text(
        {"dwell_hours": {"processing": 5, "default": 11}, "leg_hours": {"default": 26}}
    )
    standards.write_text(first)
    topic = kafka.create_topic(kafkakit.unique("targets"), partitions=1)
    shard = _shard(data, tmp_path / "state", kafka, topic, "--max-future", "off")
    running.append(shard)
    shard.wait_ready()
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    _send(kafka, topic, [_accepted(1, t0)])
    wait_until(lambda: _handled(shard.scrape()) == 1, timeout=60)
    wait_until(lambda: targets(shard.scrape()) == expected(first), timeout=30)
    assert len(expected(first)) == 4

    second = standards_text({"dwell_hours": {"delivery": 30}})
    standards.write_text(second)
    _send(kafka, topic, [_accepted(2, t0)])
    wait_until(lambda: _handled(shard.scrape()) == 2, timeout=60)
    wait_until(lambda: targets(shard.scrape()) == expected(second), timeout=30)
