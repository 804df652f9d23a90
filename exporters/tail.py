"""Following the files of a data folder: new files, appended lines, rotation, truncation.

Files are tracked by identity (device and inode), not by name, so a rotated
(renamed) file keeps its read position, even under a name the reader would not pick
up on its own (``events.jsonl`` -> ``events.jsonl.1``).

- CSV and JSONL are read as they grow, complete lines only: a partial last line is
  left for the next poll, unless the file has not changed for ``grace`` seconds
  (then the writer is done and forgot the final newline). A line that grows past
  ``MAX_LINE_BYTES`` is rejected once and skipped up to its newline.
- A text file that shrinks below the read position (truncation), or whose first
  bytes no longer match what was read (replaced under the same inode), is read
  again from offset 0.
- A text file containing NUL bytes is binary: one ``unreadable_file`` reject, then
  ignored until it is truncated or replaced.
- Parquet and ``.jsonl.gz`` files are read once, complete (Parquet in slices of at
  most ``max_rows`` rows). Writers must write ``name.tmp`` and rename it: names
  ending in ``.tmp`` and hidden files are never read. A whole-format file whose
  size or mtime changes is read again as a new version.

``poll`` returns chunks with the file's state *after* the chunk; the caller applies
the chunk and then ``commit``s it, so read positions never run ahead of what was
applied (and checkpointed).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import polars as pl

from kpi.contract import Kind, RejectReason
from kpi.sources.files import (
    MAX_LINE_BYTES,
    RawBatch,
    file_format,
    parse_csv,
    parse_jsonl,
    read_file,
    read_parquet,
    reject,
)
from kpi.sources.validate import ROW, SOURCE

log = logging.getLogger(__name__)

TEXT_FORMATS: Final = ("csv", "jsonl")
#: Bytes at the start of a text file whose hash detects a file replaced in place.
HEAD_BYTES: Final = 512
#: Enough to always hold one maximal line plus its newline.
MIN_READ: Final = MAX_LINE_BYTES + 2
#: Polls a tracked file must be absent from before its read position is dropped.
_FORGET_AFTER: Final = 3


def _empty_frame() -> pl.LazyFrame:
    return pl.LazyFrame({SOURCE: [], ROW: []}, schema={SOURCE: pl.String, ROW: pl.Int64})


@dataclass
class FileState:
    """Read position of one tracked file (what the checkpoint stores per file identity)."""

    key: str  # "device:inode"
    path: str  # relative to the data folder, as last seen
    kind: str
    fmt: str
    offset: int = 0  # text: bytes consumed; Parquet: rows consumed
    row: int = 1  # text: number of the next data line
    header: list[str] | None = None  # CSV header, once read
    skip_line: bool = False  # inside an over-long line, discarding up to its newline
    done: bool = False  # whole-format file read, or text file found binary
    size: int = 0  # whole formats: size and mtime of the version read
    mtime_ns: int = 0
    head: str = ""  # text: sha1 of the first head_len bytes consumed
    head_len: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileState:
        """The state saved by ``to_json``."""
        return cls(**data)

    def restarted(self) -> FileState:
        """The same file read again from the start."""
        return FileState(self.key, self.path, self.kind, self.fmt)


@dataclass
class Chunk:
    """New rows of one file and the file's state once they are applied."""

    kind: Kind
    source: str
    batch: RawBatch
    after: FileState
    cost: int = 0  # bytes (text) or rows (whole formats) taken from the poll's budget


@dataclass
class Poll:
    """One poll: chunks in apply order, and whether more data is waiting."""

    chunks: list[Chunk] = field(default_factory=list)
    pending: bool = False


@dataclass
class _Entry:
    path: Path
    rel: str
    kind: Kind
    stat: os.stat_result
    key: str


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


