"""The file side of the exporter: poll the folder, validate, gather sets, apply them.

``Ingestor.step`` reads one bounded micro-batch (``exporters.tail``), validates it
and adds it to the current *set* (``exporters.intake``). While the reader reports
more data waiting (a history at the first start, what was written while the
exporter was down, several files at once), the set keeps growing over several
steps; when a poll ends with nothing more waiting, the set is applied in one step
(``exporters.books``), in event-time order, and published with the read positions
it was read up to. The counting core never sees a file: the read positions are an
opaque token to it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from exporters import catalog as cat
from exporters.books import Books, Ledger, Policy, micros
from exporters.compact import trim_heap
from exporters.intake import DUPLICATE, RETIRED, TOO_OLD, Intake
from exporters.reference import Reference, reload
from exporters.seen import DAY_US, SeenIds, SeenWindow
from exporters.state import Checkpoint, RejectsFile, latest_checkpoint
from exporters.store import CounterStore
from exporters.tail import Chunk, FileState, Tailer
from kpi.contract import Kind, RejectReason
from kpi.kpis.increments import SECONDS
from kpi.sources.files import reject
from kpi.sources.folder import validated_frames
from kpi.sources.validate import REJECT_SCHEMA, ROW

log = logging.getLogger(__name__)

__all__ = ["DUPLICATE", "REJECT_REASONS", "RETIRED", "TOO_OLD", "IngestConfig", "Ingestor"]

#: Every reject reason, so their series exist (at 0) from the start.
REJECT_REASONS: Final = tuple(r.value for r in RejectReason)
#: A set is applied once it holds this many events even if more data is waiting, so an
#: exporter that never catches up still publishes (and checkpoints) now and then.
MAX_SET_EVENTS: Final = 50_000_000
_DAY: Final = dt.timedelta(days=1)


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
    #: Attempts, deliveries and returns wait this long (event time) for their item's
    #: acceptance before they are counted with unknown labels; None never waits.
    late_grace: dt.timedelta | None = _DAY
    #: Event ids are kept this long (event time) to drop duplicates; events older than
    #: the window behind the newest event are rejected ``too_old``. None keeps every id.
    dedup_window: dt.timedelta | None = None
    #: Events dated more than this ahead of the wall clock are rejected (``future_ts``)
    #: and never move the event-time clock; None accepts any date.
    max_future: dt.timedelta | None = None
    #: The rejects file is rotated at this size.
    rejects_max_bytes: int = 64 << 20

    def policy(self) -> Policy:
        """The books' time rules."""
        grace, window = self.late_grace, self.dedup_window
        if window is not None and grace is not None and window < grace:
            raise ValueError("the dedup window must be at least the late grace")
        return Policy(micros(self.retention), micros(grace), micros(window))


@dataclass
class StepResult:
    """What one ``step`` did."""

    rows: int = 0  # input rows handled (accepted, duplicate or rejected)
    pending: bool = False  # more data was waiting when the step ended (a set is open)
    seconds: float = 0.0


def _positions(files: dict[str, FileState]) -> dict[str, dict[str, object]]:
    return {k: v.to_json() for k, v in files.items()}


def _files(positions: object) -> dict[str, FileState]:
    if not isinstance(positions, dict):
        return {}
    return {k: FileState.from_json(v) for k, v in positions.items()}


