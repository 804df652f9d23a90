"""The files of a followed folder as ``exporters.tail`` sees them: identity, first bytes, copies.

A listed file is an ``Entry`` (path, stat, ``device:inode`` key). Rotation renames
files while the folder is read, so every open checks that the name still points to
the listed inode (``MovedError`` otherwise: the caller tries again at the next poll
instead of taking one file's bytes for another's).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

from kpi.contract import Kind

#: Bytes at the start of a text file whose hash detects a file replaced in place.
HEAD_BYTES: Final = 512
#: Suffixes of compressed rotated copies (never read as text).
_COMPRESSED: Final = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".zip")


@dataclass
class Entry:
    path: Path
    rel: str
    kind: Kind
    stat: os.stat_result
    key: str


def sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


class MovedError(Exception):
    """The name now points to another file than the one listed (renamed in between)."""


def open_checked(entry: Entry) -> BinaryIO:
    """``entry``'s file, opened by name and checked to be the listed inode.

    A rotation renames files while the folder is read: reading by name alone could
    take the bytes of another file for this one's.
    """
    try:
        fh = entry.path.open("rb")
    except FileNotFoundError:
        raise MovedError(entry.rel) from None
    st = os.fstat(fh.fileno())
    if f"{st.st_dev}:{st.st_ino}" != entry.key:
        fh.close()
        raise MovedError(entry.rel)
    return fh


def head_of(entry: Entry, n: int) -> str:
    with open_checked(entry) as fh:
        return sha1(fh.read(n))


def restat(entry: Entry) -> Entry:
    """``entry`` with the file's stat of now (the listing's may be a rotation old)."""
    try:
        st = entry.path.stat()
    except FileNotFoundError:
        raise MovedError(entry.rel) from None
    if f"{st.st_dev}:{st.st_ino}" != entry.key:
        raise MovedError(entry.rel)
    return dataclasses.replace(entry, stat=st)


def files_of(listing: list[os.DirEntry[str]], kind: Kind) -> Iterator[Entry]:
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
        yield Entry(Path(entry.path), f"{kind.value}/{name}", kind, st, key)


def starts_like(entry: Entry, n: int, head: str) -> bool:
    """Whether ``entry``'s first ``n`` bytes hash to ``head`` (False when unreadable).

    A file renamed since it was listed raises ``MovedError``: the caller tries again
    at the next poll rather than decide on a name that now means another file.
    """
    try:
        return head_of(entry, n) == head
    except FileNotFoundError:
        raise MovedError(entry.rel) from None
    except OSError:
        return False


def rotated_name_of(name: str, live: str) -> bool:
    """Whether ``name`` is a rotated, uncompressed copy of ``live`` (``live.jsonl.1``)."""
    return name.startswith(live) and name != live and not name.lower().endswith(_COMPRESSED)


def copy_in_progress(copy: Entry, live: Entry) -> bool:
    """Whether ``copy`` holds the beginning of what ``live`` holds now (being copied, not yet
    truncated): that content is read from ``live`` itself."""
    size = copy.stat.st_size
    if size > live.stat.st_size:
        return False
    n = min(size, HEAD_BYTES)
    try:
        with open_checked(copy) as a, open_checked(live) as b:
            return a.read(n) == b.read(n)
    except FileNotFoundError:
        raise MovedError(copy.rel) from None


def csv_header(line: bytes) -> list[str]:
    """The column names of a CSV header line."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    return next(csv.reader([text]), [])


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
    #: Text: wall clock (ns) since which the file may have been rotated unseen: copies
    #: written since then that hold content not read are read (0: unknown).
    read_ns: int = 0
    #: Text: False after a read from offset 0 (no fingerprint to check it against): the
    #: next poll looks for copies written since ``read_ns`` before moving it on.
    settled: bool = True
    #: A new file found where a followed one was: committed even before it has a line.
    fresh: bool = field(default=False, compare=False)
    #: Text, read from 0 after a truncation whose copy was not in the listing (a listing
    #: taken during a cascade of renames may miss a file): what the inode held, so the
    #: copy found at a later poll is read from the old position, never again whole.
    before: FileState | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        data = dataclasses.asdict(self)
        del data["fresh"]
        data["before"] = self.before.to_json() if self.before else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileState:
        """The state saved by ``to_json``."""
        fields = dict(data)
        before = fields.pop("before", None)
        return cls(**fields, before=cls.from_json(before) if before else None)

    def restarted(self) -> FileState:
        """The same file read again from the start."""
        return FileState(self.key, self.path, self.kind, self.fmt)
