"""Kafka polls and partition states built in memory, for the partition and set-pool tests."""

from __future__ import annotations

from pathlib import Path

from exporters.ingest import IngestConfig
from exporters.kafka.partition import PartitionId, PartitionState
from kpi.contract import Kind
from kpi.streams.messages import Messages, source_name

TOPIC = "postal.events"
#: The facilities ``Feed`` scans at: (facility, name, type, region, threshold).
FACILITIES = [
    (f"{prefix}-{r}-{n}", f"{prefix} {r}", kind, f"CN-{r}", 50)
    for prefix, kind, n in (
        ("CO", "collection", "001"),
        ("PC", "processing", "01"),
        ("DO", "delivery", "001"),
    )
    for r in ("BJ", "SH", "GD", "SC")
]


def polls_of(values: list[bytes], parts: list[int], per_poll: int) -> list[Messages]:
    """``values`` sent to ``parts`` (offsets counted per partition), in polls of ``per_poll``."""
    offsets: dict[int, int] = {}
    sources, at = [], []
    for p in parts:
        sources.append(source_name(TOPIC, p))
        at.append(offsets.get(p, 0))
        offsets[p] = offsets.get(p, 0) + 1
    return [
        Messages(values[i : i + per_poll], sources[i : i + per_poll], at[i : i + per_poll])
        for i in range(0, len(values), per_poll)
    ]


def partition_states(root: Path, data: Path, parts: range) -> dict[int, PartitionState]:
    """A fresh ``PartitionState`` per partition of ``TOPIC``, its state under ``root``."""
    return {
        p: PartitionState(
            PartitionId(TOPIC, p, Kind.EVENTS), IngestConfig(data, root / f"{TOPIC}-{p}")
        )
        for p in parts
    }
