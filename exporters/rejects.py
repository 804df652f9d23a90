"""``STATE_DIR/rejects.jsonl``: the rejected rows, kept for inspection, bounded, crash-consistent.

Commit discipline (as the checkpoint's): the file's committed length is what the
checkpoint records (``Checkpoint.rejects_bytes``). Every append is written at the
committed offset (``pwrite``), so a write cut short (disk full) is overwritten by the
next one, never followed by it; a failed write is truncated back at once. On
restore the file is cut back to the checkpoint's length: the rows read after the
checkpoint are read again and rejected again, so no record is duplicated or cut.

Bounded: past ``max_bytes`` the file is rotated to ``rejects.<offset>.jsonl`` (the
offset of its first byte in the stream of every reject ever written), and only the
newest ``generations`` rotated files are kept. The checkpoint records the total
offset, so a restore after a rotation that the checkpoint did not see renames the
rotated file back. Identical rejects of one batch (same source, reason, field and
raw row, as in a flood of ``{}`` lines) are written ``FLOOD_KEEP`` times, then as
one summary record with the number of repeats and the last row.

Disk full or read-only: the file is *paused* (logged once, ``paused`` says why),
rejects are still counted in the metrics, and writing resumes by itself once a
truncation to the committed length succeeds again (tried every ``RETRY_SECONDS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Final

import orjson
import polars as pl

log = logging.getLogger(__name__)

REJECTS_FILE: Final = "rejects.jsonl"
MAX_BYTES_DEFAULT: Final = 64 << 20
GENERATIONS_DEFAULT: Final = 3
#: Identical rejects of one batch written verbatim before they are summarised.
FLOOD_KEEP: Final = 10
RETRY_SECONDS: Final = 5.0
_ROTATED: Final = re.compile(r"^rejects\.(\d+)\.jsonl$")
_SIZE: Final = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.IGNORECASE)
_UNIT: Final = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_KEY: Final = ("source", "reason", "field", "raw")


def parse_size(text: str) -> int:
    """Bytes in ``64MiB``, ``500KiB``, ``1G`` or a bare number (binary units either way)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 64MiB, 500KiB)")
    unit = (match.group(2) or "b")[0].lower()
    return int(match.group(1)) * _UNIT[unit]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def summarised(rows: pl.DataFrame) -> tuple[pl.DataFrame, list[dict[str, object]]]:
    """(records written as they are, summaries of the identical rejects beyond ``FLOOD_KEEP``)."""
    if rows.height <= FLOOD_KEEP:
        return rows, []
    ranked = rows.with_columns(pl.int_range(pl.len()).over(_KEY).alias("_n"))
    keep = ranked.filter(pl.col("_n") < FLOOD_KEEP).drop("_n")
    extra = ranked.filter(pl.col("_n") >= FLOOD_KEEP)
    if extra.is_empty():
        return rows, []
    groups = extra.group_by(_KEY, maintain_order=True).agg(
        pl.col("row").first().alias("row"),
        pl.col("row").last().alias("last_row"),
        pl.len().alias("repeats"),
    )
    return keep, groups.select(
        "source", "row", "reason", "field", "raw", "repeats", "last_row"
    ).to_dicts()


