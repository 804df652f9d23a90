"""One partition's exporter state: lifecycle, dedup set, counters, rejects and offset.

Each partition a shard holds has its own state directory ``STATE_DIR/<topic>-<partition>/``
with the exporter's usual checkpoints (``exporters.state``): the partition's next offset
is stored in the same checkpoint as the state it produced, as the position of a source
named ``kafka:<topic>/<partition>``, so the two are written together or not at all.

Built on the exporter's counting core (``exporters.books``) through its public seam: a
poll's validated records go into one ``Intake`` and are applied as one set with the
partition's next offset as the position the books carry (an opaque token to them). The
time rules are the file exporter's (``IngestConfig.policy``), set per shard.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import polars as pl

from exporters import catalog as cat
from exporters.ingest import IngestConfig, Ingestor
from exporters.intake import Intake
from exporters.reference import reload, standards_missing
from exporters.state import StateDirLock
from exporters.tail import FileState
from kpi.contract import Kind, RejectReason
from kpi.sources.files import RawBatch, reject
from kpi.sources.folder import validated_frames
from kpi.sources.validate import REJECT_SCHEMA, ROW, SOURCE
from kpi.streams.messages import source_name

log = logging.getLogger(__name__)

#: A partition as the shard keys it: (topic, partition).
Key = tuple[str, int]
#: ``FileState.fmt`` of a partition's position (offset = the next offset to read).
KAFKA_FMT: Final = "kafka"


@dataclass(frozen=True)
class PartitionId:
    """A topic partition and what its messages hold."""

    topic: str
    partition: int
    kind: Kind

    @property
    def key(self) -> str:
        """``<topic>-<partition>``: the name of its state directory."""
        return f"{self.topic}-{self.partition}"

    @property
    def source(self) -> str:
        """The ``source`` of its rejects and of its position in the checkpoint."""
        return source_name(self.topic, self.partition)


@dataclass
class Validated:
    """A partition's share of a poll, validated: good rows and every reject."""

    good: pl.DataFrame
    bad: pl.DataFrame

    @staticmethod
    def concat(shares: list[Validated]) -> Validated:
        """Several shares of one partition (in offset order) as one."""
        if len(shares) == 1:
            return shares[0]
        return Validated(
            good=pl.concat([s.good for s in shares], how="vertical_relaxed"),
            bad=pl.concat([s.bad for s in shares], how="vertical_relaxed"),
        )


class OpenSets:
    """Polls' shares gathered per partition while the consumer is behind, applied as one set each.

    Applying a set costs far more per set than per record (the joins against the state,
    the stage tables, one counter step per label set), so a shard that is catching up or
    keeping up with a fast topic applies each partition's records of several polls at
    once. A partition's set is applied when a poll comes back short (nothing more was
    waiting), when the oldest gathered share is ``max_seconds`` old (below the refresh
    interval, so the exposition is no staler) or ``max_events`` are gathered (memory).
    Nothing gathered is in a checkpoint until applied: a rewind drops the open sets and
    the consumer reads them again from the applied offsets.
    """

    def __init__(self, max_seconds: float, max_events: int) -> None:
        self.max_seconds = max_seconds
        self.max_events = max_events
        self._shares: dict[Key, list[Validated]] = {}
        self._ends: dict[Key, int] = {}
        self._rows = 0
        self._since: float | None = None

    def add(self, key: Key, share: Validated, next_offset: int) -> None:
        """Gather a partition's share of a poll; its set then ends at ``next_offset``."""
        self._shares.setdefault(key, []).append(share)
        self._ends[key] = next_offset
        self._rows += share.good.height + share.bad.height
        if self._since is None:
            self._since = time.monotonic()

    def due(self, short_poll: bool) -> bool:
        """Whether the gathered sets are to be applied now."""
        if not self._shares:
            return False
        age = time.monotonic() - (self._since or 0.0)
        return short_poll or age >= self.max_seconds or self._rows >= self.max_events

    def take(self, keys: list[Key] | None = None) -> list[tuple[Key, Validated, int]]:
        """Remove and return (partition, its set, its next offset), of ``keys`` or of all."""
        chosen = list(self._shares) if keys is None else [k for k in keys if k in self._shares]
        out = [(k, Validated.concat(self._shares[k]), self._ends[k]) for k in chosen]
        self.drop(chosen)
        return out

    def drop(self, keys: list[Key] | None = None) -> None:
        """Forget open sets (their records are read again from the applied offsets)."""
        for key in list(self._shares) if keys is None else keys:
            self._shares.pop(key, None)
            self._ends.pop(key, None)
        self._rows = sum(s.good.height + s.bad.height for v in self._shares.values() for s in v)
        if not self._shares:
            self._since = None