class Tailer:
    """Follows ``events/`` and ``complaints/`` of a data folder."""

    def __init__(
        self,
        data_dir: Path,
        files: dict[str, FileState] | None = None,
        grace: float = 10.0,
        clock: Any = time.time,
    ) -> None:
        self.data_dir = data_dir
        self.files: dict[str, FileState] = dict(files or {})
        self.grace = grace
        self._clock = clock
        self._missing: dict[str, int] = {}

    # --- scanning -------------------------------------------------------------

    def _scan(self) -> list[_Entry]:
        """Candidate files: tracked identities first (old tails before new files), by name."""
        entries: list[_Entry] = []
        keys: set[str] = set()
        for kind in Kind:
            folder = self.data_dir / kind.value
            try:
                listing = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in listing:
                name = entry.name
                if name.startswith(".") or name.endswith(".tmp"):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:
                    continue  # vanished between listing and stat
                key = f"{st.st_dev}:{st.st_ino}"
                if key in keys:
                    continue  # a hard link to a file already listed
                if key not in self.files and file_format(Path(name)) is None:
                    continue
                keys.add(key)
                entries.append(_Entry(Path(entry.path), f"{kind.value}/{name}", kind, st, key))
        for key in keys:
            self._missing.pop(key, None)
        for gone in set(self.files) - keys:
            # A file caught mid-rename may be missed once; forget it only when it stays away.
            self._missing[gone] = self._missing.get(gone, 0) + 1
            if self._missing[gone] >= _FORGET_AFTER:
                log.info("no longer following %s (removed or moved away)", self.files[gone].path)
                del self.files[gone], self._missing[gone]
        return sorted(entries, key=lambda e: (e.key not in self.files, e.kind.value, e.rel))

    def poll(self, max_bytes: int = 32 << 20, max_rows: int = 250_000) -> Poll:
        """Read what is new, within a byte budget (text) and a row budget (Parquet)."""
        out = Poll()
        bytes_left, rows_left = max_bytes, max_rows
        for entry in self._scan():
            state = self.files.get(entry.key)
            if state is None:
                fmt = file_format(entry.path)
                assert fmt is not None
                state = FileState(entry.key, entry.rel, entry.kind.value, fmt)
            elif state.path != entry.rel:
                log.info("following %s, now named %s", state.path, entry.rel)
                state.path = entry.rel
            if bytes_left <= 0 or rows_left <= 0:
                out.pending = out.pending or self._has_news(state, entry)
                continue
            try:
                if state.fmt in TEXT_FORMATS:
                    chunk, more = self._read_text(state, entry, bytes_left)
                    bytes_left -= chunk.cost if chunk else 0
                else:
                    chunk, more = self._read_whole(state, entry, rows_left)
                    rows_left -= chunk.cost if chunk else 0
            except OSError as exc:  # unreadable now (permissions, vanished): try again later
                log.warning("cannot read %s: %s", entry.rel, exc)
                continue
            out.pending = out.pending or more
            if chunk is not None:
                out.chunks.append(chunk)
        return out

    def commit(self, chunks: list[Chunk]) -> None:
        """Record that ``chunks`` were applied."""
        for chunk in chunks:
            self.files[chunk.after.key] = chunk.after

    def _has_news(self, state: FileState, entry: _Entry) -> bool:
        size = entry.stat.st_size
        if state.fmt in TEXT_FORMATS:
            return size != state.offset and not (state.done and size >= state.offset)
        return not state.done or (state.size, state.mtime_ns) != (size, entry.stat.st_mtime_ns)

    # --- text files ---------------------------------------------------------------

    def _read_text(self, state: FileState, entry: _Entry, budget: int) -> tuple[Chunk | None, bool]:
        size = entry.stat.st_size
        restarted = False
        if size < state.offset:
            log.warning("%s was truncated: reading it again from the start", entry.rel)
            state, restarted = state.restarted(), True
        elif state.head_len and not self._same_head(state, entry.path):
            log.warning("%s was replaced: reading it again from the start", entry.rel)
            state, restarted = state.restarted(), True
        # A restart is committed even when no complete line is there yet.
        idle = Chunk(entry.kind, entry.rel, RawBatch(_empty_frame()), state) if restarted else None
        if state.done or size == state.offset:
            return idle, False
        want = min(size - state.offset, max(budget, MIN_READ))
        with entry.path.open("rb") as fh:
            fh.seek(state.offset)
            data = fh.read(want)
        at_eof = state.offset + len(data) >= size
        quiet = self._clock() - entry.stat.st_mtime >= self.grace
        chunk = self._text_chunk(state, entry, data, at_eof and quiet)
        if chunk is None:
            return idle, not at_eof
        if chunk.after.offset > state.offset and chunk.after.head_len < HEAD_BYTES:
            self._update_head(chunk.after, entry.path)
        return chunk, not at_eof

    def _same_head(self, state: FileState, path: Path) -> bool:
        with path.open("rb") as fh:
            return _sha1(fh.read(state.head_len)) == state.head

    def _update_head(self, state: FileState, path: Path) -> None:
        n = min(state.offset, HEAD_BYTES)
        with path.open("rb") as fh:
            state.head = _sha1(fh.read(n))
        state.head_len = n

    def _text_chunk(
        self, state: FileState, entry: _Entry, data: bytes, final: bool
    ) -> Chunk | None:
        """Parse the complete lines of ``data`` (read at ``state.offset``)."""
        after = dataclasses.replace(state, header=list(state.header) if state.header else None)
        rejects: list[dict[str, object]] = []
        pos = 0
        if after.skip_line:
            newline = data.find(b"\n")
            if newline < 0:
                after.offset += len(data)
                return Chunk(entry.kind, entry.rel, RawBatch(_empty_frame()), after, len(data))
            pos = newline + 1
            after.skip_line = False
            after.row += 1
        body = data[pos:]
        if b"\x00" in body:
            rejects.append(
                reject(entry.rel, None, RejectReason.UNREADABLE_FILE, "binary content (NUL bytes)")
            )
            after.offset += len(data)
            after.done = True
            return Chunk(entry.kind, entry.rel, RawBatch(_empty_frame(), rejects), after, len(data))
        cut = body.rfind(b"\n")
        complete, rest = body[: cut + 1], body[cut + 1 :]
        consumed = pos + len(complete)
        too_long = len(rest) > MAX_LINE_BYTES
        if rest and final and not too_long:
            complete, rest = body, b""
            consumed = len(data)
        if after.fmt == "csv" and after.header is None:
            if not complete:
                return self._skip_only(entry, after, consumed, rejects, rest, too_long)
            first = complete.find(b"\n")
            header_line = complete if first < 0 else complete[: first + 1]
            after.header = _csv_header(header_line)
            complete = b"" if first < 0 else complete[first + 1 :]
        lines = complete.count(b"\n") + (1 if complete and not complete.endswith(b"\n") else 0)
        if complete:
            if after.fmt == "csv":
                batch = parse_csv(complete, entry.rel, header=after.header, first_row=after.row)
            else:
                batch = parse_jsonl(complete, entry.rel, first_row=after.row)
        else:
            batch = RawBatch(_empty_frame())
        after.row += lines
        batch.rejects[:0] = rejects
        if too_long:
            batch.rejects.append(
                reject(
                    entry.rel, after.row, RejectReason.LINE_TOO_LONG, f"over {MAX_LINE_BYTES} bytes"
                )
            )
            consumed = len(data)
            after.skip_line = True
        after.offset += consumed
        if after.offset == state.offset and not batch.rejects:
            return None
        return Chunk(entry.kind, entry.rel, batch, after, cost=after.offset - state.offset)

    def _skip_only(
        self,
        entry: _Entry,
        after: FileState,
        consumed: int,
        rejects: list[dict[str, object]],
        rest: bytes,
        too_long: bool,
    ) -> Chunk | None:
        """A CSV file whose header line is not complete yet (or is over-long)."""
        if not too_long:
            return None
        rejects.append(
            reject(
                entry.rel, None, RejectReason.LINE_TOO_LONG, f"header over {MAX_LINE_BYTES} bytes"
            )
        )
        after.offset += consumed + len(rest)
        after.done = True
        return Chunk(
            entry.kind, entry.rel, RawBatch(_empty_frame(), rejects), after, consumed + len(rest)
        )

    # --- whole files ------------------------------------------------------------------

    def _read_whole(
        self, state: FileState, entry: _Entry, budget: int
    ) -> tuple[Chunk | None, bool]:
        st = entry.stat
        version = (st.st_size, st.st_mtime_ns)
        if state.done and (state.size, state.mtime_ns) == version:
            return None, False
        if state.done or (state.offset and (state.size, state.mtime_ns) != version):
            log.warning("%s changed after it was read: reading the new version", entry.rel)
            state = state.restarted()
        after = dataclasses.replace(state, size=st.st_size, mtime_ns=st.st_mtime_ns)
        if state.fmt == "jsonl.gz":
            batch = read_file(entry.path, entry.rel)
            after.done = True
            return Chunk(entry.kind, entry.rel, batch, after, cost=budget), False
        batch = read_parquet(entry.path, entry.rel)
        if batch.rejects:
            after.done = True
            return Chunk(entry.kind, entry.rel, batch, after, cost=1), False
        try:
            total = int(pl.scan_parquet(entry.path).select(pl.len()).collect().item())
        except Exception as exc:  # a corrupt footer or row groups
            bad = reject(
                entry.rel, None, RejectReason.UNREADABLE_FILE, f"unreadable Parquet: {exc}"
            )
            after.done = True
            return Chunk(entry.kind, entry.rel, RawBatch(_empty_frame(), [bad]), after, 1), False
        n = min(total - state.offset, budget)
        frame = batch.frame.slice(state.offset, n)
        after.offset = state.offset + n
        after.done = after.offset >= total
        return Chunk(entry.kind, entry.rel, RawBatch(frame), after, cost=max(1, n)), not after.done


def _csv_header(line: bytes) -> list[str]:
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    return next(csv.reader([text]), [])
