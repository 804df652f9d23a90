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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

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


def read_events(lake: Path, files: list[Path] | None = None) -> pl.LazyFrame:
    """Events of the lake (or of the given parts) in the pinned schema."""
    if files is None:
        manifest = Manifest.load(lake)
        files = [lake / p for p in manifest.parts] if manifest else []
    if not files:
        return pl.LazyFrame(schema=SCHEMAS[Kind.EVENTS])
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise LakeError(f"lake part(s) listed but missing: {', '.join(missing[:5])}")
    return pl.scan_parquet(files).cast(SCHEMAS[Kind.EVENTS])  # type: ignore[arg-type]


def read_complaints(lake: Path) -> pl.LazyFrame:
    """The lake's complaints (latest version of each) in the pinned schema."""
    manifest = Manifest.load(lake)
    if manifest is None or manifest.complaints is None:
        return pl.LazyFrame(schema=SCHEMAS[Kind.COMPLAINTS])
    return pl.scan_parquet(lake / manifest.complaints).cast(SCHEMAS[Kind.COMPLAINTS])  # type: ignore[arg-type]


def _write_parts(
    events: pl.DataFrame, lake: Path, stage: Path, run: str, buckets: int
) -> list[str]:
    """Partitioned parts written under ``stage``, then moved into ``lake``; relative paths."""
    width = max(2, len(str(buckets - 1)))
    keyed = events.with_columns(
        bucket_expr(buckets).alias("_bucket"),
        pl.col("ts").dt.date().cast(pl.String).alias("_date"),
    )
    staged: list[str] = []
    for (bucket, date), part in keyed.group_by(["_bucket", "_date"], maintain_order=True):
        rel = f"events/bucket={int(str(bucket)):0{width}d}/date={date}/part-{run}.parquet"
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        part.drop("_bucket", "_date").write_parquet(stage / rel)
        staged.append(rel)
    for rel in staged:
        (lake / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, lake / rel)
    return staged


def compact(data_dir: Path, lake: Path, buckets: int = DEFAULT_BUCKETS) -> CompactReport:
    """Add the folder's new validated events and complaints to ``lake`` (see the module doc).

    Only files not compacted before (by path, size and mtime) are read; an event whose id
    the lake already holds is a duplicate and is left out (counted). Rejects go to
    ``lake/_rejects/<run>-<kind>.jsonl``.
    """
    lake.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(lake) or Manifest(buckets=buckets)
    if manifest.buckets != buckets:
        raise LakeError(f"{lake} has {manifest.buckets} buckets, not {buckets}")
    run = f"{len(manifest.sources):06d}-{uuid.uuid4().hex[:8]}"
    stage = lake / f"_staging-{run}"
    rep = CompactReport()
    old: str | None = None
    try:
        stage.mkdir()
        ev_files = _new_files(data_dir, Kind.EVENTS, manifest)
        cp_files = _new_files(data_dir, Kind.COMPLAINTS, manifest)
        for kind, files in ((Kind.EVENTS, ev_files), (Kind.COMPLAINTS, cp_files)):
            _write_rejects(files, kind, lake / "_rejects" / f"{run}-{kind.value}.jsonl", rep)
        if ev_files:
            events = validated_frame([read_file(p) for p in ev_files], Kind.EVENTS).collect()
            held = read_events(lake).select("event_id")
            fresh = events.lazy().join(held, on="event_id", how="anti").collect()
            rep.duplicate_events += events.height - fresh.height
            rep.new_events = fresh.height
            new_parts = _write_parts(fresh, lake, stage, run, buckets)
            manifest.parts += new_parts
            rep.parts = len(new_parts)
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


def _write_rejects(files: list[Path], kind: Kind, out: Path, rep: CompactReport) -> None:
    """Rejects of ``files`` (parsing and row checks), as ``kpi validate`` writes them."""
    frames: list[pl.DataFrame] = []
    for path in files:
        batch = read_file(path)
        bad = validated(batch, kind)[1].collect()
        parsing = batch.rejects_frame()
        frames.append(pl.concat([parsing, bad], how="vertical"))
        # Rows read: parsed rows, plus lines rejected while parsing (not whole files).
        parsed = batch.frame.select(pl.len()).collect().item()
        rep.rows_read += parsed + parsing.filter(pl.col("row").is_not_null()).height
    if not frames:
        return
    rejects = pl.concat(frames, how="vertical")
    rep.rejected.update(rejects["reason"].to_list())
    if rejects.height:
        out.parent.mkdir(parents=True, exist_ok=True)
        rejects.write_ndjson(out)