def _seen(ckpt: Checkpoint) -> SeenWindow:
    days = ckpt.seen_days
    if days is None:  # ids of an older checkpoint: kept as of its clock's day
        days = np.full(len(ckpt.seen), (ckpt.last_event_us or 0) // DAY_US, dtype=np.int64)
    return SeenWindow.from_arrays(ckpt.seen, days)


def _restore(ckpt: Checkpoint | None) -> Ledger:
    if ckpt is None:
        return Ledger(positions={})
    return Ledger(
        items=ckpt.items,
        held=ckpt.held,
        complaints=ckpt.complaints,
        seen=_seen(ckpt),
        retired=SeenIds.from_array(ckpt.retired),
        counters=ckpt.counters,
        clock_us=ckpt.last_event_us,
        positions=_positions(ckpt.files),
        rejects_bytes=ckpt.rejects_bytes,
        stages=ckpt.stages,
    )


class Ingestor:
    """The exporter's books fed from a data folder, one micro-batch per ``step``."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        trim_heap()  # also fixes glibc's mmap threshold before the restore's big arrays
        ckpt = latest_checkpoint(config.state_dir)
        self.restored_from: int | None = ckpt.seq if ckpt else None
        self.seq = ckpt.seq if ckpt else 0
        self.last_checkpoint_at: float | None = ckpt.created_at if ckpt else None
        self.books = Books(_restore(ckpt), config.policy())
        #: Process-local metrics (batch durations): not checkpointed, reset on restart.
        self.local = CounterStore()
        self.rejects = RejectsFile(
            config.state_dir, ckpt.rejects_bytes if ckpt else None, config.rejects_max_bytes
        )
        self.tailer = Tailer(config.data_dir, ckpt.files if ckpt else {}, grace=config.grace)
        if ckpt is not None and ckpt.data_dir and ckpt.data_dir != str(config.data_dir):
            log.warning("checkpoint was taken for %s, not %s", ckpt.data_dir, config.data_dir)
        self.reference = reload(config.data_dir, Reference(), force=True)
        self._intake: Intake | None = None
        #: (since, why) while a set cannot be applied (its read positions stay; retried).
        self.apply_error: tuple[float, str] | None = None
        self._not_after: dt.datetime | None = None
        trim_heap()  # the restore's temporaries: the heap shrinks to the state

    # --- the published state (between two sets) -----------------------------------------

    @property
    def lock(self) -> threading.Lock:
        """Held while a set is published."""
        return self.books.lock

    @property
    def ledger(self) -> Ledger:
        """The last published cut of the state."""
        return self.books.ledger

    @property
    def items(self) -> pl.DataFrame:
        """Counted item states, decoded (held scans not merged in; see ``Ledger.view_items``).

        Keyed by ``exporters.compact.item_key`` (the item hash), not by item id.
        """
        return self.books.ledger.items.decode()

    @property
    def complaints(self) -> pl.DataFrame:
        """Current complaint versions."""
        return self.books.ledger.complaints

    @property
    def counters(self) -> CounterStore:
        """The published counter values."""
        return self.books.ledger.counters

    @property
    def seen(self) -> SeenWindow:
        """Hashes of the event ids counted."""
        return self.books.ledger.seen

    @property
    def retired(self) -> SeenIds:
        """Hashes of the item ids retired from the state."""
        return self.books.ledger.retired

    @property
    def last_event_us(self) -> int | None:
        """The event-time clock: the newest ``ts`` read."""
        return self.books.ledger.clock_us

    # --- one micro-batch -------------------------------------------------------------------

    def step(self) -> StepResult:
        """Read one bounded micro-batch into the open set; apply the set when nothing more waits."""
        started = time.perf_counter()
        self.reference = reload(self.config.data_dir, self.reference)
        if not self.reference.standards_loaded:
            # Deadlines need a valid standard: read nothing until there is one.
            return StepResult(0, False, time.perf_counter() - started)
        future = self.config.max_future
        self._not_after = None if future is None else dt.datetime.now(dt.UTC) + future
        poll = self.tailer.poll(self.config.max_batch_bytes, self.config.max_batch_rows)
        if not poll.chunks and self._intake is None:
            return StepResult(0, poll.pending, time.perf_counter() - started)
        intake = self._intake if self._intake is not None else self.books.intake()
        self._intake = intake
        rows_before = intake.rows
        self._add_all(intake, poll.chunks)
        self.tailer.commit(poll.chunks)
        rows = intake.rows - rows_before
        if poll.pending and intake.events < MAX_SET_EVENTS:
            return StepResult(rows, True, time.perf_counter() - started)
        try:
            self._apply(intake)
        except Exception as exc:
            # The positions went back to the last applied set: the same rows are read
            # and tried again next step (a bad reference file or a bug loses nothing).
            why = f"cannot apply {intake.rows} rows: {exc}"
            if self.apply_error is None or self.apply_error[1] != why:
                log.exception("%s; retrying from the last applied position", why)
                self.apply_error = (time.monotonic(), why)
            return StepResult(0, False, time.perf_counter() - started)
        self.apply_error = None
        seconds = time.perf_counter() - started
        durations = pl.DataFrame({SECONDS: [seconds]}, schema={SECONDS: pl.Float64})
        with self.lock:
            self.local.observe(cat.EXPORTER_BATCH_DURATION, durations)
            self.local.add(cat.EXPORTER_LATE_EVENTS, (), intake.late_events)
        return StepResult(rows, poll.pending, seconds)

    def _apply(self, intake: Intake) -> None:
        """Apply the open set; on failure the read positions go back to the last applied set."""
        self._intake = None
        try:
            self.books.apply(
                intake,
                self.reference.standards,
                _positions(self.tailer.files),
                facilities=self.reference.facilities,
            )
        except Exception:
            self.tailer.files = _files(self.ledger.positions)
            raise
        # Written once the set is applied, so a failed set leaves no rejects behind.
        self.rejects.append(intake.rejects())
        self.books.replace(rejects_bytes=self.rejects.bytes)

    def _add_all(self, intake: Intake, chunks: list[Chunk]) -> None:
        """Validate chunks into the set: one call per kind; on failure chunk by chunk."""
        checked = [(chunk, *self._validate(chunk)) for chunk in chunks]
        try:
            for kind in (Kind.EVENTS, Kind.COMPLAINTS):
                frames = [rows for chunk, rows, _ in checked if chunk.kind is kind and rows.width]
                if frames:
                    self._add_rows(intake, kind, pl.concat(frames, how="vertical"))
        except Exception:
            log.exception("batch failed; applying its files one by one")
            for chunk, rows, _ in checked:
                self._add_one(intake, chunk, rows)
        for _, _, bad in checked:
            intake.add_rejects(bad)

    @staticmethod
    def _add_rows(intake: Intake, kind: Kind, rows: pl.DataFrame) -> None:
        if kind is Kind.EVENTS:
            intake.add_events(rows)
        else:
            intake.add_complaints(rows)

    def _add_one(self, intake: Intake, chunk: Chunk, rows: pl.DataFrame) -> None:
        """One chunk into the set; a chunk that cannot be applied is one reject."""
        try:
            if rows.width:
                self._add_rows(intake, chunk.kind, rows)
        except Exception as exc:
            log.exception("cannot apply %s; rejecting this chunk", chunk.source)
            whole = reject(chunk.source, None, RejectReason.UNREADABLE_FILE, f"cannot apply: {exc}")
            if chunk.after.fmt not in ("csv", "jsonl"):
                chunk.after = dataclasses.replace(chunk.after, done=True)
            intake.add_rejects(pl.DataFrame([whole], schema=REJECT_SCHEMA))

    def _validate(self, chunk: Chunk) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(good rows in file order, all rejects) of one chunk; unreadable data is one reject."""
        parse_rejects = chunk.batch.rejects_frame()
        try:
            good_df, bad_df = validated_frames(chunk.batch, chunk.kind, self._not_after)
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

    # --- checkpoints ---------------------------------------------------------------

    def capture(self) -> Checkpoint:
        """A consistent checkpoint of the last applied set (call from the ingest thread)."""
        self.rejects.sync()
        trim_heap()  # the sets' temporaries since the last checkpoint
        led = self.ledger
        seen, days = led.seen.arrays()
        self.seq += 1
        return Checkpoint(
            seq=self.seq,
            created_at=time.time(),
            files=_files(led.positions),
            counters=led.counters.copy(),
            items=led.items,
            complaints=led.complaints,
            seen=seen,
            seen_days=days,
            rejects_bytes=led.rejects_bytes,
            last_event_us=led.clock_us,
            data_dir=str(self.config.data_dir),
            retired=led.retired.array(),
            held=led.held,
            stages=led.stages,
        )

    def close(self) -> None:
        """Close the rejects file."""
        self.rejects.close()
