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
  tail is read first, then the truncated original from offset 0. When the file was
  rotated more than once since it was last read (``live.jsonl.1`` became
  ``live.jsonl.2``, a new ``live.jsonl.1`` was copied), the generations in between
  are read whole: copies named after the file (``live.jsonl.*``, not compressed),
  never read, written after the file was last read and not a copy of what it holds
  now. The folder is listed afresh for this, and every file is stat'ed again just
  before it is read and its first bytes checked again after the read, so a rotation
  in the middle of a poll is seen at the next one instead of mixing two generations.

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

import bisect
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import polars as pl

from exporters.tail_files import (
    HEAD_BYTES,
    Entry,
    FileState,
    MovedError,
    copy_in_progress,
    csv_header,
    files_of,
    head_of,
    open_checked,
    restat,
    rotated_name_of,
    sha1,
    starts_like,
)
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

__all__ = ["Chunk", "FileState", "Poll", "Tailer"]

log = logging.getLogger(__name__)

TEXT_FORMATS: Final = ("csv", "jsonl")
#: Enough to always hold one maximal line plus its newline.
MIN_READ: Final = MAX_LINE_BYTES + 2
#: Polls a tracked file must be absent from before its read position is dropped.
_FORGET_AFTER: Final = 3
#: File system timestamps lag the wall clock by up to a tick: the slack when comparing.
_MTIME_SLACK_NS: Final = 50_000_000
#: How long, and how many, contents that left their inode with no copy found are kept.
_LEFT_NS: Final = 60_000_000_000
_LEFT_MAX: Final = 64


