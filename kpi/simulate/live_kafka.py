"""Live mode to Kafka: the live feed's events published to a topic as they fall due.

The same events as ``live_append`` writes to a file (``live_feed``), sent with the
producer and keying of ``kpi publish`` (``kpi.streams.kafka``): keyed by ``item_id``,
so every scan of an item goes to one partition in the order it happened.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from kpi.contract import EVENT_SCHEMA, Kind
from kpi.simulate.live import live_feed
from kpi.streams.kafka import DEFAULT_PARTITIONS, Publisher, ensure_topic, producer_config
from kpi.streams.messages import to_messages


@dataclass
class LivePublished:
    """What a live publish sent (delivered = acknowledged by the broker)."""

    topic: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def live_publish(
    bootstrap: str,
    topic: str,
    rate: float,
    seed: int = 0,
    stop: threading.Event | None = None,
    max_events: int | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    seconds_per_hour: float = 2.0,
    clock: Callable[[], float] = time.time,
    tick: float = 0.25,
    **producer_extra: str | int | bool,
) -> LivePublished:
    """Publish wall-clock events (~``rate``/s) to ``topic`` until ``stop`` or ``max_events``.

    The topic is created with ``partitions`` partitions when missing. Returns once every
    message is acknowledged (or its delivery failed).
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    ensure_topic(bootstrap, topic, partitions)
    publisher = Publisher(producer_config(bootstrap, **producer_extra))
    out = LivePublished(topic)
    schema = dict.fromkeys(EVENT_SCHEMA, pl.String())
    for lines in live_feed(rate, seed, stop, max_events, seconds_per_hour, clock, tick):
        frame = pl.read_ndjson(io.BytesIO(b"".join(lines)), schema=schema)
        keys, values = to_messages(frame.lazy(), Kind.EVENTS)
        publisher.send(topic, keys, values)
        out.sent += len(values)
    left = publisher.flush()
    out.delivered = publisher.delivered
    out.failed = publisher.failed + left
    out.errors = publisher.errors
    return out