def apply_threads(requested: int = 0) -> int:
    """Threads that apply sets: ``requested``, or the cores this process may run on (0)."""
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class SetPool:
    """Applies different partitions' sets at once, while the consume thread reads on.

    Partitions share nothing a set writes (each has its own books, rejects file and
    checkpoint), and most of a set's work is polars queries, which run without the GIL:
    a shard with several partitions and several cores applies their sets side by side,
    and the consume thread polls, parses and validates the next records meanwhile.
    ``start`` hands sets over and returns; ``wait`` returns once the sets under way (of
    some partitions, or all) are applied or failed. A partition has at most one set under
    way (``start`` refuses a second), so its sets are applied in offset order; the shard
    waits before anything that reads a partition's applied offset as final (checkpoint,
    revocation, rewind, the next sets). Readers are unaffected: a partition's books
    publish each set's ``Ledger`` in one step under its lock, as with one thread.
    One thread (``threads=1``): ``start`` applies the sets there and then, in order.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool = (
            ThreadPoolExecutor(threads, thread_name_prefix="apply") if threads > 1 else None
        )
        self._under_way: dict[int, tuple[PartitionState, Future[Exception | None]]] = {}

    def start(self, sets: Sequence[tuple[PartitionState, Validated, int]]) -> None:
        """Start applying each (partition, its set, its next offset)."""
        ids = [id(state) for state, _, _ in sets]
        if len(set(ids)) != len(ids) or any(i in self._under_way for i in ids):
            raise ValueError("one set per partition under way: a partition's sets are in order")
        for state, share, end in sets:
            if self._pool is None:
                done: Future[Exception | None] = Future()
                done.set_result(_applied(state, share, end))
            else:
                done = self._pool.submit(_applied, state, share, end)
            self._under_way[id(state)] = (state, done)

    def wait(self, states: Iterable[PartitionState] | None = None) -> list[Done]:
        """Wait for the sets under way (of ``states``, or all); what became of each."""
        return self.wait_for(list(self._under_way) if states is None else [id(s) for s in states])

    def ready(self) -> list[Done]:
        """The sets that ended since the last look (none waited for)."""
        keys = [k for k, (_, future) in self._under_way.items() if future.done()]
        return self.wait_for(keys)

    def wait_for(self, keys: list[int]) -> list[Done]:
        """Wait for the sets under way of the partitions ``id(state)`` in ``keys``."""
        out = []
        for key in keys:
            if key in self._under_way:
                state, future = self._under_way.pop(key)
                out.append(Done(state, future.result()))
        return out

    def apply(
        self, sets: Sequence[tuple[PartitionState, Validated, int]]
    ) -> list[Exception | None]:
        """Apply the sets and wait for them: each one's failure (None: applied)."""
        self.start(sets)
        done = {id(d.state): d.failure for d in self.wait([state for state, _, _ in sets])}
        return [done[id(state)] for state, _, _ in sets]

    def close(self) -> None:
        """Stop the threads (after the sets under way)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class Done:
    """A set no longer under way: its partition, and why it failed (None: applied)."""

    state: PartitionState
    failure: Exception | None


def _applied(state: PartitionState, share: Validated, next_offset: int) -> Exception | None:
    try:
        state.apply(share, next_offset=next_offset)
    except Exception as exc:  # the caller decides (the shard rewinds to the applied offsets)
        return exc
    return None


def validate_poll(
    batch: RawBatch, kind: Kind, not_after: dt.datetime | None = None
) -> dict[str, Validated]:
    """Validate a poll's raw rows once and split them by source (partition).

    Validation has a fixed cost per call far above its cost per row, so a poll spread
    over many partitions is validated in one go rather than once per partition. Events
    dated after ``not_after`` are ``future_ts`` rejects, as in the file exporter.
    """
    good, bad = validated_frames(batch, kind, not_after)
    bad = pl.concat([batch.rejects_frame(), bad], how="vertical_relaxed")
    goods = good.partition_by(SOURCE, as_dict=True, maintain_order=True)
    bads = bad.partition_by("source", as_dict=True, maintain_order=True)
    out: dict[str, Validated] = {}
    for (source,) in {*goods, *bads}:
        out[str(source)] = Validated(
            good=goods.get((source,), good.clear()), bad=bads.get((source,), bad.clear())
        )
    return out


class NoStandardsError(RuntimeError):
    """No valid service standard was ever loaded: deadlines cannot be computed yet."""

    def __init__(self, reasons: tuple[str, ...]) -> None:
        super().__init__("; ".join(reasons))
        #: The ``/readyz`` reasons, worded as the file exporter's.
        self.reasons = reasons


class PartitionState(Ingestor):
    """The exporter books of one partition, restored from its last checkpoint.

    An ``Ingestor`` for its checkpoint, rejects file, reference files and policy (the
    partition's ``IngestConfig``: late grace, dedup window, retention, future margin), fed
    through the books' public seam (``Books.intake`` / ``Books.apply``) instead of the
    folder tailer: ``step`` is never called, and the partition's offset is the position
    the books carry (``{source: FileState}``, as a file's is).
    """

    def __init__(self, pid: PartitionId, config: IngestConfig) -> None:
        self.pid = pid
        self.dir_lock = StateDirLock(config.state_dir)
        self.dir_lock.acquire()  # RuntimeError while another shard still holds it
        try:
            super().__init__(config)
        except BaseException:
            self.dir_lock.release()
            raise

    @property
    def next_offset(self) -> int | None:
        """The first offset not yet applied (None: nothing applied since the beginning)."""
        positions = self.ledger.positions
        state = positions.get(self.pid.source) if isinstance(positions, dict) else None
        return None if state is None else int(state["offset"])

    def apply(self, share: Validated, next_offset: int) -> int:
        """Apply one poll's validated records as one set; the position moves to ``next_offset``.

        Returns the rows handled. Records that cannot be applied are one reject, and the
        partition moves on (a poison message never stops its partition).
        """
        self.reference = reload(self.config.data_dir, self.reference)
        if not self.reference.standards_loaded:
            # As the file exporter reads nothing then, the shard applies nothing: the
            # records wait in the partition (the shard seeks back) until the file is valid.
            raise NoStandardsError(
                standards_missing(self.reference) or ("no valid service standard",)
            )
        position = FileState(
            key=self.pid.source,
            path=self.pid.source,
            kind=self.pid.kind.value,
            fmt=KAFKA_FMT,
            offset=next_offset,
        )
        positions = {self.pid.source: position.to_json()}
        intake = self._set_of(share)
        try:
            self.books.apply(
                intake, self.reference.standards, positions, facilities=self.reference.facilities
            )
        except Exception as exc:  # the poll's records cannot be counted: one reject, move on
            log.exception("cannot apply a poll of %s; rejecting it", self.pid.source)
            intake = self._set_of(Validated(share.good.clear(), share.bad), exc)
            self.books.apply(
                intake, self.reference.standards, positions, facilities=self.reference.facilities
            )
        # Written once the set is applied (as the file source does); the checkpoint
        # records the rejects file's size with the offset.
        self.rejects.append(intake.rejects())
        self.books.replace(rejects_bytes=self.rejects.bytes)
        with self.lock:
            self.local.add(cat.EXPORTER_LATE_EVENTS, (), intake.late_events)
        return int(intake.rows)

    def _set_of(self, share: Validated, failed: Exception | None = None) -> Intake:
        """A set of the share's records against the current state (``failed``: one reject)."""
        intake = self.books.intake()
        if share.good.height:
            # In offset order already when gathered from the polls in order (a check, no sort).
            good = share.good
            rows = good if good.get_column(ROW).is_sorted() else good.sort(ROW)
            try:
                if self.pid.kind is Kind.EVENTS:
                    intake.add_events(rows)
                else:
                    intake.add_complaints(rows)
            except Exception as exc:
                log.exception("cannot add a poll of %s; rejecting it", self.pid.source)
                failed = exc
                intake = self.books.intake()
        if failed is not None:
            whole = reject(
                self.pid.source, None, RejectReason.MALFORMED_ROW, f"cannot apply: {failed}"
            )
            intake.add_rejects(pl.DataFrame([whole], schema=REJECT_SCHEMA))
        intake.add_rejects(share.bad)
        return intake

    def close(self) -> None:
        """Close the rejects file and free the state directory for another shard."""
        super().close()
        self.dir_lock.release()