def _empty_frame() -> pl.LazyFrame:
    return pl.LazyFrame({SOURCE: [], ROW: []}, schema={SOURCE: pl.String, ROW: pl.Int64})


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
        self._others: list[Entry] = []
        self._listed: list[Entry] = []
        self._poll_ns = 0
        self._rels: list[str] = []
        #: What cannot be read right now (relative path -> reason), logged once each.
        self.problems: dict[str, str] = {}
        #: Contents that left their inode (truncated) with no copy in the listing, and
        #: when (ns): a listing taken during a cascade of renames may miss a file, so a
        #: copy found later is read from where reading stopped, never again whole.
        self._left: list[tuple[int, FileState]] = [
            (time.time_ns(), f.before) for f in self.files.values() if f.before is not None
        ]

    def _problem(self, rel: str, reason: str) -> None:
        if self.problems.get(rel) != reason:
            log.warning("cannot read %s: %s", rel, reason)
        self.problems[rel] = reason

    def _solved(self, rel: str) -> None:
        if self.problems.pop(rel, None) is not None:
            log.info("%s is readable again", rel)

    # --- scanning -------------------------------------------------------------

    def _scan(self) -> list[Entry]:
        """Candidate files: tracked identities first (old tails before new files), by name."""
        entries: list[Entry] = []
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
            for found in files_of(listing, kind):
                if found.key in keys:
                    continue  # a hard link to a file already listed
                if found.key not in self.files and file_format(found.path) is None:
                    self._others.append(found)
                    continue
                keys.add(found.key)
                entries.append(found)
        self._listed = entries
        listed = {e.rel for e in entries} | {e.rel for e in self._others}
        self._rels = sorted(listed)
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
        self._poll_ns = time.time_ns()
        for listed in self._scan():
            if listed.key in claimed:
                continue
            entry = listed
            # A file and the copies its content went to are read together or not at all.
            group = Poll()
            try:
                entry = restat(listed)
                state, copies = self._identify(entry, claimed)
                for copy in copies:
                    self._read(copy[0], copy[1], budget, group)
                if state is not None:
                    self._read(state, entry, budget, group)
            except MovedError:  # renamed while listed: it is found again next poll
                out.pending = True
                continue
            except OSError as exc:  # unreadable now (permissions, vanished): try again later
                self._problem(entry.rel, exc.strerror or str(exc))
                continue
            out.chunks += group.chunks
            out.pending = out.pending or group.pending
            self._solved(entry.rel)
        return out

    def _read(self, state: FileState, entry: Entry, budget: list[int], out: Poll) -> None:
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
        self, entry: Entry, claimed: set[str]
    ) -> tuple[FileState | None, list[tuple[FileState, Entry]]]:
        """The state to read ``entry`` from (None: not a file to read), and copies to read first.

        A tracked state is kept only when the file still holds what was read: its
        first bytes hash to the fingerprint (and, for text, it did not shrink below
        the read position) and its name announces no other format. Otherwise the
        inode holds a new file; if the old content is gone, a file of the folder with
        the old fingerprint is its ``copytruncate`` copy, whose unread tail comes first,
        then the generations rotated in between (see the module docstring).
        """
        fmt = file_format(entry.path)
        state = self.files.get(entry.key)
        if state is None:
            assert fmt is not None
            # A new text file is followed from now on, even empty (see ``read_ns``).
            fresh = fmt in TEXT_FORMATS
            since = self._poll_ns if fresh else 0
            return FileState(
                entry.key, entry.rel, entry.kind.value, fmt, read_ns=since, fresh=fresh
            ), []
        text = state.fmt in TEXT_FORMATS
        reason = _change(state, entry, fmt)
        live = text and fmt is not None
        if reason is None:
            return state, self._kept(state, entry, claimed, live)
        lost = state.offset or state.before
        copies = self._copies_of(state, entry, claimed, live) if text and lost else []
        # Its own copy continues what was read; the others are generations read whole.
        own = [e.rel for c, e in copies if c.head == state.head and c.offset == state.offset]
        whole = [e.rel for c, e in copies if e.rel not in own]
        if copies:
            log.warning(
                "%s was %s; reading %s%s%s, then it from the start",
                entry.rel,
                reason,
                f"the rest of its copy {own[0]}" if own else "",
                " and " if own and whole else "",
                f"the generations {', '.join(whole)} whole" if whole else "",
            )
        elif text and fmt is None:
            log.warning("%s was %s", entry.rel, reason)
        else:
            log.warning("%s was %s: reading it from the start", entry.rel, reason)
        if fmt is None:
            # The content read is gone and the name announces nothing to read.
            del self.files[entry.key]
            return None, copies
        restart = FileState(entry.key, entry.rel, entry.kind.value, fmt, read_ns=self._poll_ns)
        restart.fresh = True
        # Remembered unless its own copy was found (generations read whole do not count).
        if text and not own:
            restart.before = (
                dataclasses.replace(state, before=None) if state.offset else state.before
            )
            if restart.before is not None:
                self._left = [*self._left[1 - _LEFT_MAX :], (self._poll_ns, restart.before)]
        return restart, copies

    def _kept(
        self, state: FileState, entry: Entry, claimed: set[str], live: bool
    ) -> list[tuple[FileState, Entry]]:
        """Copies to read before ``entry``, a file that still holds what ``state`` read."""
        if state.path != entry.rel:
            log.info("following %s, now named %s", state.path, entry.rel)
            state.path = entry.rel
        unsettled = not state.settled if state.offset else entry.stat.st_size > 0
        if not (live and state.read_ns and unsettled):
            return []
        # Read from 0 only since it was found: if it was rotated meanwhile, the
        # generations it lost are in copies written since (named after it: without
        # such a name in the folder, nothing to look for).
        copies = self._copies_of(state, entry, claimed, live) if self._sibling(entry) else []
        state.settled = bool(state.offset)
        if state.settled:
            state.before = None  # its copy had two listings to show up in
        return copies

    def _copies_of(
        self, state: FileState, entry: Entry, claimed: set[str], live: bool
    ) -> list[tuple[FileState, Entry]]:
        """Where the content that left ``entry``'s inode went: its copy, then later generations.

        The copy (same first bytes) may be any file of the folder, a followed one too:
        it may be written on the freed inode of an older rotated file (``live.jsonl.4``
        replaced by a rename). It is read from the old position (and followed from then
        on, even with nothing left to read, so it is never taken for a new file). For a
        ``live`` file (one read by its name), the copies of generations never read come
        next, read from the start, oldest first.
        """
        others = [e for e in self._fresh_listing(entry.kind) if e.key not in (entry.key, *claimed)]
        self._left = [(t, old) for t, old in self._left if self._poll_ns - t < _LEFT_NS]
        read = [s for s in (*(old for _, old in self._left), state) if s.offset]
        # A content stays remembered once its copy is found: the poll may drop the group
        # (a file renamed meanwhile), and a copy read is followed, so never found again.
        copies = [c for c in (self._copy_of(old, entry, others, claimed) for old in read) if c]
        if not live or not state.read_ns:
            return copies
        since = state.read_ns - _MTIME_SLACK_NS
        between = [
            other
            for other in others
            if other.key not in claimed
            and other.key not in self.files
            and rotated_name_of(other.path.name, entry.path.name)
            and other.stat.st_size > 0
            and other.stat.st_mtime_ns >= since
            and not copy_in_progress(other, entry)
            # A copy of what was read, still being written (or missed as the copy):
            # never a generation to read whole.
            and not any(starts_like(other, s.head_len, s.head) for s in read if s.head_len)
        ]
        for other in sorted(between, key=lambda e: (e.stat.st_mtime_ns, e.rel)):
            claimed.add(other.key)
            fresh = FileState(other.key, other.rel, entry.kind.value, state.fmt, fresh=True)
            copies.append((fresh, other))
        return copies

    def _copy_of(
        self, old: FileState, entry: Entry, others: list[Entry], claimed: set[str]
    ) -> tuple[FileState, Entry] | None:
        """The file of ``others`` that holds ``old``'s content, to read from ``old``'s position."""
        for other in others:
            if other.stat.st_size < max(old.head_len, old.offset, 1):
                continue  # too short to hold what was read
            if old.head_len and not starts_like(other, old.head_len, old.head):
                continue
            tracked = self.files.get(other.key)
            if (
                tracked is not None
                and tracked.offset >= old.offset
                and (tracked.head == old.head or starts_like(other, tracked.head_len, tracked.head))
            ):
                continue  # already read as this content's continuation (not a reused inode)
            if copy_in_progress(other, entry):
                continue  # copied, not yet truncated: what it holds is read from ``entry``
            claimed.add(other.key)
            return dataclasses.replace(old, key=other.key, path=other.rel, fresh=True), other
        return None

    def _sibling(self, entry: Entry) -> bool:
        """Whether the poll's listing has a name that starts with ``entry``'s (``live.jsonl.1``)."""
        at = bisect.bisect_right(self._rels, entry.rel)
        return at < len(self._rels) and self._rels[at].startswith(entry.rel)

    def _fresh_listing(self, kind: Kind) -> list[Entry]:
        """The files of ``kind``'s folder as they are now (the poll's listing may be old)."""
        try:
            listing = sorted(os.scandir(self.data_dir / kind.value), key=lambda e: e.name)
        except OSError:
            return []
        return list(files_of(listing, kind))

    def commit(self, chunks: list[Chunk]) -> None:
        """Record that ``chunks`` were applied."""
        for chunk in chunks:
            self.files[chunk.after.key] = chunk.after

    def _has_news(self, state: FileState, entry: Entry) -> bool:
        size = entry.stat.st_size
        if state.fmt in TEXT_FORMATS:
            return size != state.offset and not (state.done and size >= state.offset)
        return not state.done or (state.size, state.mtime_ns) != (size, entry.stat.st_mtime_ns)

    # --- text files ---------------------------------------------------------------

    def _read_text(self, state: FileState, entry: Entry, budget: int) -> tuple[Chunk | None, bool]:
        started_ns = time.time_ns()
        restarted, state.fresh = state.fresh, False
        # A restart is committed even when no complete line is there yet.
        idle = None
        if restarted:
            idle = Chunk(entry.kind, entry.rel, RawBatch(_empty_frame()), state)
        if state.done or entry.stat.st_size <= state.offset:
            return idle, False
        with open_checked(entry) as fh:
            st = os.fstat(fh.fileno())
            if st.st_size <= state.offset:  # truncated since the stat: seen next poll
                return idle, st.st_size < state.offset
            want = min(st.st_size - state.offset, max(budget, MIN_READ))
            fh.seek(state.offset)
            data = fh.read(want)
            # The first bytes as they are after the read: unchanged, the file was not
            # truncated or replaced before or during it (otherwise what was read may be
            # new content at the old offset; the next poll sees the change and finds
            # the copy). The fingerprint is taken from these bytes or from ``data``,
            # never from a later read that could see another generation.
            fh.seek(0)
            first = fh.read(HEAD_BYTES) if state.offset else data[:HEAD_BYTES]
            if state.head_len and sha1(first[: state.head_len]) != state.head:
                return None, True
            at_eof = state.offset + len(data) >= st.st_size
            quiet = self._clock() - st.st_mtime >= self.grace
            chunk = self._text_chunk(state, entry, data, at_eof and quiet)
            if chunk is None:
                return idle, not at_eof
        after = chunk.after
        if not state.offset:
            after.settled = False  # nothing to check this read against: see ``settled``
        elif state.settled:
            after.read_ns = started_ns
        if after.offset > state.offset and after.head_len < HEAD_BYTES:
            after.head_len = min(after.offset, HEAD_BYTES)
            after.head = sha1(first[: after.head_len])
        return chunk, not at_eof

    def _text_chunk(self, state: FileState, entry: Entry, data: bytes, final: bool) -> Chunk | None:
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
            after.header = csv_header(header_line)
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
        entry: Entry,
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

    def _read_whole(self, state: FileState, entry: Entry, budget: int) -> tuple[Chunk | None, bool]:
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


def _change(state: FileState, entry: Entry, fmt: str | None) -> str | None:
    """Why ``entry`` no longer holds what ``state`` read (None: it still does)."""
    text = state.fmt in TEXT_FORMATS
    if fmt is not None and fmt != state.fmt:
        return f"a new {fmt} file on the inode of {state.path}"
    if text and entry.stat.st_size < state.offset:
        return "truncated"
    changed = state.head_len and (
        entry.stat.st_size < state.head_len or head_of(entry, state.head_len) != state.head
    )
    return "replaced (its first bytes changed)" if text and changed else None
