"""Checkpoints: everything the counters depend on, written together and atomically.

A checkpoint is a directory ``STATE_DIR/checkpoint-<seq>`` holding

- ``meta.json``: format version, sequence number, wall time, per-file read
  positions (by file identity), every counter and histogram value, the size of
  the rejects file and the newest event time;
- ``items.parquet``, ``items_extra.parquet``, ``routes.parquet``, ``facilities.parquet``,
  ``items_extra_exact.parquet``,
  ``items_exact.parquet``:
  the lifecycle state in the exporter's compact encoding (``exporters.compact``: item
  hashes, dictionary codes and their dictionaries);
- ``complaints.parquet``: current complaint versions and resolution flags;
- ``seen.npy``: the sorted 64-bit hashes of every event id counted (``seen_days.npy``:
  the day of each);
- ``retired.npy``: the sorted 64-bit hashes of the item ids retired from the state
  (finished items past the retention), whose later events are rejects;
- ``held.parquet``: attempts, deliveries and returns waiting for their item's
  acceptance, summarised per item (``kpi.kpis.increments.SET_SCHEMA``);
- ``stages.parquet`` (``stage_rows_exact.parquet``: the scans whose key is not a whole
  second of the packing's range), ``stage_facilities.parquet``, ``stage_summary.parquet``: the
  stage state of the items (``exporters.compact_stages``): the scans within the stage
  horizon (item hash, time key, facility code), the facility names of the codes, and
  one summary row per item for its scans older than the horizon (``stage_mark`` in
  ``meta.json``).

Format 2 (item hashes and ``exporters.seen.hash_ids``) replaced format 1 (item ids as
strings, BLAKE2b hashes of event ids): the event-id hashes of a format-1 checkpoint
cannot be recomputed without the ids, so such a checkpoint is refused with a message
(remove the state directory: the exporter then re-reads its source from the start).
Format 3 encodes the stage history (format 2 kept it as strings); a format-2 checkpoint
is refused the same way.
Format 4 adds the stage summaries and holds the item times in whole seconds
(``items_exact.parquet``: the others); a format-3 checkpoint (every stage scan kept, no
summary; exact item times) is read and converted: its stage scans as recent ones with no
mark (the first set folds the old ones), its item times packed.
Format 5 holds the sparse item table's promise and first attempt in whole seconds too
(``items_extra_exact.parquet``: the others) and the dictionary codes as ``UInt16`` while
their dictionary is small; a format-4 checkpoint is read and converted (its sparse
times packed; the codes are narrowed on any read).
Format 6 holds an item's stage summary in its row of ``items.parquet`` (no hash of its
own; ``stage_summary.parquet`` keeps only the summaries of items without a row), and of
a delivery or return only whether there was one; a format-3 to 5 checkpoint is read and
converted (its summaries moved into the item rows: ``CompactStages.attach``; its
delivery and return times to whether they are set; its recent stage scans packed).

It is written as ``checkpoint-<seq>.tmp`` (each file fsynced, then the directory),
renamed to its final name (the commit point) and the parent directory fsynced;
older checkpoints are deleted afterwards. A crash at any instant leaves either the
previous or the new checkpoint complete; ``.tmp`` leftovers are ignored and removed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import orjson
import polars as pl

from exporters import catalog as cat
from exporters.catalog import BY_NAME, MetricSpec
from exporters.compact import (
    EPOCH_S,
    EXTRA_EXACT_SCHEMA,
    EXTRA_SCHEMA,
    FACILITIES_SCHEMA,
    FULL_SCHEMA,
    HELD_SCHEMA,
    ROUTES_SCHEMA,
    STAGE_COLUMNS,
    CompactItems,
    fit_codes,
    pack_extra,
    pack_main,
    sparse_extra,
)
from exporters.compact import EXACT_SCHEMA as ITEMS_EXACT_SCHEMA
from exporters.compact_stages import (
    EXACT_SCHEMA,
    HELD_ROWS_SCHEMA,
    NAMES_SCHEMA,
    PACKED_SCHEMA,
    ROWS_SCHEMA,
    CompactStages,
    fit_summary,
)
from exporters.rejects import REJECTS_FILE, RejectsFile
from exporters.seen import Days, Hashes
from exporters.store import CounterStore
from exporters.tail import FileState
from kpi.events import RANK_BITS
from kpi.kpis.increments import COMPLAINT_STATE_SCHEMA, SET_SCHEMA, empty_set

log = logging.getLogger(__name__)

FORMAT: Final = 6
#: Older formats this one reads (and converts).
READABLE_FORMATS: Final = {3, 4, 5}
#: What older formats held that this one cannot read; such checkpoints are refused with
#: ``OLD_FORMAT`` (not migrated).
OLD_FORMATS: Final = {
    1: "item ids as strings, BLAKE2b event-id hashes",
    2: "the stage history as strings",
}
#: The format whose item state is ``exporters.compact`` (benchmarks test for this name).
COMPACT_FORMAT: Final = 2
#: The format whose stage history is ``exporters.compact_stages`` (benchmarks test for it).
COMPACT_STAGES_FORMAT: Final = 3
#: The format whose stage state is summarised past a horizon (benchmarks test for it).
STAGE_SUMMARY_FORMAT: Final = 4
OLD_FORMAT: Final = (
    "{path}: checkpoint format {found} was written by an older exporter ({what})"
    " and cannot be read by this one (format {want}); move the state"
    " directory away to start afresh: the exporter then reads its source from the beginning"
)
PREFIX: Final = "checkpoint-"
TMP_SUFFIX: Final = ".tmp"
LOCK_FILE: Final = "lock"
_SPECS: Final[dict[str, MetricSpec]] = dict(BY_NAME)
#: Counted by the process, never restored from a checkpoint (from 0 after a restart, which
#: Prometheus reads as a reset): they measure how the input arrived, and a restarted
#: exporter re-reads what it lost as one larger set, so restored values could go down.
PROCESS_LOCAL: Final[tuple[MetricSpec, ...]] = (
    cat.EXPORTER_BATCH_DURATION,
    cat.EXPORTER_LATE_EVENTS,
    cat.EXPORTER_STAGE_LATE_SCANS,
)
#: The rejects file moved to ``exporters.rejects``; re-exported for existing imports.
__all__ = ["REJECTS_FILE", "RejectsFile"]


@dataclass
class Checkpoint:
    """One consistent cut of the exporter's state (between two micro-batches)."""

    seq: int
    created_at: float
    files: dict[str, FileState]
    counters: CounterStore
    items: CompactItems
    complaints: pl.DataFrame
    seen: Hashes
    rejects_bytes: int
    last_event_us: int | None
    data_dir: str = ""
    retired: Hashes = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    held: pl.DataFrame = field(default_factory=empty_set)
    #: Day (event time) of each ``seen`` hash; None in checkpoints of older versions.
    seen_days: Days | None = None
    #: Stage scans of the items in the state, encoded.
    stages: CompactStages = field(default_factory=CompactStages)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checkpoint_dirs(state_dir: Path) -> list[tuple[int, Path]]:
    out: list[tuple[int, Path]] = []
    for path in state_dir.glob(PREFIX + "*"):
        suffix = path.name[len(PREFIX) :]
        if path.is_dir() and suffix.isdigit():
            out.append((int(suffix), path))
    return sorted(out)


