"""A lake read for questions: snapshots from its lifecycle tables, drill-downs from one bucket.

The default snapshot (as of the lake's last event) starts from the per-bucket
lifecycle tables ``kpi compact`` keeps (``kpi.lake_tables``): about one row per item
is read, never the events. What still needs events reads as little of the lake as it
can, lazily (``polars.scan_parquet``), only the columns and rows it uses:

- an item's timeline reads only its bucket (``kpi.lake.bucket_of`` of the id), and in
  it only the parts dated up to the as-of instant;
- the stage tables (dwell, legs, first and last mile) read the stage scans' five
  columns of the parts dated up to as-of, built on the first stage question;
- a snapshot at another as-of rebuilds the lifecycle from the parts dated up to it.

Answers equal those of the single-process engine on the folder the lake was
compacted from (the lake holds its validated, de-duplicated events).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from kpi.contract import UTC
from kpi.kpis.query import Snapshot
from kpi.kpis.stages import STAGE_EVENTS, StageTables, item_stage_rows, stage_tables
from kpi.lake import MANIFEST, LakeVersion, bucket_of, read_complaints
from kpi.lake_tables import TABLES, Tables, part_bucket, part_date, read_tables, scan_parts
from kpi.lifecycle import lifecycle
from kpi.sources.folder import FACILITIES_FILE, DataSet
from kpi.standards import STANDARDS_FILE

log = logging.getLogger(__name__)

#: Files whose change is a new version of the lake (its commit points and references).
VERSION_FILES: Final = (MANIFEST, TABLES, FACILITIES_FILE, STANDARDS_FILE)
_EVENT_ORDER: Final = ("item_id", "ts", "event", "event_id")


def is_lake(path: Path) -> bool:
    """Whether ``path`` is a lake (``kpi compact`` wrote its manifest there)."""
    return (path / MANIFEST).is_file()


#: A lake version's stamp: (file, size, mtime in ns) of each file of ``VERSION_FILES`` there.
Stamp = tuple[tuple[str, int, int], ...]


def version_stamp(lake: Path) -> Stamp:
    """What names a lake's version: its commit points and reference files, as found now."""
    out: list[tuple[str, int, int]] = []
    for name in VERSION_FILES:
        try:
            st = (lake / name).stat()
        except FileNotFoundError:
            continue
        out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _upto(parts: list[str], as_of: dt.datetime | None) -> list[str]:
    """The parts that may hold events at or before ``as_of`` (by their UTC date)."""
    if as_of is None:
        return parts
    day = as_of.astimezone(dt.UTC).date()
    return [p for p in parts if (d := part_date(p)) is None or d <= day]


@dataclass(frozen=True)
class LakeReader(LakeVersion):
    """A lake version and how to read it: buckets, items, snapshots."""

    def bucket_parts(self, bucket: int, as_of: dt.datetime | None = None) -> list[str]:
        """The committed parts of one bucket dated up to ``as_of`` (relative paths)."""
        parts = [p for p in self.manifest.parts if part_bucket(p) == bucket]
        return _upto(parts, as_of)

    def item_parts(self, item_id: str, as_of: dt.datetime | None = None) -> list[str]:
        """The parts an item's timeline reads: its bucket's, dated up to ``as_of``."""
        return self.bucket_parts(bucket_of(item_id, self.manifest.buckets), as_of)

    def item_events(self, item_id: str, as_of: dt.datetime) -> pl.DataFrame:
        """The item's events at or before ``as_of``, in lifecycle order (its bucket only)."""
        events = scan_parts(self.lake, self.item_parts(item_id, as_of))
        return (
            events.filter((pl.col("item_id") == item_id) & (pl.col("ts") <= as_of))
            .sort(list(_EVENT_ORDER))
            .collect()
        )

    def events(self, as_of: dt.datetime | None = None) -> pl.LazyFrame:
        """Every committed event (of the parts dated up to ``as_of``), lazily."""
        return scan_parts(self.lake, _upto(self.manifest.parts, as_of))

    def dataset(self, as_of: dt.datetime | None = None) -> DataSet:
        """The lake as a data set (events lazily, from the parts dated up to ``as_of``)."""
        return DataSet(
            events=lambda: self.events(as_of),
            complaints=read_complaints(self.lake),
            facilities=self.facilities,
            standards=self.standards,
        )

    def tables(self) -> Tables:
        """Every item's state from the lifecycle tables (plus parts they do not cover yet)."""
        return read_tables(self.lake, self.manifest.parts)

    def stage_events(self, as_of: dt.datetime) -> pl.LazyFrame:
        """The stage scans up to ``as_of``: five columns, four event types (lake ids are unique)."""
        return (
            self.events(as_of)
            .select("item_id", "event", pl.col("ts").cast(UTC), "facility", "event_id")
            .filter(pl.col("event").is_in(STAGE_EVENTS) & (pl.col("ts") <= as_of))
        )

    def snapshot(self, tables: Tables | None = None) -> Snapshot:
        """The snapshot as of the lake's last event, from the lifecycle tables."""
        tables = tables if tables is not None else self.tables()
        effective = tables.last or dt.datetime.now(dt.UTC)
        # One chunk, not one per bucket file: every KPI question scans it (~15 % faster).
        table = lifecycle(tables.state.lazy(), self.standards).collect().rechunk()
        complaints = read_complaints(self.lake).filter(pl.col("opened_at") <= effective).collect()
        if tables.uncovered:
            log.warning(
                "%s: %d committed part(s) not in the lifecycle tables yet (merged from their "
                "events; `kpi compact` catches the tables up)",
                self.lake,
                tables.uncovered,
            )

        def build_stages() -> StageTables:
            return item_stage_rows(
                stage_tables(self.stage_events(effective)), table, self.standards
            )

        return Snapshot(
            table,
            complaints,
            self.facilities,
            effective,
            tables.first,
            stage_builder=build_stages,
            stage_targets=self.standards.stages,
        )

    def snapshot_at(self, as_of: dt.datetime) -> Snapshot:
        """The snapshot as of another instant: rebuilt from the parts dated up to it."""
        snap = Snapshot.from_dataset(self.dataset(as_of), as_of)
        if snap.first_event_at is None:
            # Nothing up to as-of in those parts: the window starts at the lake's first event.
            snap.first_event_at = self.events().select(pl.col("ts").min()).collect().item()
        return snap


@dataclass(frozen=True)
class LakeStart:
    """A lake's first read for a server: the version stamped before reading, its snapshot."""

    stamp: Stamp
    reader: LakeReader
    tables: Tables
    default: Snapshot


def start_reading(lake: Path) -> Future[LakeStart]:
    """Read the lake's default snapshot in a thread (``kpi api`` starts it before importing
    the web stack, whose import then overlaps the read's polars work)."""
    future: Future[LakeStart] = Future()

    def read() -> None:
        try:
            stamp = version_stamp(lake)  # before reading: a change meanwhile is a new version
            reader = LakeReader.open(lake)
            tables = reader.tables()
            snap = reader.snapshot(tables)
            # Overlaps the web stack's import too; its hour counts follow the first load.
            snap.prepare(index=False)
            future.set_result(LakeStart(stamp, reader, tables, snap))
        except BaseException as exc:  # handed to the store, which reads the lake again
            future.set_exception(exc)

    # Not a daemon: a start-up that fails meanwhile exits once the read is done, never
    # with polars' threads cut off mid-read.
    threading.Thread(target=read, name="lake-start").start()
    return future
