"""The exporter's counting core: state, counters and the application of one set of records.

No files here: a source (the folder tailer, or a Kafka consumer) hands over validated
records in *sets* through an ``Intake`` and calls ``Books.apply(intake, positions)``;
``positions`` is an opaque, JSON-able token of where the source stands (file read
positions, partition offsets) that is published, and checkpointed, together with the
counters it produced. A set is everything that became visible together; it is
applied as if in event-time order, whatever order its records were added in
(``kpi.kpis.increments``).

``Ledger`` is one immutable, consistent cut of the whole state: readers (refresh,
checkpoint) take ``books.ledger`` and never see half a set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from exporters import catalog as cat
from exporters.books_stages import apply_stages, stage_mark
from exporters.compact import CompactItems, item_key, key_hashes
from exporters.compact_stages import CompactStages
from exporters.intake import Intake
from exporters.seen import SeenIds, SeenWindow
from exporters.store import CounterStore
from kpi.kpis.increments import (
    COUNT,
    add_counts,
    complaint_increments,
    empty_complaint_state,
    empty_set,
    merge_complaints,
    merge_set,
    settle,
)
from kpi.lifecycle import STATE_SCHEMA, reduce_states
from kpi.standards import ServiceStandards

#: Each merge appends a chunk; many small chunks slow every later join.
_MAX_CHUNKS: Final = 16
_US: Final = dt.timedelta(microseconds=1)


def micros(delta: dt.timedelta | None) -> int | None:
    """A duration in integer microseconds (None stays None)."""
    return None if delta is None else delta // _US


@dataclass(frozen=True)
class Policy:
    """The time rules of the books (event time, microseconds; None = never)."""

    #: Finished items whose last scan is this much older than the clock leave the state.
    retention_us: int | None = None
    #: Label events wait this long (event time) for their item's acceptance.
    grace_us: int | None = 24 * 3600 * 1_000_000
    #: Event ids are remembered this long; older events are rejected ``too_old``.
    dedup_window_us: int | None = None


@dataclass(frozen=True)
class Ledger:
    """One consistent cut of the books: state, counters and the source's positions."""

    #: Counted item states, encoded (``exporters.compact``; ``items.decode()`` for frames).
    items: CompactItems = field(default_factory=CompactItems)
    #: Label events waiting for their item's acceptance (``SET_SCHEMA``, one row per item).
    held: pl.DataFrame = field(default_factory=empty_set)
    complaints: pl.DataFrame = field(default_factory=empty_complaint_state)
    seen: SeenWindow = field(default_factory=SeenWindow)
    retired: SeenIds = field(default_factory=SeenIds)
    counters: CounterStore = field(default_factory=CounterStore)
    #: The event-time clock: the newest ``ts`` read (microseconds).
    clock_us: int | None = None
    #: Where the source stands (opaque to the books).
    positions: Any = None
    #: Bytes of the rejects file once this cut's rejects are written (file sources).
    rejects_bytes: int = 0
    #: Stage scans of the items in the state, encoded (``exporters.compact_stages``).
    stages: CompactStages = field(default_factory=CompactStages)

    def held_deliveries(self) -> int:
        """Items whose delivery waits for its acceptance."""
        return int(self.held.select(pl.col("delivered_at").is_not_null().sum()).item())

    def view_items(self) -> pl.DataFrame:
        """The lifecycle state the gauges read: counted items with the held scans merged in."""
        merged, held = self.held_view()
        items = self.items.decode()
        if held.is_empty():
            return items
        touched = items.get_column("item_id").is_in(item_key(held).implode()).fill_null(False)
        return pl.concat([items.filter(~touched), merged], how="vertical")

    def held_view(self) -> tuple[pl.DataFrame, pl.Series]:
        """The items with held scans, those scans merged in (``STATE_SCHEMA``), and their
        hashes: ``view_items`` is the other items' rows plus these."""
        if self.held.is_empty():
            return pl.DataFrame(schema=STATE_SCHEMA), pl.Series("item", [], pl.UInt64)
        hashes = key_hashes(self.held.get_column("item_id"))
        cols = list(STATE_SCHEMA)
        merged = reduce_states(
            pl.concat([self.items.rows(hashes), self.held.select(cols)], how="vertical").lazy()
        ).collect()
        return merged.select(cols), hashes

    def items_tracked(self) -> int:
        """Items the gauges read: counted ones and those only held (``view_items().height``)."""
        if self.held.is_empty():
            return self.items.height
        hashes = key_hashes(self.held.get_column("item_id"))
        return self.items.height + int((~self.items.contains(hashes)).sum())


