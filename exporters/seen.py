"""The set of event ids already counted, as sorted 64-bit hashes (8 bytes per event).

Hashes are ``hash_ids``: a 64-bit hash of the UTF-8 id computed with numpy over
the Arrow buffer of a whole column (8 bytes per round, a multiply-xorshift step per
word and the MurmurHash3 finaliser), about 15x faster than one BLAKE2b call per id
and defined here, so it is stable across processes, machines and library versions
(polars' own ``hash`` is not) and a checkpoint stays valid after an upgrade. It is
not cryptographic: ids chosen to collide could be made to; for ordinary ids two
distinct ids collide as for a random 64-bit function, with n ids about n^2 / 2^65
(3e-6 at 10 million ids, 0.1 at 2 billion). A collision makes the second id look like
a duplicate (event ids) or merges two items' states (item ids, ``exporters.compact``).

The set is two sorted arrays: a large ``main`` and a small ``recent`` one that new
hashes are merged into; ``recent`` is folded into ``main`` when it grows past a
fraction of it, so adding a batch costs O(batch + recent) amortised and lookups are
binary searches. Only ``np.sort``/``np.searchsorted`` are used on big arrays: they
release the GIL, so scrapes are not held up while a batch is merged. Instances are immutable: ``add`` returns a new set, so a checkpoint can
write one while ingest goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

Hashes = npt.NDArray[np.uint64]
_FOLD_RATIO: Final = 8
_FOLD_MIN: Final = 1 << 16


_M: Final = np.uint64(0x9E3779B97F4A7C15)
_C1: Final = np.uint64(0xFF51AFD7ED558CCD)
_C2: Final = np.uint64(0xC4CEB9FE1A85EC53)


def _fmix(h: Hashes) -> Hashes:
    """MurmurHash3's 64-bit finaliser (in place)."""
    h ^= h >> np.uint64(33)
    h *= _C1
    h ^= h >> np.uint64(33)
    h *= _C2
    h ^= h >> np.uint64(33)
    return h


def _buffers(ids: pl.Series) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The UTF-8 bytes of a string column (nulls as empty strings) and each id's start."""
    arr = ids.cast(pl.String).fill_null("").to_arrow().cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    _, obuf, dbuf = arr.buffers()
    offsets = np.frombuffer(obuf, dtype=np.int64, count=len(ids) + 1, offset=arr.offset * 8)
    data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None else np.empty(0, np.uint8)
    return data[offsets[0] : offsets[-1]], offsets - offsets[0]


