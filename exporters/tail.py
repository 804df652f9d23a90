"""Following the files of a data folder: new files, appended lines, rotation, truncation.

A file is known by its content: a checksum of its first bytes (up to ``HEAD_BYTES``
of what was read), as Vector's file source does with ``fingerprint.strategy =
"checksum"``. The inode is only a hint where to look: a file found under a tracked
inode is the tracked file only if its first bytes still hash to the fingerprint and
its name announces no other format. So a rotated (renamed) file keeps its read
position, even under a name the reader would not pick up on its own
(``events.jsonl`` -> ``events.jsonl.1``), while a new file that the file system put
on a freed inode (``a.jsonl`` deleted, ``b.parquet`` renamed into place) is read as
the new file it is.

- ``copytruncate`` rotation: when a followed text file loses its content (shrinks
  below the read position, or its first bytes change), a file of the folder whose
  first bytes match the old fingerprint (``live.jsonl.1``) is the copy: its unread
  tail is read first, then the truncated original from offset 0.

- CSV and JSONL are read as they grow, complete lines only: a partial last line is
  left for the next poll, unless the file has not changed for ``grace`` seconds
  (then the writer is done and forgot the final newline). A line that grows past
  ``MAX_LINE_BYTES`` is rejected once and skipped up to its newline.
- A text file that shrinks below the read position (truncation), or whose first
  bytes no longer match what was read (replaced under the same inode), is a new
  file, read from offset 0 (after the tail of its copy, see above).
- A folder or file that cannot be read (permissions) is logged once and listed in
  ``problems`` (the exporter's ``/readyz`` names them); the read positions of the
  files of an unlisted folder are kept, so they are not re-read when it comes back.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

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
    head: str = ""  # fingerprint: sha1 of the first head_len bytes (text: of those consumed)
    head_len: int = 0
    #: A new file found where a followed one was: committed even before it has a line.
    fresh: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        data = dataclasses.asdict(self)
        del data["fresh"]
        return data

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


class _MovedError(Exception):
    """The name now points to another file than the one listed (renamed in between)."""


def _open(entry: _Entry) -> BinaryIO:
    """``entry``'s file, opened by name and checked to be the listed inode.

    A rotation renames files while the folder is read: reading by name alone could
    take the bytes of another file for this one's.
    """
    fh = entry.path.open("rb")
    st = os.fstat(fh.fileno())
    if f"{st.st_dev}:{st.st_ino}" != entry.key:
        fh.close()
        raise _MovedError(entry.rel)
    return fh


def _head_of(entry: _Entry, n: int) -> str:
    with _open(entry) as fh:
        return _sha1(fh.read(n))


def _files_of(listing: list[os.DirEntry[str]], kind: Kind) -> Iterator[_Entry]:
    """The regular files of a folder listing, hidden and ``.tmp`` names left out."""
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
        yield _Entry(Path(entry.path), f"{kind.value}/{name}", kind, st, key)


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
        #: Untracked files the reader would not pick up by name (copies of rotated files).
        self._others: list[_Entry] = []
        self._listed: list[_Entry] = []
        #: What cannot be read right now (relative path -> reason), logged once each.
        self.problems: dict[str, str] = {}

    def _problem(self, rel: str, reason: str) -> None:
        if self.problems.get(rel) != reason:
            log.warning("cannot read %s: %s", rel, reason)
        self.problems[rel] = reason

    def _solved(self, rel: str) -> None:
        if self.problems.pop(rel, None) is not None:
            log.info("%s is readable again", rel)

    # --- scanning -------------------------------------------------------------

    def _scan(self) -> list[_Entry]:
        """Candidate files: tracked identities first (old tails before new files), by name."""
        entries: list[_Entry] = []
        keys: set[str] = set()
        self._others = []
        for kind in Kind:
            folder = self.data_dir / kind.value
            try:
                listing = sorted(os.scandir(folder), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                # The files are still there, just not listable: keep their positions
                # (forgetting them would re-read every file when the folder comes back).
                self._problem(f"{kind.value}/", exc.strerror or str(exc))
                keys.update(k for k, f in self.files.items() if f.kind == kind.value)
                continue
            self._solved(f"{kind.value}/")
            for found in _files_of(listing, kind):
                if found.key in keys:
                    continue  # a hard link to a file already listed
                if found.key not in self.files and file_format(found.path) is None:
                    self._others.append(found)
                    continue
                keys.add(found.key)
                entries.append(found)
        self._listed = entries
        listed = {e.rel for e in entries} | {e.rel for e in self._others}
        for rel in [r for r in self.problems if not r.endswith("/") and r not in listed]:
            del self.problems[rel]  # removed or renamed: nothing to read there any more
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
        budget = [max_bytes, max_rows]
        claimed: set[str] = set()  # copies already read as the tail of a truncated file
        for entry in self._scan():
            if entry.key in claimed:
                continue
            try:
                state, copy = self._identify(entry, claimed)
                if copy is not None:
                    self._read(copy[0], copy[1], budget, out)
                if state is not None:
                    self._read(state, entry, budget, out)
            except _MovedError:  # renamed while listed: it is found again next poll
                out.pending = True
                continue
            except OSError as exc:  # unreadable now (permissions, vanished): try again later
                self._problem(entry.rel, exc.strerror or str(exc))
                continue
            self._solved(entry.rel)
        return out

    def _read(self, state: FileState, entry: _Entry, budget: list[int], out: Poll) -> None:
        """Read ``entry`` from ``state`` within ``budget`` (bytes, rows), into ``out``."""
        if budget[0] <= 0 or budget[1] <= 0:
            out.pending = out.pending or self._has_news(state, entry)
            return
        if state.fmt in TEXT_FORMATS:
            chunk, more = self._read_text(state, entry, budget[0])
            budget[0] -= chunk.cost if chunk else 0
        else:
            chunk, more = self._read_whole(state, entry, budget[1])
            budget[1] -= chunk.cost if chunk else 0
        out.pending = out.pending or more
        if chunk is not None:
            out.chunks.append(chunk)

    def _identify(
        self, entry: _Entry, claimed: set[str]
    ) -> tuple[FileState | None, tuple[FileState, _Entry] | None]:
        """The state to read ``entry`` from (None: not a file to read), and a copy to read first.

        A tracked state is kept only when the file still holds what was read: its
        first bytes hash to the fingerprint (and, for text, it did not shrink below
        the read position) and its name announces no other format. Otherwise the
        inode holds a new file; if the old content is gone, a file of the folder with
        the old fingerprint is its ``copytruncate`` copy, whose unread tail comes first.
        """
        fmt = file_format(entry.path)
        state = self.files.get(entry.key)
        if state is None:
            assert fmt is not None
            return FileState(entry.key, entry.rel, entry.kind.value, fmt), None
        text = state.fmt in TEXT_FORMATS
        reason = None
        if fmt is not None and fmt != state.fmt:
            reason = f"a new {fmt} file on the inode of {state.path}"
        elif text and entry.stat.st_size < state.offset:
            reason = "truncated"
        elif (
            text
            and state.head_len
            and (
                entry.stat.st_size < state.head_len or _head_of(entry, state.head_len) != state.head
            )
        ):
            reason = "replaced (its first bytes changed)"
        if reason is None:
            if state.path != entry.rel:
                log.info("following %s, now named %s", state.path, entry.rel)
                state.path = entry.rel
            return state, None
        copy = self._copy_of(state, entry, claimed) if text and state.offset else None
        if copy is not None:
            log.warning(
                "%s was %s; reading the rest of its copy %s, then it from the start",
                entry.rel,
                reason,
                copy[1].rel,
            )
        elif text and fmt is None:
            log.warning("%s was %s", entry.rel, reason)
        else:
            log.warning("%s was %s: reading it from the start", entry.rel, reason)
        if fmt is None:
            # The content read is gone and the name announces nothing to read.
            del self.files[entry.key]
            return None, copy
        return FileState(entry.key, entry.rel, entry.kind.value, fmt, fresh=True), copy

    def _copy_of(
        self, state: FileState, entry: _Entry, claimed: set[str]
    ) -> tuple[FileState, _Entry] | None:
        """The copy (same first bytes) of a text file whose content left its inode.

        Any file of the folder qualifies, a followed one too: the copy may be written on
        the freed inode of an older rotated file (``live.jsonl.4`` replaced by a rename).
        """
        for other in self._others + self._listed:
            if other.kind != entry.kind or other.key in (entry.key, *claimed):
                continue
            if other.stat.st_size < max(state.head_len, state.offset, 1):
                continue  # too short to hold what was read
            tracked = self.files.get(other.key)
            if tracked is not None and tracked.head == state.head:
                continue  # already read as this content's continuation
            try:
                if state.head_len and _head_of(other, state.head_len) != state.head:
                    continue
            except (OSError, _MovedError):
                continue
            claimed.add(other.key)
            return dataclasses.replace(state, key=other.key, path=other.rel), other
        return None

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
        restarted, state.fresh = state.fresh, False
        # A restart is committed even when no complete line is there yet.
        idle = Chunk(entry.kind, entry.rel, RawBatch(_empty_frame()), state) if restarted else None
        if state.done or size <= state.offset:
            return idle, False
        want = min(size - state.offset, max(budget, MIN_READ))
        with _open(entry) as fh:
            fh.seek(state.offset)
            data = fh.read(want)
        at_eof = state.offset + len(data) >= size
        quiet = self._clock() - entry.stat.st_mtime >= self.grace
        chunk = self._text_chunk(state, entry, data, at_eof and quiet)
        if chunk is None:
            return idle, not at_eof
        if chunk.after.offset > state.offset and chunk.after.head_len < HEAD_BYTES:
            self._update_head(chunk.after, entry)
        return chunk, not at_eof

    def _update_head(self, state: FileState, entry: _Entry) -> None:
        n = min(state.offset, HEAD_BYTES)
        with _open(entry) as fh:
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
                after.header = batch.header or after.header
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
        after.fresh = False
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
