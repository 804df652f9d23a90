"""``kpi publish`` against a real broker: every record once, keyed, in order per item."""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from kpi_cli.app import app
from tests import kafkakit
from tests.conftest import write_rows

runner = CliRunner()


def _event(i: int, item: str, event: str) -> dict[str, str | None]:
    return {
        "event_id": f"{item}-{i}",
        "item_id": item,
        "event": event,
        "ts": f"2027-01-11T{8 + i:02d}:00:00+08:00",
        "facility": "CO-1",
    }


def _read_all(
    bootstrap: str, topic: str, partitions: int, expected: int
) -> list[dict[str, object]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": kafkakit.unique("read"), "log_level": 0}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[dict[str, object]] = []
    for _ in range(60):
        for m in consumer.consume(1000, timeout=0.5):
            assert m.error() is None
            out.append(
                {
                    "key": m.key(),
                    "value": json.loads(m.value()),
                    "p": m.partition(),
                    "o": m.offset(),
                }
            )
        if len(out) >= expected:
            break
    consumer.close()
    return out


def test_publish_sends_a_folder_keyed_by_item_and_complaint(
    kafka: kafkakit.KafkaBroker, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    items = [f"RR{n:09d}CN" for n in range(12)]
    typed = [
        _event(i, item, ["accepted", "arrived", "departed"][i]) for item in items for i in range(3)
    ]
    write_rows(data / "events" / "a-history.parquet", typed, typed=True)
    feed = [_event(3, item, "delivered") for item in items[:5]]
    path = write_rows(data / "events" / "b-feed.csv", feed)
    path.write_text(path.read_text() + '"unterminated,quote\n')  # not a CSV record
    complaints = [
        {
            "complaint_id": f"C{n}",
            "opened_at": "2027-01-12T09:00:00Z",
            "category": "delay",
            "region": "CN-GD",
            "item_id": items[n],
        }
        for n in range(4)
    ]
    write_rows(data / "complaints" / "crm.jsonl", complaints, columns=tuple(complaints[0]))
    topic, ctopic = kafkakit.unique("events"), kafkakit.unique("complaints")

    result = runner.invoke(
        app,
        [
            "publish",
            str(data),
            "--kafka",
            kafka.bootstrap,
            "--topic",
            topic,
            "--complaints-topic",
            ctopic,
            "--partitions",
            "4",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output

    sent = _read_all(kafka.bootstrap, topic, 4, len(typed) + len(feed))
    assert len(sent) == len(typed) + len(feed)  # the bad CSV line is not sent
    assert sorted(m["value"]["event_id"] for m in sent) == sorted(
        str(r["event_id"]) for r in typed + feed
    )
    for m in sent:
        assert m["key"] == str(m["value"]["item_id"]).encode()
    # All scans of an item in one partition, in file order (history first, then the feed).
    for item in items:
        mine = sorted((m for m in sent if m["key"] == item.encode()), key=lambda m: m["o"])
        assert len({m["p"] for m in mine}) == 1
        expected = [r["event_id"] for r in typed + feed if r["item_id"] == item]
        assert [m["value"]["event_id"] for m in mine] == expected
    assert len({m["p"] for m in sent}) > 1  # 12 items spread over the 4 partitions

    got = _read_all(kafka.bootstrap, ctopic, 4, len(complaints))
    assert sorted((m["key"], m["value"]["item_id"]) for m in got) == [
        (f"C{n}".encode(), items[n]) for n in range(4)
    ]


def test_publish_reports_the_unsent_lines_and_complaints(
    kafka: kafkakit.KafkaBroker, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    path = write_rows(data / "events" / "feed.jsonl", [_event(0, "RR1", "accepted")])
    path.write_bytes(path.read_bytes() + b"{broken\n")
    write_rows(data / "complaints" / "c.csv", [{"complaint_id": "C1"}], columns=("complaint_id",))
    topic = kafkakit.unique("events")
    result = runner.invoke(
        app, ["publish", str(data), "--kafka", kafka.bootstrap, "--topic", topic]
    )
    assert result.exit_code == 0, result.output
    assert "published 1 events" in result.output
    assert "events/feed.jsonl: 1 unparseable lines not sent" in result.output
    assert "1 complaints not sent (no --complaints-topic)" in result.output
    # A new topic gets the default partition count.
    assert len(_read_all(kafka.bootstrap, topic, 8, 1)) == 1