def hash_ids(ids: pl.Series) -> Hashes:
    """A stable 64-bit hash of each id (nulls hash as the empty string)."""
    n = len(ids)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    data, offsets = _buffers(ids)
    lens = np.diff(offsets)
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[: len(data)] = data
    # Every byte offset as the start of a little-endian 64-bit word (unaligned view).
    words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    # Longest ids first: the ids still going at word k are a prefix. Ids of one length
    # (the usual event-id format) are already in that order: no sort, no gathers.
    order = None if lens.min() == lens.max() else np.argsort(-lens, kind="stable")
    if order is not None:
        lens, starts = lens[order], offsets[:-1][order]
    else:
        starts = offsets[:-1]
    h = _fmix(lens.astype(np.uint64) ^ _M)
    for k in range(int((lens[0] + 7) // 8)):
        live = int(np.searchsorted(-lens, -8 * k, side="left"))
        rest = lens[:live] - 8 * k
        w = words[starts[:live] + 8 * k]
        tail = rest < 8
        if tail.any():
            bits = (np.minimum(rest, 7).astype(np.uint64) * np.uint64(8)).astype(np.uint64)
            w = np.where(tail, w & ((np.uint64(1) << bits) - np.uint64(1)), w)
        x = h[:live] ^ w
        x *= _M
        x ^= x >> np.uint64(29)
        h[:live] = x
    if order is None:
        return _fmix(h)
    out = np.empty(n, dtype=np.uint64)
    out[order] = _fmix(h)
    return out


def _empty() -> Hashes:
    return np.empty(0, dtype=np.uint64)


def _sorted_unique(hashes: Hashes) -> Hashes:
    """Sorted distinct values; not ``np.unique``, which holds the GIL for long on big arrays."""
    out = np.sort(hashes.astype(np.uint64, copy=False))
    if len(out) > 1:
        out = out[np.concatenate(([True], out[1:] != out[:-1]))]
    return out


def _member(sorted_array: Hashes, values: Hashes) -> npt.NDArray[np.bool_]:
    if len(sorted_array) == 0:
        return np.zeros(len(values), dtype=np.bool_)
    pos = np.searchsorted(sorted_array, values)
    pos[pos == len(sorted_array)] = 0
    found: npt.NDArray[np.bool_] = sorted_array[pos] == values
    return found


def _mark(sorted_array: Hashes, ordered: Hashes, hit: npt.NDArray[np.bool_]) -> None:
    """Set ``hit`` where the sorted queries ``ordered`` are in ``sorted_array``.

    The binary searches run from the smaller side: a window's buckets are often smaller
    than a batch, so searching each bucket's hashes among the queries costs
    O(window log batch) instead of O(buckets x batch x log bucket). From the bucket's
    side only the first of equal queries is marked.
    """
    m, n = len(sorted_array), len(ordered)
    if m == 0:
        return
    if m < n:
        pos = np.searchsorted(ordered, sorted_array)
        inside = pos < n
        pos = pos[inside]
        hit[pos[ordered[pos] == sorted_array[inside]]] = True
    else:
        pos = np.searchsorted(sorted_array, ordered)
        pos[pos == m] = 0
        hit |= sorted_array[pos] == ordered


@dataclass(frozen=True)
class SeenIds:
    """An immutable set of event-id hashes."""

    main: Hashes = field(default_factory=_empty)
    recent: Hashes = field(default_factory=_empty)

    @classmethod
    def from_array(cls, hashes: Hashes) -> SeenIds:
        """A set holding ``hashes`` (any order, duplicates allowed)."""
        return cls(_sorted_unique(hashes))

    def __len__(self) -> int:
        """Number of distinct hashes."""
        return len(self.main) + len(self.recent)

    def contains(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        """Membership of each hash."""
        return _member(self.main, hashes) | _member(self.recent, hashes)

    def add(self, hashes: Hashes) -> SeenIds:
        """A new set with ``hashes`` added."""
        unique = _sorted_unique(hashes)
        new = unique[~self.contains(unique)]
        # Disjoint sorted arrays: a sort of their concatenation is their union.
        recent = np.sort(np.concatenate([self.recent, new]))
        if len(recent) > max(_FOLD_MIN, len(self.main) // _FOLD_RATIO):
            return SeenIds(np.sort(np.concatenate([self.main, recent])), _empty())
        return SeenIds(self.main, recent)

    def array(self) -> Hashes:
        """Every hash, sorted."""
        return np.sort(np.concatenate([self.main, self.recent])) if len(self.recent) else self.main

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return int(self.main.nbytes + self.recent.nbytes)


Days = npt.NDArray[np.int64]
#: Width of one bucket of event time (microseconds): a day.
DAY_US: Final = 86_400 * 1_000_000


@dataclass(frozen=True)
class SeenWindow:
    """Event-id hashes in buckets by the event's day (event time), so old days can be dropped.

    A duplicate carries its event's ``ts``, so its first copy sits in a bucket that is
    kept as long as that ``ts`` is inside the window; events older than the window are
    refused before they are looked up (``too_old``). Memory: 8 bytes per event id of the
    window (plus a day), whatever the history before it.
    """

    buckets: tuple[tuple[int, SeenIds], ...] = ()

    @classmethod
    def from_arrays(cls, hashes: Hashes, days: Days) -> SeenWindow:
        """A window holding ``hashes``, each in the bucket of its day."""
        return cls().add(hashes, days)

    def __len__(self) -> int:
        """Number of hashes held."""
        return sum(len(s) for _, s in self.buckets)

    def contains(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        """Membership of each hash, in any bucket."""
        n = len(hashes)
        if n == 0 or not self.buckets:
            return np.zeros(n, dtype=np.bool_)
        order = np.argsort(hashes)
        ordered = hashes[order]
        hit = np.zeros(n, dtype=np.bool_)
        for _, ids in self.buckets:
            _mark(ids.main, ordered, hit)
            _mark(ids.recent, ordered, hit)
        # Only the first of equal queries is marked by a search from the bucket's side.
        first = np.empty(n, dtype=np.bool_)
        first[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        hit = hit[np.flatnonzero(first)][np.cumsum(first) - 1]
        found = np.empty(n, dtype=np.bool_)
        found[order] = hit
        return found

    def add(self, hashes: Hashes, days: Days) -> SeenWindow:
        """A new window with ``hashes`` added to the buckets of their ``days``."""
        if len(hashes) == 0:
            return self
        by_day = dict(self.buckets)
        for day in np.unique(days).tolist():
            ids = by_day.get(int(day), SeenIds())
            by_day[int(day)] = ids.add(hashes[days == day])
        return SeenWindow(tuple(sorted(by_day.items())))

    def prune(self, horizon_us: int | None) -> SeenWindow:
        """Without the buckets whose whole day is before ``horizon_us`` (None keeps all)."""
        if horizon_us is None:
            return self
        keep = tuple((d, s) for d, s in self.buckets if (d + 1) * DAY_US > horizon_us)
        return self if len(keep) == len(self.buckets) else SeenWindow(keep)

    def arrays(self) -> tuple[Hashes, Days]:
        """Every hash and its day (for the checkpoint)."""
        if not self.buckets:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
        hashes = np.concatenate([s.array() for _, s in self.buckets])
        days = np.concatenate([np.full(len(s), d, dtype=np.int64) for d, s in self.buckets])
        return hashes, days

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return sum(s.nbytes for _, s in self.buckets)
