"""The micro-batch loop: read what is new, validate, de-duplicate, count, merge, publish.

One ``Ingestor`` owns the mutable state (lifecycle, complaints, seen ids, counters,
read positions). ``step`` computes a whole batch on the side and publishes it in one
assignment under ``lock``, so readers (refresh, checkpoint) always see the state
between two batches, where read positions and counters agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from exporters import catalog as cat
from exporters.seen import Hashes, SeenIds, hash_ids
from exporters.state import Checkpoint, RejectsFile, latest_checkpoint
from exporters.store import CounterStore
from exporters.tail import Chunk, FileState, Tailer
from kpi.contract import EVENT_SCHEMA, FACILITY_SCHEMA, Kind, RejectReason
from kpi.kpis.increments import (
    COUNT,
    SECONDS,
    ComplaintIncrements,
    EventIncrements,
    complaint_increments,
    empty_complaint_state,
    event_increments,
    merge_complaints,
)
from kpi.lifecycle import RANK_BITS, empty_state, finished, merge_events
from kpi.sources.files import reject
from kpi.sources.folder import FACILITIES_FILE, load_facilities, validated
from kpi.sources.validate import REJECT_SCHEMA, ROW, SOURCE
from kpi.standards import DEFAULT_STANDARDS, STANDARDS_FILE, ServiceStandards, load_standards

log = logging.getLogger(__name__)

#: Reject reason of an event whose id was already counted (the row is valid, it adds nothing).
DUPLICATE: Final = RejectReason.DUPLICATE.value
#: Reject reason of an event of an item retired from the state (see ``IngestConfig``).
RETIRED: Final = RejectReason.RETIRED_ITEM.value
#: Every reject reason, so their series exist (at 0) from the start.
REJECT_REASONS: Final = tuple(r.value for r in RejectReason)
_MAX_CHUNKS: Final = 16


@dataclass(frozen=True)
class IngestConfig:
    """Where to read and keep state, and how much one micro-batch may take."""

    data_dir: Path
    state_dir: Path
    max_batch_bytes: int = 32 << 20
    max_batch_rows: int = 250_000
    grace: float = 10.0
    #: Finished items whose last scan is this much older than the newest event read
    #: leave the state (event time, so a replay retires the same items); None keeps all.
    retention: dt.timedelta | None = None
    #: Events dated more than this ahead of the wall clock are rejected (``future_ts``);
    #: None accepts any date.
    max_future: dt.timedelta | None = None
    #: The rejects file is rotated at this size.
    rejects_max_bytes: int = 64 << 20


@dataclass
class StepResult:
    """What one ``step`` did."""

    rows: int = 0  # input rows handled (accepted, duplicate or rejected)
    pending: bool = False  # more data was waiting when the step ended
    seconds: float = 0.0


@dataclass
class _Batch:
    """A computed batch, ready to publish."""

    chunks: list[Chunk]
    items: pl.DataFrame
    complaints: pl.DataFrame
    new_hashes: Hashes
    events: int
    complaint_records: int
    increments: EventIncrements | None
    complaint_increments: ComplaintIncrements | None
    rejects: pl.DataFrame
    newest_event_us: int | None
    rows: int = 0
    retired: Hashes = field(default_factory=lambda: np.empty(0, dtype=np.uint64))


@dataclass
class _Reference:
    """facilities.csv and the service standards, with the file stamps they were read at."""

    facilities: pl.DataFrame
    standards: ServiceStandards
    stamps: tuple[tuple[int, int] | None, ...] = field(default=(None, None))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _raw_json(frame: pl.DataFrame) -> pl.Expr:
    cols = [c for c in frame.columns if c not in (SOURCE, ROW)]
    return pl.struct([pl.col(c).cast(pl.String) for c in cols]).struct.json_encode()


def _later(a: int | None, b: int | None) -> int | None:
    """The later of two optional instants."""
    return b if a is None else a if b is None else max(a, b)


def _rejects_of(rows: pl.DataFrame, reason: str, field_name: str) -> pl.DataFrame:
    """Valid rows dropped for ``reason`` (about ``field_name``), as reject records."""
    return rows.select(
        pl.col(SOURCE).alias("source"),
        pl.col(ROW).cast(pl.Int64).alias("row"),
        pl.lit(reason).alias("reason"),
        pl.lit(field_name).alias("field"),
        _raw_json(rows).alias("raw"),
    )


def _empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


class Ingestor:
    """The exporter's state and the micro-batch that advances it."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        ckpt = latest_checkpoint(config.state_dir)
        self.restored_from: int | None = ckpt.seq if ckpt else None
        self.seq = ckpt.seq if ckpt else 0
        self.items: pl.DataFrame = ckpt.items if ckpt else empty_state()
        self.complaints: pl.DataFrame = ckpt.complaints if ckpt else empty_complaint_state()
        self.seen = SeenIds.from_array(ckpt.seen) if ckpt else SeenIds()
        #: Item ids retired from ``items`` (hashes): their later events are rejects.
        self.retired = SeenIds.from_array(ckpt.retired) if ckpt else SeenIds()
        retention = config.retention
        self._retention_us = (
            None if retention is None else retention // dt.timedelta(microseconds=1)
        )
        self.counters: CounterStore = ckpt.counters if ckpt else CounterStore()
        self.last_event_us: int | None = ckpt.last_event_us if ckpt else None
        self.last_checkpoint_at: float | None = ckpt.created_at if ckpt else None
        #: Process-local metrics (batch durations): not checkpointed, reset on restart.
        self.local = CounterStore()
        self.rejects = RejectsFile(
            config.state_dir, ckpt.rejects_bytes if ckpt else None, config.rejects_max_bytes
        )
        self.tailer = Tailer(config.data_dir, ckpt.files if ckpt else {}, grace=config.grace)
        if ckpt is not None and ckpt.data_dir and ckpt.data_dir != str(config.data_dir):
            log.warning("checkpoint was taken for %s, not %s", ckpt.data_dir, config.data_dir)
        self.reference = _Reference(pl.DataFrame(schema=FACILITY_SCHEMA), DEFAULT_STANDARDS)
        #: Reference files whose current version is refused (file -> why); the previous
        #: version (or none) stays in use.
        self.reference_errors: dict[str, str] = {}
        #: False while no valid service standard was ever loaded: nothing is applied then.
        self.standards_loaded = False
        #: (since, why) while a batch cannot be applied (its read positions stay).
        self.apply_error: tuple[float, str] | None = None
        self._not_after: dt.datetime | None = None
        self._reload_reference(force=True)

    # --- reference data ----------------------------------------------------------

    def _reload_reference(self, force: bool = False) -> None:
        """Re-read facilities.csv / the standards when their files changed."""
        data_dir = self.config.data_dir
        stamps = (_stamp(data_dir / FACILITIES_FILE), _stamp(data_dir / STANDARDS_FILE))
        if not force and stamps == self.reference.stamps:
            return
        facilities, standards = self.reference.facilities, self.reference.standards
        errors: dict[str, str] = {}
        try:
            facilities = load_facilities(data_dir)
        except Exception as exc:  # a bad new version is refused: the last good one stays
            errors[FACILITIES_FILE] = str(exc)
        try:
            standards = load_standards(data_dir)
            self.standards_loaded = True
        except Exception as exc:
            errors[STANDARDS_FILE] = str(exc)
        for file, why in errors.items():
            if self.reference_errors.get(file) != why:
                log.error("refusing this version of %s, keeping the previous one: %s", file, why)
        for file in set(self.reference_errors) - set(errors):
            log.info("%s is valid again and in use", file)
        with self.lock:
            self.reference = _Reference(facilities, standards, stamps)
            self.reference_errors = errors

    # --- one micro-batch ---------------------------------------------------------------

    def step(self) -> StepResult:
        """Read, validate and apply what is new (one bounded micro-batch)."""
        started = time.perf_counter()
        self._reload_reference()
        if not self.standards_loaded:
            # Deadlines need a valid standard: read nothing until there is one.
            return StepResult(0, False, time.perf_counter() - started)
        max_future = self.config.max_future
        self._not_after = None if max_future is None else dt.datetime.now(dt.UTC) + max_future
        poll = self.tailer.poll(self.config.max_batch_bytes, self.config.max_batch_rows)
        if not poll.chunks:
            return StepResult(0, poll.pending, time.perf_counter() - started)
        try:
            batch: _Batch | None = self._compute(poll.chunks)
            self.apply_error = None
        except Exception:
            if self.apply_error is None:  # once, not on every retry
                log.exception("batch failed; applying its files one by one")
            batch = self._compute_one_by_one(poll.chunks)
        if batch is None:
            return StepResult(0, False, time.perf_counter() - started)
        self._publish(batch)
        seconds = time.perf_counter() - started
        durations = pl.DataFrame({SECONDS: [seconds]}, schema={SECONDS: pl.Float64})
        with self.lock:
            self.local.observe(cat.EXPORTER_BATCH_DURATION, durations)
        return StepResult(batch.rows, poll.pending, seconds)

    def _compute_one_by_one(self, chunks: list[Chunk]) -> _Batch | None:
        """Apply chunks separately, in order, up to the first that still fails (None: none).

        The failing chunk and the ones after it are not applied, and their read
        positions do not move: the next step reads them again. Unreadable data was
        already rejected by ``_validate``; what fails here is applying valid rows (a
        reference file or a bug), and dropping them would lose good events for good.
        """
        items, complaints, seen, retired = self.items, self.complaints, self.seen, self.retired
        clock = self.last_event_us
        parts: list[_Batch] = []
        for chunk in chunks:
            try:
                part = self._compute([chunk], items, complaints, seen, retired, clock)
            except Exception as exc:
                why = f"cannot apply {chunk.source}: {exc}"
                if self.apply_error is None or self.apply_error[1] != why:
                    log.exception("%s; its read position stays, retrying", why)
                    self.apply_error = (time.monotonic(), why)
                return _combine(parts) if parts else None
            items, complaints = part.items, part.complaints
            seen = seen.add(part.new_hashes)
            retired = retired.add(part.retired)
            clock = _later(clock, part.newest_event_us)
            parts.append(part)
        self.apply_error = None
        return _combine(parts)

    def _validate(self, chunk: Chunk) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(good rows in file order, all rejects) of one chunk; unreadable data is one reject."""
        parse_rejects = chunk.batch.rejects_frame()
        try:
            good, bad = validated(chunk.batch, chunk.kind, self._not_after)
            good_df, bad_df = pl.collect_all([good, bad])
        except Exception as exc:  # e.g. a Parquet file with a valid footer and corrupt pages
            unreadable = reject(
                chunk.source, None, RejectReason.UNREADABLE_FILE, f"unreadable: {exc}"
            )
            if chunk.after.fmt not in ("csv", "jsonl"):
                chunk.after = dataclasses.replace(chunk.after, done=True)
            return pl.DataFrame(), pl.concat(
                [parse_rejects, pl.DataFrame([unreadable], schema=REJECT_SCHEMA)], how="vertical"
            )
        return good_df.sort(ROW), pl.concat([parse_rejects, bad_df], how="vertical_relaxed")

    def _compute(
        self,
        chunks: list[Chunk],
        items: pl.DataFrame | None = None,
        complaints: pl.DataFrame | None = None,
        seen: SeenIds | None = None,
        retired: SeenIds | None = None,
        clock: int | None = None,
    ) -> _Batch:
        items = self.items if items is None else items
        complaints = self.complaints if complaints is None else complaints
        seen = self.seen if seen is None else seen
        retired = self.retired if retired is None else retired
        clock = self.last_event_us if clock is None else clock
        standards = self.reference.standards
        good: dict[Kind, list[pl.DataFrame]] = {Kind.EVENTS: [], Kind.COMPLAINTS: []}
        rejects: list[pl.DataFrame] = []
        for chunk in chunks:
            rows, bad = self._validate(chunk)
            if rows.width:
                good[chunk.kind].append(rows)
            rejects.append(bad.select(REJECT_SCHEMA.keys()).cast(REJECT_SCHEMA))  # type: ignore[arg-type]
        events = (
            pl.concat(good[Kind.EVENTS], how="vertical")
            if good[Kind.EVENTS]
            else pl.DataFrame(schema={SOURCE: pl.String, ROW: pl.Int64, **EVENT_SCHEMA})
        )
        # Duplicates: within the batch the first arrival wins; across batches the seen set.
        first = events.filter(pl.col("event_id").is_first_distinct())
        hashes = hash_ids(first["event_id"])
        known_mask = seen.contains(hashes)
        known = pl.Series(known_mask)
        fresh = first.filter(~known)
        duplicates = pl.concat(
            [events.filter(~pl.col("event_id").is_first_distinct()), first.filter(known)],
            how="vertical",
        )
        handled = events.height + sum(r.filter(pl.col("row").is_not_null()).height for r in rejects)
        if not duplicates.is_empty():
            rejects.append(_rejects_of(duplicates, DUPLICATE, "event_id"))
        late = self._of_retired_items(fresh, items, retired, clock)
        if late.any():
            # A retired item's counters are final and its state is gone: a late scan
            # could count it again (a second delivery, acceptance...), so it is dropped.
            rejects.append(_rejects_of(fresh.filter(late), RETIRED, "item_id"))
        new_events = fresh.filter(~late).select(EVENT_SCHEMA.keys())
        records = (
            pl.concat(good[Kind.COMPLAINTS], how="vertical")
            if good[Kind.COMPLAINTS]
            else pl.DataFrame()
        )
        inc = event_increments(new_events, items, standards) if new_events.height else None
        new_items = merge_events(items, new_events.lazy()) if new_events.height else items
        cinc = None
        new_complaints = complaints
        if records.height:
            records = records.drop(SOURCE, ROW)
            cinc = complaint_increments(records, complaints)
            new_complaints = merge_complaints(complaints, records)
        all_rejects = pl.concat(rejects, how="vertical") if rejects else _empty_rejects()
        # The clock is the newest event read, a retired item's scans included (the
        # same whatever the batches): ``_of_retired_items`` follows it record by record.
        newest = fresh.select(pl.col("ts").max().dt.epoch("us")).item() if fresh.height else None
        new_items, gone = self._retire(new_items, _later(clock, newest))
        return _Batch(
            chunks=chunks,
            items=new_items,
            complaints=new_complaints,
            new_hashes=hashes[~known_mask],
            events=new_events.height,
            complaint_records=records.height,
            increments=inc,
            complaint_increments=cinc,
            rejects=all_rejects,
            newest_event_us=newest,
            rows=handled + records.height,
            retired=gone,
        )

    def _of_retired_items(
        self, fresh: pl.DataFrame, items: pl.DataFrame, retired: SeenIds, clock: int | None
    ) -> pl.Series:
        """Which new events (arrival order) belong to retired items.

        Retired: in ``retired`` already, or finished, with a last scan older than the
        retention behind the clock, before the event arrives (the clock being the newest
        event before it). Decided record by record, so the answer does not depend on
        where the stream is cut into batches (retiring at the end of a batch alone
        would count a late scan in one batching and drop it in another).
        """
        none = pl.repeat(False, fresh.height, eager=True)
        window = self._retention_us
        if fresh.is_empty() or (window is None and not len(retired)):
            return none
        ids = fresh.get_column("item_id")
        known = items.get_column("item_id")
        late = none
        if len(retired):
            # Only ids not in the state can be retired: hashing just those (BLAKE2b, in
            # Python) costs a fraction of hashing every event's.
            candidates = ids.filter(~ids.is_in(known.implode())).unique()
            stale = candidates.filter(pl.Series(retired.contains(hash_ids(candidates))))
            late = ids.is_in(stale.implode())
        if window is None:
            return late
        prior = items.filter(known.is_in(ids.unique().implode())).select(
            "item_id",
            finished().alias("_finished"),
            (pl.col("last_key") // RANK_BITS).alias("_last"),
        )
        ts = pl.col("_ts")
        finish = pl.col("event").is_in(["delivered", "returned"]).cast(pl.Int32)
        rows = (
            fresh.select("item_id", "event", pl.col("ts").dt.epoch("us").alias("_ts"))
            .with_row_index("_p")
            .join(prior, on="item_id", how="left", maintain_order="left")
            .with_columns(
                pl.max_horizontal(pl.lit(clock, pl.Int64), ts.cum_max().shift(1)).alias("_clock")
            )
        )
        # Only an item finished before or in this batch, whose last scan before it was
        # older than the horizon at the batch's end, can qualify: usually none, and the
        # record-by-record windows below then cost nothing (they cost 0.4 s per 250 k
        # rows run on every row).
        horizon = rows.select(pl.max_horizontal("_clock", ts).max()).item() - window
        maybe = (
            rows.group_by("item_id")
            .agg(
                (pl.col("_finished").first().fill_null(False) | (finish.max() > 0)).alias("_f"),
                pl.coalesce(pl.col("_last").first(), ts.first()).alias("_l"),
            )
            .filter(pl.col("_f") & (pl.col("_l") < horizon))
            .get_column("item_id")
        )
        if maybe.is_empty():
            return late
        finished_before = pl.col("_finished").fill_null(False) | (
            (finish.cum_sum() - finish).over("item_id") > 0
        )
        last_before = pl.max_horizontal("_last", ts.cum_max().shift(1).over("item_id"))
        # Once an item qualifies it stays retired: its later scans are not applied. (The
        # clock is over all items: a column computed before the per-item windows.)
        qualifies = (finished_before & (last_before < pl.col("_clock") - window)).fill_null(False)
        hit = (
            rows.filter(pl.col("item_id").is_in(maybe.implode()))
            .with_columns(qualifies.cast(pl.Int8).alias("_q"))
            .filter(pl.col("_q").cum_max().over("item_id") > 0)
            .get_column("_p")
        )
        by_rule = pl.int_range(fresh.height, eager=True).is_in(hit.implode())
        return late | by_rule

    def _retire(self, items: pl.DataFrame, clock: int | None) -> tuple[pl.DataFrame, Hashes]:
        """``items`` without the finished items past the retention, and their id hashes."""
        window = self._retention_us
        if window is None or clock is None or items.is_empty():
            return items, np.empty(0, dtype=np.uint64)
        horizon_key = (clock - window) * RANK_BITS
        old = items.select(finished() & (pl.col("last_key") < horizon_key)).to_series()
        if not old.any():
            return items, np.empty(0, dtype=np.uint64)
        return items.filter(~old), hash_ids(items.filter(old)["item_id"])

    def _publish(self, batch: _Batch) -> None:
        """Make a computed batch the current state (one step for every reader)."""
        self.rejects.append(batch.rejects)
        seen = self.seen.add(batch.new_hashes) if len(batch.new_hashes) else self.seen
        retired = self.retired.add(batch.retired) if len(batch.retired) else self.retired
        items, complaints = batch.items, batch.complaints
        # Each merge appends a chunk; many small chunks slow every later join.
        if items.n_chunks() > _MAX_CHUNKS:
            items = items.rechunk()
        if complaints.n_chunks() > _MAX_CHUNKS:
            complaints = complaints.rechunk()
        with self.lock:
            self.items = items
            self.complaints = complaints
            self.seen = seen
            self.retired = retired
            _apply(self.counters, batch)
            if batch.newest_event_us is not None:
                self.last_event_us = max(
                    self.last_event_us or batch.newest_event_us, batch.newest_event_us
                )
            self.tailer.commit(batch.chunks)

    # --- checkpoints ---------------------------------------------------------------

    def capture(self) -> Checkpoint:
        """A consistent checkpoint of the state between two batches (call from the ingest thread)."""
        with self.lock:
            self.seq += 1
            return Checkpoint(
                seq=self.seq,
                created_at=time.time(),
                files={k: FileState.from_json(v.to_json()) for k, v in self.tailer.files.items()},
                counters=self.counters.copy(),
                items=self.items,
                complaints=self.complaints,
                seen=self.seen.array(),
                rejects_bytes=self.rejects.sync(),
                last_event_us=self.last_event_us,
                data_dir=str(self.config.data_dir),
                retired=self.retired.array(),
            )

    def close(self) -> None:
        """Close the rejects file."""
        self.rejects.close()


def _apply(counters: CounterStore, batch: _Batch) -> None:
    """Add a batch's increments to the counters."""
    inc = batch.increments
    if inc is not None:
        counters.add_counts(cat.ITEMS_ACCEPTED, inc.accepted)
        counters.add_counts(cat.ITEMS_DELIVERED, inc.delivered)
        counters.add_counts(cat.ITEMS_RETURNED, inc.returned)
        counters.add_counts(cat.DELIVERY_ATTEMPTS, inc.attempts)
        counters.add_counts(cat.DELIVERY_FAILURES, inc.failures)
        counters.observe(cat.TRANSIT_TIME, inc.transit)
        counters.add(cat.EXPORTER_LATE_EVENTS, (), inc.late_events)
    cinc = batch.complaint_increments
    if cinc is not None:
        counters.add_counts(cat.COMPLAINTS, cinc.complaints)
        counters.observe(cat.COMPLAINT_RESOLUTION, cinc.resolutions)
    counters.add(cat.EXPORTER_EVENTS_INGESTED, (), batch.events + batch.complaint_records)
    if batch.rejects.height:
        by_reason = batch.rejects.group_by("reason").agg(pl.len().alias(COUNT))
        counters.add_counts(cat.EXPORTER_EVENTS_REJECTED, by_reason)


