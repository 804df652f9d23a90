"""An exporter shard: one member of a Kafka consumer group, one exporter state per partition.

Start N shards with the same ``group``: the group coordinator spreads the partitions of
the events (and complaints) topic over them, cooperatively (``cooperative-sticky``: a
rebalance moves only the partitions that change hands). For each partition it holds, a
shard keeps a ``PartitionState`` under ``STATE_DIR/<topic>-<partition>/``:

- **assignment**: the partition's directory lock is taken, its last checkpoint loaded,
  and the consumer seeks to the offset stored in it (the beginning without one). Kafka's
  committed offsets are never read: the checkpoint is the truth.
- **consuming**: a poll's messages are parsed and validated at once, each partition's
  share gathered (``OpenSets``) and applied as one set; different partitions' sets side
  by side, while the next polls are read (``SetPool``).
- **checkpoint**: per partition, at most every ``checkpoint_interval``, the state and its
  next offset are written together (atomically); only then is that offset committed to
  Kafka (for lag tools), so Kafka's offset is never ahead of the state.
- **revocation**: a last checkpoint, then the state is closed and its lock freed, so the
  next owner continues exactly there. A shard that dies instead leaves the last
  checkpoint; the next owner replays from it, and the dedup set and counters in that
  checkpoint make the replay count nothing twice.

Metrics: every series of a partition's state carries ``topic`` and ``partition`` labels,
and a partition is only shown once the shard has consumed up to the high watermark it
saw on assignment. A partition's counters are then never lower than what its previous
owner showed (they are a function of the messages applied), so with Prometheus dropping
``instance`` from partition series (docs/scaling.md) each partition's counter is one
series that never resets across failovers. Per shard: consumer lag and lag age per
partition, and the partitions held.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Final

import polars as pl
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client.metrics_core import Metric

from exporters.books import Ledger
from exporters.exposition import Exposition, collectors, registry_of, render
from exporters.gauges import build_view_by_parts, items_tracked
from exporters.kafka.config import ShardConfig
from exporters.kafka.families import Families, constant, labelled, lag_families, merged
from exporters.kafka.partition import (
    Done,
    NoStandardsError,
    OpenSets,
    PartitionId,
    PartitionState,
    SetPool,
    apply_threads,
    validate_poll,
)
from exporters.reference import Reference, reload, standards_missing
from exporters.server import Endpoints
from exporters.service import (
    version,
)
from exporters.serving import Server, make_server, run_serving
from exporters.state import write_checkpoint
from exporters.store import CounterStore
from exporters.view import MetricsView, SelfStats
from kpi.contract import FACILITY_SCHEMA, Kind
from kpi.standards import DEFAULT_STANDARDS
from kpi.streams.messages import Messages, parse_messages, source_name

log = logging.getLogger(__name__)

#: How long an assignment waits for the previous owner to free a partition's state.
LOCK_WAIT: Final = 30.0
#: Metric types that are shown per partition (the rest once per shard).
COUNTER_TYPES: Final = frozenset({"counter", "histogram"})
#: How often the consumer's watermarks are read for the lag gauges.
LAG_INTERVAL: Final = 1.0


@dataclass
class _Held:
    """A partition this shard holds."""

    state: PartitionState
    #: The high watermark seen on assignment: the partition is shown once consumed to it.
    show_from: int
    shown: bool = False
    dirty: bool = False
    last_checkpoint: float = 0.0
    high: int = 0
    caught_up_at: float = field(default_factory=time.time)
    families: list[Metric] = field(default_factory=list)


class KafkaShard:
    """The shard, embeddable: ``start()``, ``wait_ready()``, ``url``, ``stop()``."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._held: dict[tuple[str, int], _Held] = {}
        self._held_lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._families = Families()
        self._registry = registry_of([self._families])
        self._exposition: Exposition | None = None
        self._gauges: list[Metric] = []
        self._threads: list[threading.Thread] = []
        self._server: Server | None = None
        self._serving_ready = False
        self._consumer: Consumer | None = None
        self._version = version()
        self._last_lag = 0.0
        self._sets = OpenSets(config.gather_seconds(), config.max_set_events)
        self._pool = SetPool(apply_threads(config.apply_threads))
        #: A set that failed, until the consume loop rewinds (nothing may be applied before).
        self._failure: Exception | None = None
        #: Why nothing can be applied (no valid service standard), while that lasts: the
        #: reasons ``/readyz`` answers 503 with, worded as the file exporter's.
        self._waiting: tuple[str, ...] = ()
        self._reference = reload(config.data_dir, Reference(), force=True)
        # Invalid time rules (a dedup window shorter than the late grace) fail here, at
        # start, not at the first assignment.
        config.ingest_config(PartitionId(config.topic, 0, Kind.EVENTS)).policy()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> KafkaShard:
        """Join the group, bind the port and start the threads."""
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._server = make_server(
            cfg.serve_in_process,
            (cfg.host, cfg.port),
            Endpoints(
                lambda: self._exposition,
                lambda: self._serving_ready,
                self._healthy,
                lambda: (self._waiting, ()),
            ),
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": cfg.bootstrap,
                "group.id": cfg.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": int(cfg.session_timeout * 1000),
                "heartbeat.interval.ms": max(100, int(cfg.session_timeout * 1000 / 5)),
                "max.partition.fetch.bytes": 16 << 20,
                "fetch.max.bytes": 64 << 20,
                "enable.partition.eof": False,
                **cfg.consumer_extra,
            }
        )
        topics = [cfg.topic] + ([cfg.complaints_topic] if cfg.complaints_topic else [])
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._server.start()
        for name, target in (("consume", self._consume_loop), ("refresh", self._refresh_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("shard of group %s serving on %s", cfg.group, self.url)
        return self

    def stop(self) -> None:
        """Leave the group (checkpointing and freeing every partition) and stop serving."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._consumer is not None:
            # close() revokes the assignment first: the partitions are checkpointed there.
            self._consumer.close()
            self._consumer = None
        self._finished(self._pool.wait())  # sets the consume thread left under way
        with self._held_lock:
            left = list(self._held.values())
            self._held.clear()
        for held in left:  # revocation did not run (e.g. never joined): save them anyway
            self._checkpoint(held)
            held.state.close()
        self._pool.close()  # after close(): its revocation applies the gathered sets
        if self._server is not None:
            self._server.stop()
            self._server = None

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then leave the group gracefully."""
        run_serving(self.start, self._healthy, self.stop, lambda: self._server)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the first exposition is rendered."""
        return self._ready.wait(timeout)

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("shard not started")
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        return f"http://{self.config.host}:{self.port}"

    def held(self) -> dict[str, int | None]:
        """``<topic>-<partition>`` -> next offset of every partition held."""
        with self._held_lock:
            return {h.state.pid.key: h.state.next_offset for h in self._held.values()}

    def _healthy(self) -> bool:
        if self._server is not None and self._server.failure:
            return False
        return all(t.is_alive() for t in self._threads) or self._stop.is_set()

    # --- assignment (these run inside consume(), on the consume thread) -------------------

    def _pid(self, tp: TopicPartition) -> PartitionId:
        kind = Kind.EVENTS if tp.topic == self.config.topic else Kind.COMPLAINTS
        return PartitionId(tp.topic, tp.partition, kind)

    def _open(self, pid: PartitionId) -> PartitionState:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                return PartitionState(pid, self.config.ingest_config(pid))
            except RuntimeError:
                # The previous owner has not let go yet (it is leaving, or its lock is
                # being released by the kernel as it dies).
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = []
        for tp in partitions:
            pid = self._pid(tp)
            state = self._open(pid)
            offset = state.next_offset
            start = OFFSET_BEGINNING if offset is None else offset
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=10
                )
            except KafkaException:
                high = -1
            held = _Held(state, show_from=max(high, 0), last_checkpoint=time.monotonic())
            held.high = max(high, 0)
            with self._held_lock:
                self._held[(tp.topic, tp.partition)] = held
            self._maybe_show(held)
            log.info("assigned %s from offset %s (high watermark %s)", pid.key, offset, high)
            assigned.append(TopicPartition(tp.topic, tp.partition, start))
        consumer.incremental_assign(assigned)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(consumer, partitions, save=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another shard may own them already: no checkpoint (it could overwrite theirs).
        self._release(consumer, partitions, save=False)

    def _release(self, consumer: Consumer, partitions: list[TopicPartition], save: bool) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        with self._held_lock:
            states = [h.state for k in keys if (h := self._held.get(k)) is not None]
        # Their sets under way end first: the state is checkpointed and handed over below.
        self._finished(self._pool.wait(states))
        if save:
            try:
                self._flush(keys, wait=True)
            except Exception:  # not applied: the next owner reads them from the checkpoint
                log.exception("cannot apply the gathered records of %s on release", keys)
        self._sets.drop(keys)
        with self._held_lock:
            gone = [self._held.pop((tp.topic, tp.partition), None) for tp in partitions]
        for held in gone:
            if held is None:
                continue
            if save:
                self._checkpoint(held, consumer)
            held.state.close()
            log.info("released %s at offset %s", held.state.pid.key, held.state.next_offset)
        self._render()  # its series leave this shard's exposition now, not at the next refresh
        consumer.incremental_unassign([TopicPartition(tp.topic, tp.partition) for tp in partitions])

    # --- consuming ---------------------------------------------------------------------

    def _consume_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        cfg = self.config
        short = False
        while not self._stop.is_set():
            try:
                # Caught up (a short poll): the sets end before the next poll waits.
                self._finished(self._pool.wait() if short else self._pool.ready())
                self._check_standards()
                self._raise_failure()
                messages = consumer.consume(cfg.max_messages, timeout=cfg.poll_timeout)
                short = len(messages) < cfg.max_messages
                self._apply(messages)
                self._lag(consumer)
                self._checkpoints(consumer)
            except NoStandardsError:  # polled again (and rewound) until the file is valid
                self._rewind(consumer)
                # As of now: a set under way may fail after the file was fixed.
                self._check_standards()
                self._stop.wait(cfg.poll_timeout)
            except Exception:  # never let one bad poll end the process
                log.exception("consume step failed; reading again from the applied offsets")
                self._rewind(consumer)
                self._stop.wait(cfg.poll_timeout)

    def _check_standards(self) -> None:
        """Whether a valid service standard is loaded, checked every poll (messages or not).

        A partition's books refuse to apply anything without one; this check, on the
        shard's own copy of the reference files, is what ``/readyz`` shows, also while
        the topic is quiet or no partition is held.
        """
        self._reference = reload(self.config.data_dir, self._reference)
        self._wait_for_standards(standards_missing(self._reference))

    def _wait_for_standards(self, reasons: tuple[str, ...]) -> None:
        if reasons and reasons != self._waiting:
            log.error("%s; the records wait in their partitions", "; ".join(reasons))
        elif self._waiting and not reasons:
            log.info("a valid service standard is loaded; applying again")
        if reasons != self._waiting:
            self._waiting = reasons
            self._publish()

    def _rewind(self, consumer: Consumer) -> None:
        """Seek every partition held back to its state's offset: nothing consumed is skipped."""
        self._finished(self._pool.wait())  # the offsets are final once nothing is under way
        self._failure = None
        self._sets.drop()
        with self._held_lock:
            held = list(self._held.values())
        for h in held:
            offset = h.state.next_offset
            start = OFFSET_BEGINNING if offset is None else offset
            try:
                consumer.seek(TopicPartition(h.state.pid.topic, h.state.pid.partition, start))
            except KafkaException as exc:
                log.warning("cannot seek %s back to %s: %s", h.state.pid.key, start, exc)

    def _apply(self, messages: list[Message]) -> None:
        # One NDJSON buffer and one validation per topic and poll, then each partition's
        # share is gathered for its state (in offset order, which a partition's messages
        # keep) and applied with the next polls' (``OpenSets``).
        polls: dict[str, tuple[list[bytes | None], list[str], list[int]]] = {}
        ends: dict[str, tuple[tuple[str, int], int]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            topic, partition = message.topic(), message.partition()
            assert topic is not None and partition is not None
            offset = message.offset() or 0
            source = source_name(topic, partition)
            values, sources, offsets = polls.setdefault(topic, ([], [], []))
            values.append(message.value())
            sources.append(source)
            offsets.append(offset)
            ends[source] = ((topic, partition), offset + 1)
        not_after = self.config.not_after()
        for topic, (values, sources, offsets) in polls.items():
            kind = Kind.EVENTS if topic == self.config.topic else Kind.COMPLAINTS
            batch = parse_messages(Messages(values, sources, offsets), kind)
            shares = validate_poll(batch, kind, not_after)
            for source, share in shares.items():
                key, next_offset = ends[source]
                with self._held_lock:
                    held = self._held.get(key)
                if held is None:  # revoked while the poll was under way
                    continue
                self._sets.add(key, share, next_offset)
        short = len(messages) < self.config.max_messages
        if self._sets.due(short_poll=short):
            self._flush(wait=short)  # caught up: nothing to read meanwhile

    def _flush(self, keys: list[tuple[str, int]] | None = None, wait: bool = False) -> None:
        """Start the gathered sets (of ``keys``, or all; ``wait``: until applied), each
        partition's as one set, once the sets under way ended (in order, none after a failure)."""
        self._finished(self._pool.wait())
        self._raise_failure()
        sets = []
        for key, share, next_offset in self._sets.take(keys):
            with self._held_lock:
                held = self._held.get(key)
            if held is not None:
                sets.append((held.state, share, next_offset))
        self._pool.start(sets)
        if wait:
            self._finished(self._pool.wait([state for state, _, _ in sets]))
            self._raise_failure()

    def _finished(self, done: list[Done]) -> None:
        """Sets no longer under way: mark the applied to checkpoint, keep the first failure."""
        for d in done:
            pid = d.state.pid
            with self._held_lock:
                held = self._held.get((pid.topic, pid.partition))
            if d.failure is not None:
                self._failure = self._failure or d.failure
            elif held is not None and held.state is d.state:
                held.dirty = True
                self._maybe_show(held)
        if self._waiting and any(d.failure is None for d in done):
            self._check_standards()  # a set read the fixed file: /readyz follows it now

    def _raise_failure(self) -> None:
        """Raise a set's failure: the consume loop rewinds every partition to its offset."""
        if self._failure is not None:
            raise self._failure

    def _maybe_show(self, held: _Held) -> None:
        if not held.shown and (held.state.next_offset or 0) >= held.show_from:
            held.shown = True
            log.info("%s caught up; shown", held.state.pid.key)

    def _lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._last_lag < LAG_INTERVAL:
            return
        self._last_lag = now
        with self._held_lock:
            held = list(self._held.items())
        for (topic, partition), h in held:
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=1, cached=False
                )
            except KafkaException:
                continue
            h.high = high
            if (h.state.next_offset or 0) >= high:
                h.caught_up_at = time.time()

    def _checkpoints(self, consumer: Consumer) -> None:
        due = time.monotonic() - self.config.checkpoint_interval
        with self._held_lock:
            held = [h for h in self._held.values() if h.last_checkpoint <= due]
        # A set under way would be half in the checkpoint (rejects file not yet written).
        self._finished(self._pool.wait([h.state for h in held]))
        for h in held:
            if h.dirty:
                self._checkpoint(h, consumer)

    def _checkpoint(self, held: _Held, consumer: Consumer | None = None) -> None:
        """Write the partition's state with its offset; then (only then) commit the offset."""
        if not held.dirty:
            return
        state = held.state
        ckpt = state.capture()
        try:
            write_checkpoint(state.config.state_dir, ckpt)
        except OSError:
            log.exception("checkpoint of %s failed; the previous one stays valid", state.pid.key)
            return
        held.dirty = False
        held.last_checkpoint = time.monotonic()
        state.last_checkpoint_at = ckpt.created_at
        offset = state.next_offset
        if consumer is not None and offset is not None:
            try:
                consumer.commit(
                    offsets=[TopicPartition(state.pid.topic, state.pid.partition, offset)],
                    asynchronous=True,
                )
            except KafkaException as exc:  # informational only: the checkpoint is the truth
                log.warning("offset commit of %s failed: %s", state.pid.key, exc)

    # --- metrics -------------------------------------------------------------------------

    def _refresh_loop(self) -> None:
        self._refresh()
        self._serving_ready = True
        self._publish()
        self._ready.set()
        while not self._stop.wait(self.config.refresh_interval):
            try:
                self._refresh()
            except Exception:
                log.exception("refresh failed; serving the previous exposition")

    def refresh(self) -> None:
        """Recompute every shown partition's gauges and render the exposition once."""
        self._refresh()

    def _refresh(self) -> None:
        with self._held_lock:
            held = [h for h in self._held.values() if h.shown]
        for h in held:
            h.families = self._partition_families(h)
        self._gauges = self._gauge_families(held)
        self._render()

    def _partition_families(self, held: _Held) -> list[Metric]:
        """The partition's counters and histograms, labelled with its topic and partition."""
        state = held.state
        with state.lock:
            counters, local = state.ledger.counters.copy(), state.local.copy()
        view = MetricsView(counters=counters, local=local)
        families = [
            f
            for collector in collectors(constant(view))
            for f in collector.collect()
            if f.type in COUNTER_TYPES
        ]
        labels = {"topic": state.pid.topic, "partition": str(state.pid.partition)}
        return labelled(families, labels)

    def _gauge_families(self, held: list[_Held]) -> list[Metric]:
        """The gauges over the union of the shard's partitions (what one exporter would show
        for those items): a gauge needs no continuity, and one series per shard instead
        of one per partition keeps the series count of the gauges where it was."""
        ledgers: list[Ledger] = []
        reference = None
        last_event_us: list[int] = []
        checkpoints: list[float] = []
        awaiting = 0
        for h in held:
            with h.state.lock:
                ledger, reference = h.state.ledger, h.state.reference
            ledgers.append(ledger)
            awaiting += ledger.held_deliveries()
            if ledger.clock_us is not None:
                last_event_us.append(ledger.clock_us)
            checkpoints.append(h.state.last_checkpoint_at or 0.0)
        stats = SelfStats(
            items_tracked=items_tracked(ledgers),
            deliveries_awaiting_acceptance=awaiting,
            last_event_timestamp=max(last_event_us, default=0) / 1e6,
            last_checkpoint_timestamp=max(checkpoints, default=0.0),
            version=self._version,
        )
        facilities = reference.facilities if reference else pl.DataFrame(schema=FACILITY_SCHEMA)
        standards = reference.standards if reference else DEFAULT_STANDARDS
        view = build_view_by_parts(
            ledgers,
            facilities,
            standards,
            dt.datetime.now(dt.UTC),
            CounterStore(),
            CounterStore(),
            stats,
            self.config.stall_hours,
        )
        return [
            f
            for collector in collectors(constant(view))
            for f in collector.collect()
            if f.type not in COUNTER_TYPES
        ]

    def _shard_families(self) -> list[Metric]:
        with self._held_lock:
            held = [
                (k, h.high, h.state.next_offset or 0, h.caught_up_at) for k, h in self._held.items()
            ]
        topics = {self.config.topic, *filter(None, [self.config.complaints_topic])}
        return lag_families(held, topics)

    def _render(self) -> None:
        with self._render_lock:
            with self._held_lock:
                shown = [h.families for h in self._held.values() if h.shown]
            self._families.families = [*merged(shown), *self._gauges, *self._shard_families()]
            self._exposition = render(self._registry)
        self._publish()

    def _publish(self) -> None:
        if self._server is not None:
            self._server.publish()

    @property
    def exposition(self) -> Exposition | None:
        """The exposition of the last render (None before the first)."""
        return self._exposition
