"""Feeding Kafka: a data folder's records, or a live feed, as keyed JSON messages.

Events are keyed by ``item_id`` and complaints by ``complaint_id``, so all scans of an
item land in one partition, in the order they were published: the partition is the unit
of ordering and of state in the sharded exporter (``exporters.kafka``). The partitioner
is ``murmur2_random``, the Java client's, so producers in either language agree on where
an item goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from kpi.contract import Kind
from kpi.sources.files import read_file
from kpi.sources.folder import source_files
from kpi.streams.messages import to_messages

#: Partitions of a topic ``kpi publish`` creates (the unit of sharding: at most this many
#: exporter shards share the work).
DEFAULT_PARTITIONS: Final = 8
#: Messages sent between two progress reports (and polls for delivery reports).
_CHUNK: Final = 20_000


def producer_config(bootstrap: str, **extra: str | int | bool) -> dict[str, str | int | bool]:
    """Producer settings: idempotent (a retry never doubles a message), Java's partitioner."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.max.bytes": 16 << 20,
        "queue.buffering.max.messages": 1_000_000,
        **extra,
    }


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Create ``topic`` with ``partitions`` partitions when missing; returns its partition count."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=30).topics
    if topic in existing and not existing[topic].error:
        return len(existing[topic].partitions)
    future = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
    try:
        future.result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and not meta.error and meta.partitions:
            return len(meta.partitions)
        time.sleep(0.1)
    raise TimeoutError(f"topic {topic} not ready after 30 s")


@dataclass
class PublishReport:
    """What a publish sent (and could not)."""

    sent: dict[Kind, int] = field(default_factory=lambda: {Kind.EVENTS: 0, Kind.COMPLAINTS: 0})
    failed: int = 0
    #: Lines of text files that are no record (unparseable), per file: not published.
    unparsed: dict[str, int] = field(default_factory=dict)
    skipped_complaints: int = 0
    errors: list[str] = field(default_factory=list)


class Publisher:
    """A producer that sends keyed values and counts what the broker acknowledged."""

    def __init__(self, config: dict[str, str | int | bool], rate: float | None = None) -> None:
        self._producer = Producer(config)
        self._rate = rate
        self._started = time.monotonic()
        self._queued = 0
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(str(err))

    def send(self, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes]) -> None:
        """Queue messages (waiting for room in the queue, and for ``rate`` when set)."""
        produce, poll = self._producer.produce, self._producer.poll
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    produce(topic, value, key, on_delivery=self._on_delivery)
                    break
                except BufferError:  # the local queue is full: let it drain
                    poll(0.1)
            self._queued += 1
            if self._rate is not None:
                self._throttle()
        poll(0)

    def _throttle(self) -> None:
        assert self._rate is not None
        ahead = self._queued / self._rate - (time.monotonic() - self._started)
        if ahead > 0.05:
            self._producer.poll(0)
            time.sleep(ahead)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every delivery report; returns how many messages are still queued."""
        return int(self._producer.flush(timeout))


def _folder_batches(
    data_dir: Path, kind: Kind, report: PublishReport
) -> Iterable[tuple[list[bytes | None], list[bytes]]]:
    for path in source_files(data_dir, kind):
        batch = read_file(path, str(path.relative_to(data_dir)))
        if batch.rejects:
            report.unparsed[str(path.relative_to(data_dir))] = len(batch.rejects)
        yield to_messages(batch.frame, kind)


def count_rows(data_dir: Path) -> dict[Kind, int]:
    """Records a publish of the folder would send per stream (for a progress bar)."""
    counts = {}
    for kind in Kind:
        counts[kind] = sum(
            int(read_file(p).frame.select(pl.len()).collect().item())
            for p in source_files(data_dir, kind)
        )
    return counts


def publish_folder(
    data_dir: Path,
    bootstrap: str,
    topic: str,
    complaints_topic: str | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    **producer_extra: str | int | bool,
) -> PublishReport:
    """Send every event (and, with ``complaints_topic``, complaint) of a data folder.

    Files go in name order and rows in file order. ``rate`` caps messages per second
    (a steady stream for demos and failover tests); ``progress`` gets each sent count.
    """
    report = PublishReport()
    targets = {Kind.EVENTS: topic}
    if complaints_topic:
        targets[Kind.COMPLAINTS] = complaints_topic
    for target in targets.values():
        ensure_topic(bootstrap, target, partitions)
    publisher = Publisher(producer_config(bootstrap, **producer_extra), rate)
    # Small slices under a rate, so the progress moves several times a second.
    step = _CHUNK if rate is None else max(1, min(_CHUNK, int(rate / 4)))
    for kind in Kind:
        name: str | None = targets.get(kind)
        for keys, values in _folder_batches(data_dir, kind, report):
            if name is None:
                report.skipped_complaints += len(values)
                continue
            for start in range(0, len(values), step):
                end = min(start + step, len(values))
                publisher.send(name, keys[start:end], values[start:end])
                report.sent[kind] += end - start
                if progress is not None:
                    progress(end - start)
    left = publisher.flush()
    report.failed = publisher.failed + left
    report.errors = publisher.errors
    return report