def _combine(parts: list[_Batch]) -> _Batch:
    """Per-chunk batches applied in order, as one: last state, concatenated rows, summed counts."""
    last = parts[-1]
    newest = [p.newest_event_us for p in parts if p.newest_event_us is not None]
    return _Batch(
        chunks=[c for p in parts for c in p.chunks],
        items=last.items,
        complaints=last.complaints,
        new_hashes=np.concatenate([p.new_hashes for p in parts]),
        retired=np.concatenate([p.retired for p in parts]),
        events=sum(p.events for p in parts),
        complaint_records=sum(p.complaint_records for p in parts),
        increments=_sum_event_increments([p.increments for p in parts if p.increments]),
        complaint_increments=_sum_complaint_increments(
            [p.complaint_increments for p in parts if p.complaint_increments]
        ),
        rejects=pl.concat([p.rejects for p in parts], how="vertical"),
        newest_event_us=max(newest) if newest else None,
        rows=sum(p.rows for p in parts),
    )


def _sum_counts(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frame = pl.concat(frames, how="vertical")
    labels = [c for c in frame.columns if c != COUNT]
    return frame.group_by(labels).agg(pl.col(COUNT).sum())


def _sum_event_increments(parts: list[EventIncrements]) -> EventIncrements | None:
    if not parts:
        return None
    return EventIncrements(
        accepted=_sum_counts([p.accepted for p in parts]),
        delivered=_sum_counts([p.delivered for p in parts]),
        returned=_sum_counts([p.returned for p in parts]),
        attempts=_sum_counts([p.attempts for p in parts]),
        failures=_sum_counts([p.failures for p in parts]),
        transit=pl.concat([p.transit for p in parts], how="vertical"),
        late_events=sum(p.late_events for p in parts),
    )


def _sum_complaint_increments(parts: list[ComplaintIncrements]) -> ComplaintIncrements | None:
    if not parts:
        return None
    return ComplaintIncrements(
        complaints=_sum_counts([p.complaints for p in parts]),
        resolutions=pl.concat([p.resolutions for p in parts], how="vertical"),
    )