class Books:
    """The counting core: publishes one ``Ledger`` per applied set."""

    def __init__(self, ledger: Ledger, policy: Policy) -> None:
        self.lock = threading.Lock()
        self.ledger = ledger
        self.policy = policy

    def intake(self) -> Intake:
        """A new, empty set against the current state."""
        led = self.ledger
        return Intake(
            led.items, led.held, led.seen, led.retired, led.clock_us,
            self.policy.retention_us, self.policy.dedup_window_us,
        )  # fmt: skip

    def apply(
        self,
        intake: Intake,
        standards: ServiceStandards,
        positions: Any,
        rejects_bytes: int | None = None,
        *,
        facilities: pl.DataFrame,
    ) -> Ledger:
        """Apply a set and publish the new ledger in one step; returns it.

        ``facilities`` label the stage histograms (type and region of a facility): every
        source passes its reference file's, so shards and the file exporter agree.
        """
        led = self.ledger
        if intake.base_items is not led.items:
            raise RuntimeError("the intake was opened against another state")
        clock = _later(led.clock_us, intake.newest_us)
        labels = merge_set(led.held, intake.labels)
        ids = pl.concat([intake.rest.get_column("item_id"), labels.get_column("item_id")])
        stage_rows = intake.stage_rows()
        # One pass over the item table for the set's items: their rows and stage summaries.
        touched = led.items.subset(key_hashes(pl.concat([ids, stage_rows.get_column("item_id")])))
        prior = touched.rows(key_hashes(ids))
        settled = settle(prior, intake.rest, labels, standards, clock, self.policy.grace_us)
        items, gone = led.items.replace(settled.merged).retire(clock, self.policy.retention_us)
        complaints, counters = led.complaints, led.counters.copy()
        records = intake.complaints
        if not records.is_empty():
            cinc = complaint_increments(records, complaints)
            complaints = merge_complaints(complaints, records)
            if complaints.n_chunks() > _MAX_CHUNKS:
                complaints = complaints.rechunk()
            counters.add_counts(cat.COMPLAINTS, cinc.complaints)
            counters.observe(cat.COMPLAINT_RESOLUTION, cinc.resolutions)
        # Late events are the process's own arrival experience: counted by the source
        # (process-local), since a restart re-reads what it lost as one larger set.
        inc = add_counts(settled.increments, intake.failures, 0)
        counters.add_counts(cat.ITEMS_ACCEPTED, inc.accepted)
        counters.add_counts(cat.ITEMS_DELIVERED, inc.delivered)
        counters.add_counts(cat.ITEMS_RETURNED, inc.returned)
        counters.add_counts(cat.DELIVERY_ATTEMPTS, inc.attempts)
        counters.add_counts(cat.DELIVERY_FAILURES, inc.failures)
        counters.observe(cat.TRANSIT_TIME, inc.transit)
        stages = apply_stages(
            counters,
            dataclasses.replace(led.stages, items=touched),
            stage_rows,
            facilities,
            prior,
            settled.merged,
            gone,
            stage_mark(clock, self.policy.grace_us),
            items,
        )
        counters.add(cat.EXPORTER_EVENTS_INGESTED, (), intake.events + intake.complaint_records)
        rejects = intake.rejects()
        if rejects.height:
            by_reason = rejects.group_by("reason").agg(pl.len().alias(COUNT))
            counters.add_counts(cat.EXPORTER_EVENTS_REJECTED, by_reason)
        new = Ledger(
            items=items if stages.items is None else stages.items,  # a fold writes into them
            held=settled.held,
            complaints=complaints,
            seen=led.seen.add(*intake.new_hashes()).prune(
                _minus(clock, self.policy.dedup_window_us)
            ),
            retired=led.retired.add(gone) if len(gone) else led.retired,
            counters=counters,
            clock_us=clock,
            positions=positions,
            rejects_bytes=led.rejects_bytes if rejects_bytes is None else rejects_bytes,
            stages=stages,
        )
        with self.lock:
            self.ledger = new
        return new

    def replace(self, **changes: Any) -> None:
        """Publish the ledger with some fields changed (e.g. new positions only)."""
        with self.lock:
            self.ledger = dataclasses.replace(self.ledger, **changes)


def _minus(clock: int | None, window: int | None) -> int | None:
    return None if clock is None or window is None else clock - window


def _later(a: int | None, b: int | None) -> int | None:
    """The later of two optional instants."""
    return b if a is None else a if b is None else max(a, b)
