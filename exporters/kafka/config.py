"""A shard's settings: what ``kpi exporter --kafka`` takes, and each partition's books."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from exporters import catalog as cat
from exporters.ingest import IngestConfig
from exporters.kafka.partition import PartitionId
from exporters.service import DEDUP_WINDOW_DEFAULT, LATE_GRACE_DEFAULT, RETENTION_DEFAULT


@dataclass(frozen=True)
class ShardConfig:
    """Everything ``kpi exporter --kafka`` takes (durations in seconds; port 0 = any free)."""

    data_dir: Path
    state_dir: Path
    bootstrap: str
    topic: str
    group: str
    complaints_topic: str | None = None
    host: str = "127.0.0.1"
    port: int = cat.EXPORTER_PORT
    refresh_interval: float = 15.0
    poll_timeout: float = 1.0
    checkpoint_interval: float = 10.0
    max_messages: int = 100_000
    #: Polls are gathered into one set per partition (``OpenSets``) for at most this long
    #: (and a third of ``refresh_interval``: ``gather_seconds``) or this many records: 5 s
    #: at 250 k events/s (a set costs ~0.1 s of CPU per partition on top of its records;
    #: gathered records hold ~75 B each, ~90 MB at the limit).
    max_set_seconds: float = 5.0
    max_set_events: int = 1_250_000
    #: Threads applying different partitions' sets at once (``SetPool``); 0 = the cores
    #: this process may run on.
    apply_threads: int = 0
    session_timeout: float = 10.0
    stall_hours: float = 48.0
    retention: float | None = RETENTION_DEFAULT
    #: The time rules of each partition's books, as ``kpi exporter``'s (``ExporterConfig``).
    late_grace: float | None = LATE_GRACE_DEFAULT
    dedup_window: float | None = DEDUP_WINDOW_DEFAULT
    max_future: float | None = None
    rejects_max_bytes: int = 64 << 20
    #: Serve from a thread instead of a serving process (``ExporterConfig``'s).
    serve_in_process: bool = False
    #: Extra librdkafka settings (tests shorten timeouts with them).
    consumer_extra: dict[str, str | int] = field(default_factory=dict)

    def ingest_config(self, pid: PartitionId) -> IngestConfig:
        """The partition's books: its state directory and the shard's time rules."""
        return IngestConfig(
            self.data_dir,
            self.state_dir / pid.key,
            retention=_delta(self.retention),
            late_grace=_delta(self.late_grace),
            dedup_window=_delta(self.dedup_window),
            max_future=_delta(self.max_future),
            rejects_max_bytes=self.rejects_max_bytes,
        )

    def gather_seconds(self) -> float:
        """How long a partition's polls may be gathered before their set is applied.

        A third of the refresh interval at most: a set gathered for longer would keep its
        records out of a refresh that a user asking for faster refreshes expects them in.
        """
        return min(self.max_set_seconds, self.refresh_interval / 3)

    def not_after(self) -> dt.datetime | None:
        """Events dated after this are ``future_ts`` (``max_future`` ahead of the wall clock)."""
        return None if self.max_future is None else _now() + dt.timedelta(seconds=self.max_future)


def _delta(seconds: float | None) -> dt.timedelta | None:
    return None if seconds is None else dt.timedelta(seconds=seconds)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