class RejectsFile:
    """The rejects file; ``bytes`` is the committed length (across rotations) a checkpoint records."""

    def __init__(
        self,
        state_dir: Path,
        restore_bytes: int | None,
        max_bytes: int = MAX_BYTES_DEFAULT,
        generations: int = GENERATIONS_DEFAULT,
    ) -> None:
        self.dir = state_dir
        self.path = state_dir / REJECTS_FILE
        self.max_bytes = max_bytes
        self.generations = generations
        #: Why writing is paused (None: writing).
        self.paused: str | None = None
        #: Rejects counted but not written while paused (process-local).
        self.unwritten = 0
        self._fd: int | None = None
        self._retry_at = 0.0
        self.base = 0  # offset of the current file's first byte
        self.bytes = 0
        try:
            self._restore(restore_bytes or 0)
        except OSError as exc:
            self._pause(exc)

    # --- restore and rotation ----------------------------------------------------------

    def _rotated(self) -> list[tuple[int, Path]]:
        out = []
        for path in self.dir.iterdir():
            match = _ROTATED.match(path.name)
            if match:
                out.append((int(match.group(1)), path))
        return sorted(out)

    def _restore(self, committed: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        rotated = self._rotated()
        base = rotated[-1][0] + rotated[-1][1].stat().st_size if rotated else 0
        # Rotations the checkpoint did not see: their files come back as the current one.
        while committed < base and rotated:
            first, path = rotated.pop()
            self.path.unlink(missing_ok=True)
            os.rename(path, self.path)
            base = first
        if rotated or committed < base:
            _fsync_dir(self.dir)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        keep = min(max(committed - base, 0), size)
        if committed > base + size:
            log.warning("%s is shorter than the checkpoint says (removed?)", self.path)
        os.ftruncate(fd, keep)
        self._fd, self.base, self.bytes = fd, base, base + keep

    def _rotate(self) -> None:
        """The current file becomes ``rejects.<base>.jsonl``; the oldest ones go."""
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.rename(self.path, self.dir / f"rejects.{self.base:015d}.jsonl")
        _fsync_dir(self.dir)
        for _, old in self._rotated()[: -self.generations or None]:
            old.unlink(missing_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.base = self.bytes
        log.info("rotated %s at %d bytes", self.path.name, self.max_bytes)

    # --- writing -------------------------------------------------------------------------

    def _pause(self, exc: OSError) -> None:
        reason = f"cannot write {self.path}: {exc.strerror or exc}"
        if self.paused != reason:
            log.error("%s; rejects are still counted, the file is paused", reason)
        self.paused = reason
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _resume(self) -> bool:
        """Whether writing can go on (after a pause: once the file takes a truncation again)."""
        if self.paused is None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            if self._fd is None:
                self._restore(self.bytes)
            else:
                os.ftruncate(self._fd, self.bytes - self.base)
        except OSError as exc:
            self._pause(exc)
            return False
        log.warning(
            "%s is writable again; %d reject(s) were counted but not written",
            self.path,
            self.unwritten,
        )
        self.paused = None
        return True

    def append(self, rows: pl.DataFrame) -> None:
        """Append rejects (``REJECT_SCHEMA`` columns); never raises (pauses instead)."""
        if rows.is_empty():
            return
        if not self._resume():
            self.unwritten += rows.height
            return
        records, summaries = summarised(rows)
        data = records.write_ndjson().encode() if records.height else b""
        data += b"".join(orjson.dumps(s) + b"\n" for s in summaries)
        try:
            for segment in self._segments(data):
                self._write(segment)
        except OSError as exc:
            # Nothing half-written stays behind the committed length.
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.bytes - self.base)
            self._pause(exc)
            self.unwritten += rows.height

    def _segments(self, data: bytes) -> list[bytes]:
        """``data`` cut at record ends into pieces that fill the current file, then new ones."""
        out: list[bytes] = []
        room = self.max_bytes - (self.bytes - self.base)
        start = 0
        while start < len(data):
            end = start
            while end < len(data):
                nxt = data.index(b"\n", end) + 1
                if nxt - start > room and end > start:
                    break
                end = nxt
                if nxt - start > room:  # one record larger than a file: alone
                    break
            out.append(data[start:end])
            start, room = end, self.max_bytes
        return out

    def _write(self, segment: bytes) -> None:
        """Write one segment at the committed offset, rotating first if it does not fit."""
        if self.bytes > self.base and self.bytes - self.base + len(segment) > self.max_bytes:
            self._rotate()
        assert self._fd is not None
        view = memoryview(segment)
        at = self.bytes - self.base
        while view:
            n = os.pwrite(self._fd, view, at)
            view, at = view[n:], at + n
        self.bytes += len(segment)

    def sync(self) -> int:
        """fsync and return the committed length (recorded in the next checkpoint)."""
        if self._fd is not None and self.paused is None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._pause(exc)
        return self.bytes

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
