"""A lake: a data folder's validated, de-duplicated events as bucketed Parquet.

Events are partitioned hive-style by a stable hash bucket of ``item_id`` and by the
event's UTC date (``events/bucket=07/date=2026-01-25/part-<run>.parquet``), so one
bucket holds every event of its items and a bucket's lifecycle needs no other bucket.
A reader sees only the parts listed in ``_manifest.json``, which a compaction replaces
atomically (write, then ``os.replace``) after its parts are in place: a reader sees
the lake before or after a compaction, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Self

import polars as pl

from kpi.contract import SCHEMAS, Kind
from kpi.lake_tables import refresh_tables
from kpi.sources.files import read_file
from kpi.sources.folder import (
    FACILITIES_FILE,
    latest_complaints,
    load_facilities,
    source_files,
    validated,
    validated_frame,
)
from kpi.standards import STANDARDS_FILE, ServiceStandards, load_standards

MANIFEST: Final = "_manifest.json"
DEFAULT_BUCKETS: Final = 64
#: Rows per compaction batch (whole files): a batch's events are what a run holds at once.
DEFAULT_BATCH_ROWS: Final = 2_000_000


class LakeError(Exception):
    """A lake that cannot be read or written as asked (with the reason)."""


def bucket_of(item_id: str, buckets: int) -> int:
    """The bucket of an item: CRC-32 (IEEE 802.3, ``zlib.crc32``) of its UTF-8 id, mod ``buckets``.

    CRC-32 is a fixed, documented polynomial: the same id lands in the same bucket on
    every machine and every version (unlike ``hash()`` or a dataframe library's hash).
    """
    return zlib.crc32(item_id.encode("utf-8")) % buckets


def bucket_expr(buckets: int) -> pl.Expr:
    """``bucket_of`` over the ``item_id`` column (computed once per distinct id)."""

    def crc(ids: pl.Series) -> pl.Series:
        return pl.Series([bucket_of(i, buckets) for i in ids.to_list()], dtype=pl.Int64)

    return pl.col("item_id").map_batches(crc, return_dtype=pl.Int64)


@dataclass
class Manifest:
    """What a lake holds: its bucket count, the committed parts, the sources compacted."""

    buckets: int
    parts: list[str] = field(default_factory=list)
    complaints: str | None = None
    #: Source file (as given) -> [size, mtime_ns] when it was compacted.
    sources: dict[str, list[int]] = field(default_factory=dict)
    #: Files of the ``event_id`` of every committed event (one per run), which
    #: de-duplication reads instead of the many small parts; None: a lake written before
    #: they were kept (its parts are read instead).
    ids: list[str] | None = None

    @classmethod
    def load(cls, lake: Path) -> Manifest | None:
        """The lake's manifest, or None for a lake never written."""
        path = lake / MANIFEST
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(
                buckets=int(raw["buckets"]),
                parts=list(raw["parts"]),
                complaints=raw.get("complaints"),
                sources={k: list(v) for k, v in raw.get("sources", {}).items()},
                ids=None if raw.get("ids") is None else list(raw["ids"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LakeError(f"{path}: not a lake manifest ({exc})") from exc

    def save(self, lake: Path) -> None:
        """Replace the manifest atomically (the commit point of a compaction)."""
        tmp = lake / f".{MANIFEST}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(self.__dict__, indent=1, sort_keys=True))
        os.replace(tmp, lake / MANIFEST)

    def bucket_parts(self, lake: Path) -> dict[int, list[Path]]:
        """Committed event parts per bucket (every bucket listed, possibly empty)."""
        out: dict[int, list[Path]] = {b: [] for b in range(self.buckets)}
        for rel in self.parts:
            bucket = int(rel.split("bucket=", 1)[1].split("/", 1)[0])
            out[bucket].append(lake / rel)
        return out


@dataclass(frozen=True)
class LakeVersion:
    """One committed version of a lake: its manifest as read once, and its reference files."""

    lake: Path
    manifest: Manifest
    facilities: pl.DataFrame
    standards: ServiceStandards

    @classmethod
    def open(cls, lake: Path) -> Self:
        """The lake's current version (``LakeError`` when it is not a lake)."""
        manifest = Manifest.load(lake)
        if manifest is None:
            raise LakeError(f"{lake} is not a lake (no {MANIFEST}): run `kpi compact` first")
        return cls(lake, manifest, load_facilities(lake), load_standards(lake))


@dataclass
class CompactReport:
    """What one compaction did."""

    files: int = 0
    rows_read: int = 0
    new_events: int = 0
    duplicate_events: int = 0
    complaints: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    parts: int = 0


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _new_files(data_dir: Path, kind: Kind, manifest: Manifest) -> list[Path]:
    return [p for p in source_files(data_dir, kind) if manifest.sources.get(str(p)) != _stamp(p)]


def _require(files: list[Path]) -> None:
    """Raise unless every file the manifest lists exists (never a silently partial lake)."""
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise LakeError(f"lake part(s) listed but missing: {', '.join(missing[:5])}")


def read_events(lake: Path, files: list[Path] | None = None) -> pl.LazyFrame:
    """Events of the lake (or of the given parts) in the pinned schema."""
    if files is None:
        manifest = Manifest.load(lake)
        files = [lake / p for p in manifest.parts] if manifest else []
    if not files:
        return pl.LazyFrame(schema=SCHEMAS[Kind.EVENTS])
    _require(files)
    return pl.scan_parquet(files).cast(SCHEMAS[Kind.EVENTS])  # type: ignore[arg-type]


def read_complaints(lake: Path) -> pl.LazyFrame:
    """The lake's complaints (latest version of each) in the pinned schema."""
    manifest = Manifest.load(lake)
    if manifest is None or manifest.complaints is None:
        return pl.LazyFrame(schema=SCHEMAS[Kind.COMPLAINTS])
    return pl.scan_parquet(lake / manifest.complaints).cast(SCHEMAS[Kind.COMPLAINTS])  # type: ignore[arg-type]


def _write_parts(events: pl.DataFrame, stage: Path, name: str, buckets: int) -> list[str]:
    """Partitioned parts of ``events`` written under ``stage``; their paths relative to it."""
    width = max(2, len(str(buckets - 1)))
    keyed = events.with_columns(
        bucket_expr(buckets).alias("_bucket"),
        pl.col("ts").dt.date().cast(pl.String).alias("_date"),
    )
    staged: list[str] = []
    for (bucket, date), part in keyed.group_by(["_bucket", "_date"], maintain_order=True):
        rel = f"events/bucket={int(str(bucket)):0{width}d}/date={date}/part-{name}.parquet"
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        part.drop("_bucket", "_date").write_parquet(stage / rel)
        staged.append(rel)
    return staged


def _held_ids(parts: list[Path], ids: pl.Series) -> pl.DataFrame:
    """Which of ``ids`` the given parts already hold (one ``event_id`` column).

    The parts' ids are streamed through a filter on the batch's ids, so memory is the
    batch's id set plus one chunk of the parts, never every id the lake holds. Exact: a
    duplicate is the same ``event_id`` whatever its item, so no bucket can be skipped.
    """
    if not parts or ids.is_empty():
        return pl.DataFrame(schema={"event_id": pl.String})
    held = (
        pl.scan_parquet(parts)
        .select(pl.col("event_id").cast(pl.String))
        .filter(pl.col("event_id").is_in(ids.implode()))
        .unique()
    )
    return held.collect(engine="streaming")


def _batches(files: list[Path], rows: list[int], batch_rows: int) -> list[list[Path]]:
    """Consecutive files (read order kept) of at most ``batch_rows`` rows, one file at least."""
    out: list[list[Path]] = []
    size = 0
    for path, n in zip(files, rows, strict=True):
        if not out or size + n > batch_rows:
            out.append([])
            size = 0
        out[-1].append(path)
        size += n
    return out


def _compact_events(
    files: list[Path],
    rows: list[int],
    ctx: _Run,
) -> list[str]:
    """Stage the new events of ``files`` batch by batch; the staged parts (relative paths).

    Each batch keeps the first read of an id within itself (as a whole-folder read
    does), then drops the ids the lake (its id files, else its parts) or this run's
    earlier batches hold: the one-batch answer, in memory bounded by the batch.
    """
    staged: list[str] = []
    fresh_ids: list[Path] = []  # ids earlier batches staged
    dropped: list[Path] = []  # ids earlier batches found in the lake (not staged)
    for i, batch in enumerate(_batches(files, rows, ctx.batch_rows)):
        events = validated_frame([read_file(p) for p in batch], Kind.EVENTS).collect()
        ids = events["event_id"]  # distinct: the batch keeps the first read of an id
        earlier = _held_ids(fresh_ids + dropped, ids)
        ids = ids.filter(~ids.is_in(earlier["event_id"].implode()))
        # Only a first sight in this run counts as "already in the lake" (as in one batch).
        in_lake = _held_ids(ctx.held, ids)
        if in_lake.height:
            dropped.append(ctx.stage / f"_seen-{i:05d}.parquet")
            in_lake.write_parquet(dropped[-1])
        seen = pl.concat([earlier, in_lake])
        fresh = events.join(seen, on="event_id", how="anti", maintain_order="left")
        ctx.rep.duplicate_events += in_lake.height
        ctx.rep.new_events += fresh.height
        del events
        staged += _write_parts(fresh, ctx.stage, f"{ctx.run}-{i:05d}", ctx.buckets)
        if fresh.height:
            fresh_ids.append(ctx.stage / f"_fresh-{i:05d}.parquet")
            fresh.select("event_id").write_parquet(fresh_ids[-1])
        if ctx.after_batch is not None:
            ctx.after_batch(i)
    if fresh_ids:  # the run's id file: one file to read per run, not one per part
        rel = f"ids/part-{ctx.run}.parquet"
        (ctx.stage / rel).parent.mkdir()
        pl.scan_parquet(fresh_ids).sink_parquet(ctx.stage / rel)
        ctx.id_parts.append(rel)
    return staged


def _held_files(lake: Path, manifest: Manifest) -> list[Path]:
    """The files whose ``event_id`` are the lake's (its id files, else its parts)."""
    _require([lake / p for p in manifest.parts + (manifest.ids or [])])
    return [lake / p for p in (manifest.parts if manifest.ids is None else manifest.ids)]


def _move_in(stage: Path, lake: Path, rels: list[str]) -> None:
    for rel in rels:
        (lake / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, lake / rel)


@dataclass
class _Run:
    """One compaction's fixed inputs and running report."""

    run: str
    stage: Path
    held: list[Path]
    buckets: int
    batch_rows: int
    rep: CompactReport
    after_batch: Callable[[int], None] | None = None
    id_parts: list[str] = field(default_factory=list)


def compact(
    data_dir: Path,
    lake: Path,
    buckets: int = DEFAULT_BUCKETS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    after_batch: Callable[[int], None] | None = None,
) -> CompactReport:
    """Add the folder's new validated events and complaints to ``lake`` (see the module doc).

    Only files not compacted before (by path, size and mtime) are read, in batches of
    whole files of about ``batch_rows`` rows; an event whose id the lake already holds
    is a duplicate and is left out (counted). Rejects go to
    ``lake/_rejects/<run>-<kind>.jsonl``. ``after_batch`` is called with each staged
    batch's index (progress; the tests inject a crash there).
    """
    if batch_rows < 1:
        raise LakeError(f"batch rows must be >= 1, not {batch_rows}")
    lake.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(lake) or Manifest(buckets=buckets, ids=[])
    if manifest.buckets != buckets:
        raise LakeError(f"{lake} has {manifest.buckets} buckets, not {buckets}")
    # What a killed run staged is nobody's (one writer at a time, as for the manifest).
    for stale in lake.glob("_staging-[0-9]*"):
        shutil.rmtree(stale, ignore_errors=True)
    run = f"{len(manifest.sources):06d}-{uuid.uuid4().hex[:8]}"
    stage = lake / f"_staging-{run}"
    rep = CompactReport()
    old: str | None = None
    try:
        stage.mkdir()
        ev_files = _new_files(data_dir, Kind.EVENTS, manifest)
        cp_files = _new_files(data_dir, Kind.COMPLAINTS, manifest)
        rejects = lake / "_rejects"
        ev_rows = _write_rejects(ev_files, Kind.EVENTS, rejects / f"{run}-events.jsonl", rep)
        _write_rejects(cp_files, Kind.COMPLAINTS, rejects / f"{run}-complaints.jsonl", rep)
        ctx = _Run(run, stage, _held_files(lake, manifest), buckets, batch_rows, rep, after_batch)
        new_parts = _compact_events(ev_files, ev_rows, ctx) if ev_files else []
        _move_in(stage, lake, new_parts)
        manifest.parts += new_parts
        rep.parts = len(new_parts)
        if manifest.ids is not None:
            _move_in(stage, lake, ctx.id_parts)
            manifest.ids += ctx.id_parts
        if cp_files:
            new = validated_frame([read_file(p) for p in cp_files], Kind.COMPLAINTS)
            # Earlier versions first: on equal ``updated_at`` the later read wins.
            merged = latest_complaints(pl.concat([read_complaints(lake), new])).collect()
            rel = f"complaints/part-{run}.parquet"
            (stage / rel).parent.mkdir(parents=True)
            merged.write_parquet(stage / rel)
            (lake / rel).parent.mkdir(exist_ok=True)
            os.replace(stage / rel, lake / rel)
            old, manifest.complaints = manifest.complaints, rel
            rep.complaints = merged.height
        for name in (FACILITIES_FILE, STANDARDS_FILE):
            if (data_dir / name).exists():
                shutil.copyfile(data_dir / name, stage / name)
                os.replace(stage / name, lake / name)
        for p in (*ev_files, *cp_files):
            manifest.sources[str(p)] = _stamp(p)
        rep.files = len(ev_files) + len(cp_files)
        manifest.save(lake)
        refresh_tables(lake, manifest.parts)  # each bucket's lifecycle state, after the commit
        if cp_files and old is not None:
            (lake / old).unlink(missing_ok=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return rep


def _write_rejects(files: list[Path], kind: Kind, out: Path, rep: CompactReport) -> list[int]:
    """Rejects of ``files`` (parsing and row checks), as ``kpi validate`` writes them.

    Written file by file (memory: one file's rejects); returns each file's parsed rows.
    """
    rows: list[int] = []
    sink: IO[bytes] | None = None
    try:
        for path in files:
            batch = read_file(path)
            bad = validated(batch, kind)[1].collect()
            parsing = batch.rejects_frame()
            rejects = pl.concat([parsing, bad], how="vertical")
            # Rows read: parsed rows, plus lines rejected while parsing (not whole files).
            parsed = batch.frame.select(pl.len()).collect().item()
            rows.append(parsed)
            rep.rows_read += parsed + parsing.filter(pl.col("row").is_not_null()).height
            rep.rejected.update(rejects["reason"].to_list())
            if rejects.height:
                if sink is None:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    sink = out.open("wb")
                rejects.write_ndjson(sink)
    finally:
        if sink is not None:
            sink.close()
    return rows