def write_checkpoint(state_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically; returns its directory."""
    final = state_dir / f"{PREFIX}{ckpt.seq:012d}"
    tmp = final.with_name(final.name + TMP_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_files(tmp, ckpt)
    except BaseException:
        # Disk full, read-only: no half-written temporary stays behind (it would hold
        # space on a full disk until the next start).
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.rename(tmp, final)
    _fsync_path(state_dir)
    for seq, path in _checkpoint_dirs(state_dir):
        if seq < ckpt.seq:
            shutil.rmtree(path, ignore_errors=True)
    return final


def _write_files(tmp: Path, ckpt: Checkpoint) -> None:
    tmp.mkdir(parents=True)
    for name, frame in _item_files(ckpt.items).items():
        frame.write_parquet(tmp / name, statistics=False)
    ckpt.complaints.select(COMPLAINT_STATE_SCHEMA.keys()).write_parquet(
        tmp / "complaints.parquet", statistics=False
    )
    np.save(tmp / "seen.npy", ckpt.seen, allow_pickle=False)
    np.save(tmp / "retired.npy", ckpt.retired, allow_pickle=False)
    days = ckpt.seen_days if ckpt.seen_days is not None else np.zeros(len(ckpt.seen), np.int64)
    # Days since 1970 fit 32 bits: 4 B per id on disk instead of 8.
    np.save(tmp / "seen_days.npy", days.astype(np.int32), allow_pickle=False)
    ckpt.held.select(SET_SCHEMA.keys()).write_parquet(tmp / "held.parquet", statistics=False)
    ckpt.stages.held.write_parquet(tmp / "stages.parquet", statistics=False)
    ckpt.stages.rows_exact.write_parquet(tmp / "stage_rows_exact.parquet", statistics=False)
    ckpt.stages.names.write_parquet(tmp / "stage_facilities.parquet", statistics=False)
    ckpt.stages.side.write_parquet(tmp / "stage_summary.parquet", statistics=False)
    ckpt.stages.exact.write_parquet(tmp / "stage_exact.parquet", statistics=False)
    meta = {
        "format": FORMAT,
        "seq": ckpt.seq,
        "created_at": ckpt.created_at,
        "data_dir": ckpt.data_dir,
        "files": [f.to_json() for f in sorted(ckpt.files.values(), key=lambda f: f.key)],
        "counters": ckpt.counters.to_json(_SPECS),
        "rejects_bytes": ckpt.rejects_bytes,
        "last_event_us": ckpt.last_event_us,
        "stage_mark": ckpt.stages.mark,
        "stage_horizon": ckpt.stages.horizon,
    }
    (tmp / "meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    names = (
        *_item_files(ckpt.items),
        "complaints.parquet",
        "seen.npy",
        "retired.npy",
        "held.parquet",
        "seen_days.npy",
        "stages.parquet",
        "stage_facilities.parquet",
        "stage_summary.parquet",
        "stage_exact.parquet",
        "stage_rows_exact.parquet",
    )
    for name in (*names, "meta.json"):
        _fsync_path(tmp / name)
    _fsync_path(tmp)


_ITEM_FILES: Final = {
    "items.parquet": ("main", HELD_SCHEMA),
    "items_extra.parquet": ("extra", EXTRA_SCHEMA),
    "routes.parquet": ("routes", ROUTES_SCHEMA),
    "facilities.parquet": ("facilities", FACILITIES_SCHEMA),
    "items_exact.parquet": ("exact", ITEMS_EXACT_SCHEMA),
    "items_extra_exact.parquet": ("extra_exact", EXTRA_EXACT_SCHEMA),
}


def _item_files(items: CompactItems) -> dict[str, pl.DataFrame]:
    """The item state's tables by file name."""
    return {name: getattr(items, attr) for name, (attr, _) in _ITEM_FILES.items()}


def _read_items(path: Path) -> CompactItems:
    raw = {
        attr: pl.read_parquet(path / name)
        for name, (attr, _) in _ITEM_FILES.items()
        if (path / name).exists()  # formats 3 and 4: (some) exact times not apart
    }
    if "main" in raw and "has_delivery" not in raw["main"].columns:  # formats 3-5
        raw.update(_converted(raw))
    if "main" in raw and "delivered" not in raw["main"].columns:  # formats 3-5: summaries apart
        raw["main"] = raw["main"].with_columns(
            pl.lit(None, t).alias(c) for c, t in STAGE_COLUMNS.items()
        )
    tables = {
        attr: raw[attr].select(pl.col(c).cast(t) for c, t in schema.items())
        for attr, schema in _ITEM_FILES.values()
        if attr in raw
    }
    # The codes as held (``UInt16`` while their dictionary is small).
    n_codes = {"route": "routes", "facility": "facilities"}
    for col, book in n_codes.items():
        if "main" in tables and book in tables:
            tables["main"] = fit_codes(tables["main"], (col,), tables[book].height)
    return CompactItems(**tables)


def _converted(raw: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The item tables of a format-3 to 5 checkpoint as this format holds them."""
    main, extra = raw["main"], raw["extra"]
    if "last_s" in main.columns:  # formats 4, 5: the key in two columns
        main = _exact_times(main, raw.get("exact"), ("accepted_at", "accepted_s"), "last")
    if "attempt_s" in extra.columns:  # format 5: the key in two columns
        time = ("promised_by_given", "promised_s")
        extra = _exact_times(extra, raw.get("extra_exact"), time, "attempt")
    # Formats 3-5: delivery and return times in the sparse table, not bits in the row.
    extra = extra.with_columns(
        pl.col("delivered_s").is_not_null().alias("has_delivery"),
        pl.col("returned_s").is_not_null().alias("has_return"),
        pl.col("attempt_key").is_not_null().alias("attempted"),
    )
    flags = ("has_delivery", "has_return", "attempted")
    main = main.join(
        extra.select("item", *flags), on="item", how="left", maintain_order="left"
    ).with_columns(pl.col(flags).fill_null(False))
    out: dict[str, pl.DataFrame] = {}
    full = main.select(pl.col(c).cast(t) for c, t in FULL_SCHEMA.items())
    packed, out["exact"] = pack_main(full)
    out["main"] = packed
    out["extra"], out["extra_exact"] = pack_extra(sparse_extra(extra))
    return out


def _exact_times(
    packed: pl.DataFrame, exact: pl.DataFrame | None, time: tuple[str, str], key: str
) -> pl.DataFrame:
    """A table of format 4 or 5 (a time in whole seconds from ``EPOCH_S``; a time key as
    whole seconds ``<key>_s`` and rank ``<key>_rank``) with those times exact (``exact``:
    the ones it held apart)."""
    (t_name, t_s), k_name = time, f"{key}_key"
    t = (pl.col(t_s).cast(pl.Int64) + EPOCH_S) * 1_000_000
    secs = pl.col(f"{key}_s").cast(pl.Int64) + EPOCH_S
    k = secs * 1_000_000 * RANK_BITS + pl.col(f"{key}_rank").cast(pl.Int64)
    if exact is not None and exact.height:
        packed = packed.join(exact, on="item", how="left", maintain_order="left")
        t, k = pl.coalesce(pl.col(t_name), t), pl.coalesce(pl.col(k_name), k)
    return packed.with_columns(t.alias(t_name), k.alias(k_name))


def read_checkpoint(path: Path) -> Checkpoint:
    """Load one checkpoint directory."""
    meta: dict[str, Any] = orjson.loads((path / "meta.json").read_bytes())
    found = meta.get("format")
    if found in OLD_FORMATS:
        what = OLD_FORMATS[found]
        raise ValueError(OLD_FORMAT.format(path=path, found=found, what=what, want=FORMAT))
    if found != FORMAT and found not in READABLE_FORMATS:
        raise ValueError(f"{path}: unknown checkpoint format {found!r}")
    items = _read_items(path)
    complaints = pl.read_parquet(path / "complaints.parquet")
    seen = np.load(path / "seen.npy", allow_pickle=False).astype(np.uint64, copy=False)
    retired = np.empty(0, dtype=np.uint64)
    if (path / "retired.npy").exists():  # checkpoints written before retention have none
        retired = np.load(path / "retired.npy", allow_pickle=False).astype(np.uint64, copy=False)
    held = empty_set()
    seen_days = None
    if (path / "seen_days.npy").exists():  # older versions kept ids without their day
        seen_days = np.load(path / "seen_days.npy", allow_pickle=False).astype(np.int64)
    if (path / "held.parquet").exists():  # checkpoints of older versions held nothing
        held = pl.read_parquet(path / "held.parquet")
        held = held.select(pl.col(c).cast(t) for c, t in SET_SCHEMA.items())
    names = pl.read_parquet(path / "stage_facilities.parquet").select(
        pl.col(c).cast(t) for c, t in NAMES_SCHEMA.items()
    )
    summary, mark, exact, horizon = _read_summary(path)
    stages = _read_rows(
        path,
        CompactStages(
            names=names,
            side=fit_summary(summary, names.height),
            mark=mark,
            exact=exact,
            horizon=horizon,
        ),
    ).attach(items)
    items = items if stages.items is None else stages.items
    return Checkpoint(
        seq=int(meta["seq"]),
        created_at=float(meta["created_at"]),
        files={f["key"]: FileState.from_json(f) for f in meta["files"]},
        counters=_restorable(CounterStore.from_json(meta["counters"], _SPECS)),
        items=items,
        complaints=complaints.select(pl.col(c).cast(t) for c, t in COMPLAINT_STATE_SCHEMA.items()),
        seen=seen,
        rejects_bytes=int(meta["rejects_bytes"]),
        last_event_us=meta.get("last_event_us"),
        data_dir=str(meta.get("data_dir", "")),
        retired=retired,
        held=held,
        seen_days=seen_days,
        stages=stages,
    )


def _read_summary(
    path: Path,
) -> tuple[pl.DataFrame, int | None, pl.DataFrame, int | None]:
    """The stage summaries, their mark, the exact keys and the horizon (none in a format-3
    checkpoint)."""
    if not (path / "stage_summary.parquet").exists():
        return pl.DataFrame(schema=PACKED_SCHEMA), None, pl.DataFrame(schema=EXACT_SCHEMA), None
    meta: dict[str, Any] = orjson.loads((path / "meta.json").read_bytes())
    tables = [
        pl.read_parquet(path / name).select(pl.col(c).cast(t) for c, t in schema.items())
        for name, schema in (
            ("stage_summary.parquet", PACKED_SCHEMA),
            ("stage_exact.parquet", EXACT_SCHEMA),
        )
    ]
    return tables[0], meta.get("stage_mark"), tables[1], meta.get("stage_horizon")


def _read_rows(path: Path, stages: CompactStages) -> CompactStages:
    """``stages`` with the checkpoint's recent stage scans (formats 3-5 held them unpacked)."""
    rows = pl.read_parquet(path / "stages.parquet")
    if "key" in rows.columns:  # formats 3-5
        return stages.with_rows(rows.select(pl.col(c).cast(t) for c, t in ROWS_SCHEMA.items()))
    held = rows.select(pl.col(c).cast(t) for c, t in HELD_ROWS_SCHEMA.items())
    odd = pl.read_parquet(path / "stage_rows_exact.parquet")
    return dataclasses.replace(
        stages,
        held=fit_codes(held, ("facility",), stages.names.height),
        rows_exact=odd.select(pl.col(c).cast(t) for c, t in ROWS_SCHEMA.items()),
    )


def latest_checkpoint(state_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint in ``state_dir`` (None on a first start)."""
    for tmp in state_dir.glob(PREFIX + "*" + TMP_SUFFIX):
        shutil.rmtree(tmp, ignore_errors=True)  # an interrupted write: never committed
    dirs = _checkpoint_dirs(state_dir)
    if not dirs:
        return None
    return read_checkpoint(dirs[-1][1])


class StateDirLock:
    """An exclusive lock on a state directory (one exporter per state; freed on any exit)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._fh: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``RuntimeError`` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+b")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().decode(errors="replace").strip()
            fh.close()
            raise RuntimeError(
                f"{self.path.parent} is in use by another exporter (pid {holder or '?'})"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()).encode())
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        """Release the lock."""
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def now() -> float:
    """Wall-clock seconds (a seam for tests)."""
    return time.time()


def _restorable(counters: CounterStore) -> CounterStore:
    """``counters`` without the process-local ones (a checkpoint may hold them)."""
    for spec in PROCESS_LOCAL:
        counters.counters.pop(spec.name, None)
        counters.histograms.pop(spec.name, None)
    return counters
