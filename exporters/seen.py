"""The set of event ids already counted, as sorted 64-bit hashes (6 bytes per event).

Hashes are ``hash_ids``: a 64-bit hash of the UTF-8 id computed with numpy over
the Arrow buffer of a whole column (8 bytes per round, a multiply-xorshift step per
word and the MurmurHash3 finaliser), about 15x faster than one BLAKE2b call per id
and defined here, so it is stable across processes, machines and library versions
(polars' own ``hash`` is not) and a checkpoint stays valid after an upgrade. It is
not cryptographic: ids chosen to collide could be made to; for ordinary ids two
distinct ids collide as for a random 64-bit function, with n ids about n^2 / 2^65
(3e-6 at 10 million ids, 0.1 at 2 billion). A collision makes the second id look like
a duplicate (event ids) or merges two items' states (item ids, ``exporters.compact``).

The set is a large ``main`` part and a small ``recent`` one that new hashes are merged
into; ``recent`` is folded into ``main`` when it grows past a fraction of it, so adding
a batch costs O(batch + recent) amortised. ``main`` keeps the whole 64 bits of each
hash in 6 bytes (``Packed``: the top 16 bits are implied by a prefix index), so a
lookup is exact: no id is taken for another unless their 64-bit hashes are equal.
Lookups sort the queries once and merge them with each part (or binary-search the
smaller side). Only numpy sorts and searches are used on big arrays: they release the
GIL, so scrapes are not held up while a batch is merged. Instances are immutable:
``add`` returns a new set, so a checkpoint can write one while ingest goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

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


def _step(h: Hashes, w: Hashes) -> Hashes:
    """One round: a word mixed into the running hashes."""
    x = h ^ w
    x *= _M
    x ^= x >> np.uint64(29)
    return x


def _one_length(padded: npt.NDArray[np.uint8], n: int, length: int) -> Hashes:
    """``hash_ids`` of ``n`` ids of ``length`` bytes each, back to back in ``padded``.

    Word k of every id is a strided view of the bytes: no positions, gathers or masks
    per id.
    """
    h = _fmix(np.full(n, np.uint64(length) ^ _M, dtype=np.uint64))
    for k in range((length + 7) // 8):
        w = np.ndarray((n,), dtype="<u8", buffer=padded, offset=8 * k, strides=(length,))
        rest = length - 8 * k
        if rest < 8:
            w = w & np.uint64((1 << (8 * rest)) - 1)
        h = _step(h, w)
    return _fmix(h)


def hash_ids(ids: pl.Series) -> Hashes:
    """A stable 64-bit hash of each id (nulls hash as the empty string)."""
    n = len(ids)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    data, offsets = _buffers(ids)
    lens = np.diff(offsets)
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[: len(data)] = data
    longest = int(lens.max())
    if int(lens.min()) == longest:  # the usual event-id format
        return _one_length(padded, n, longest)
    # Every byte offset as the start of a little-endian 64-bit word (unaligned view).
    words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    # Longest ids first: the ids still going at word k are a prefix. Lengths under
    # 2^15 sort as 16-bit keys, which numpy's stable sort does by radix.
    key = -lens.astype(np.int16) if longest < 1 << 15 else -lens
    order = np.argsort(key, kind="stable")
    lens, starts = lens[order], offsets[:-1][order]
    h = _fmix(lens.astype(np.uint64) ^ _M)
    for k in range((longest + 7) // 8):
        live = int(np.searchsorted(-lens, -8 * k, side="left"))
        rest = lens[:live] - 8 * k
        w = words[starts[:live] + 8 * k]
        tail = rest < 8
        if tail.any():
            bits = (np.minimum(rest, 7).astype(np.uint64) * np.uint64(8)).astype(np.uint64)
            w = np.where(tail, w & ((np.uint64(1) << bits) - np.uint64(1)), w)
        h[:live] = _step(h[:live], w)
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


def _merge(a: Hashes, b: Hashes) -> Hashes:
    """The sorted union of two disjoint sorted arrays.

    A stable sort is a timsort here: on two sorted runs it is one linear merge, where the
    default sort would sort the whole again.
    """
    if not len(a) or not len(b):
        return a if len(b) == 0 else b
    return np.sort(np.concatenate([a, b]), kind="stable")


#: Hashes held as a 16-bit prefix index and 48-bit remainders from this many on: the
#: index then costs at most 0.5 B a hash, and smaller plain sets search faster.
PACK_MIN: Final = 1 << 17
_PREFIXES: Final = 1 << 16
_PREFIX_VALUES: Final = np.arange(_PREFIXES, dtype=np.uint16)
#: A packed set is searched in place (no rebuild) by fewer queries than 1/this of its size.
_PROBE_RATIO: Final = 2
#: A hash's bytes (little-endian): its low 16 bits, the next 32, its top 16 (the prefix).
_SPLIT: Final = np.dtype(
    {"names": ["lo", "hi", "top"], "formats": ["<u2", "<u4", "<u2"], "offsets": [0, 2, 6]}
)


@dataclass(frozen=True)
class Packed:
    """Sorted distinct hashes in 6 bytes each, exactly (a quotient of the top 16 bits).

    Each hash's low 48 bits are kept (``hi``: bits 16-47, ``lo``: bits 0-15, in order);
    its top 16 bits are where it sits: ``counts[p]`` hashes have the prefix ``p``. The
    index is 64 KiB (more if a prefix holds over 255 hashes), so a set smaller than
    ``PACK_MIN`` stays a plain array (``plain``). Lookups rebuild the 64-bit values a
    range of prefixes at a time, or, when the queries are few, search each query inside
    its prefix's run.
    """

    plain: Hashes = field(default_factory=_empty)
    counts: npt.NDArray[np.unsignedinteger[Any]] | None = None
    hi: npt.NDArray[np.uint32] | None = None
    lo: npt.NDArray[np.uint16] | None = None

    @classmethod
    def of(cls, ordered: Hashes) -> Packed:
        """``ordered`` (sorted, distinct) held as compactly as its size allows."""
        if len(ordered) < PACK_MIN:
            return cls(ordered)
        split = np.ascontiguousarray(ordered, dtype="<u8").view(_SPLIT)
        counts = np.bincount(split["top"], minlength=_PREFIXES)
        peak = int(counts.max())
        small = np.uint8 if peak < 1 << 8 else np.uint16 if peak < 1 << 16 else np.uint32
        return cls(_empty(), counts.astype(small), split["hi"].copy(), split["lo"].copy())

    def __len__(self) -> int:
        """Number of hashes."""
        return len(self.plain) if self.hi is None else len(self.hi)

    def full(self) -> Hashes:
        """Every hash, sorted, as 64-bit values."""
        if self.counts is None or self.hi is None or self.lo is None:
            return self.plain
        out = np.empty(len(self.hi), dtype=_SPLIT)
        out["lo"] = self.lo
        out["hi"] = self.hi
        out["top"] = np.repeat(_PREFIX_VALUES, self.counts)
        return out.view("<u8").astype(np.uint64, copy=False)

    def mark(self, ordered: Hashes, hit: npt.NDArray[np.bool_]) -> None:
        """Set ``hit`` where the sorted distinct queries ``ordered`` are in the set."""
        if self.hi is None:
            _mark(self.plain, ordered, hit)
        elif len(ordered) * _PROBE_RATIO < len(self.hi):
            # A few queries: rebuilding the whole set would cost O(set).
            hit |= self._probe(ordered)
        else:
            self._mark_by_parts(ordered, hit)

    def _mark_by_parts(self, ordered: Hashes, hit: npt.NDArray[np.bool_]) -> None:
        """``mark`` against the set rebuilt a range of prefixes at a time.

        Each part (~50 k hashes, 400 KB) is rebuilt into one reused buffer that stays in
        the CPU's cache for the search that follows, and only the queries of its range
        are searched in it: cheaper than searching the whole rebuilt set.
        """
        assert self.counts is not None and self.hi is not None and self.lo is not None
        parts = 1 << max(0, min(6, (len(self.hi) // 50_000).bit_length() - 1))
        step = _PREFIXES // parts
        ends = np.zeros(parts + 1, dtype=np.int64)
        np.cumsum(self.counts.reshape(parts, step).sum(axis=1, dtype=np.int64), out=ends[1:])
        firsts = (np.arange(1, parts, dtype=np.uint64) * np.uint64(step)) << np.uint64(48)
        cuts = [0, *np.searchsorted(ordered, firsts).tolist(), len(ordered)]
        scratch = np.empty(int(np.diff(ends).max()), dtype=_SPLIT)
        for c in range(parts):
            a, b, qa, qb = int(ends[c]), int(ends[c + 1]), cuts[c], cuts[c + 1]
            if a == b or qa == qb:
                continue
            part = scratch[: b - a]
            part["lo"] = self.lo[a:b]
            part["hi"] = self.hi[a:b]
            prefixes = slice(c * step, (c + 1) * step)
            part["top"] = np.repeat(_PREFIX_VALUES[prefixes], self.counts[prefixes])
            _mark(part.view("<u8").astype(np.uint64, copy=False), ordered[qa:qb], hit[qa:qb])

    def _probe(self, ordered: Hashes) -> npt.NDArray[np.bool_]:
        """Membership of each query, by binary searches inside its prefix's run only.

        The searches run side by side (one numpy step per halving); a run holds ~n/65536
        hashes, so a few halvings find the first remainder not below the query's.
        """
        assert self.counts is not None and self.hi is not None and self.lo is not None
        last = len(self.hi) - 1
        top = (ordered >> np.uint64(48)).astype(np.intp)
        end = np.cumsum(self.counts, dtype=np.int64)[top]
        lo, hi = end - self.counts[top], end.copy()
        q_hi, q_lo = (ordered >> np.uint64(16)).astype(np.uint32), ordered.astype(np.uint16)
        while True:
            active = lo < hi
            if not active.any():
                break
            mid = np.minimum((lo + hi) >> 1, last)
            less = (self.hi[mid] < q_hi) & active
            lo = np.where(less, mid + 1, lo)
            hi = np.where(less | ~active, hi, mid)
        # Hashes with the query's 32 middle bits (rarely more than one) in turn.
        found = np.zeros(len(ordered), dtype=np.bool_)
        while True:
            at = np.minimum(lo, last)
            same = (lo < end) & (self.hi[at] == q_hi)
            found |= same & (self.lo[at] == q_lo)
            same &= ~found
            if not same.any():
                return found
            lo = np.where(same, lo + 1, end)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        parts = (self.plain, self.counts, self.hi, self.lo)
        return sum(int(a.nbytes) for a in parts if a is not None)


#: Binary searches of the smaller side while small x log2(large) < this x large.
_MERGE_RATIO: Final = 6


def _mark(sorted_array: Hashes, ordered: Hashes, hit: npt.NDArray[np.bool_]) -> None:
    """Set ``hit`` where the sorted distinct queries ``ordered`` are in ``sorted_array``.

    Sizes alike: one merge (a stable sort of two sorted runs, linear) and the values met
    twice. Sizes apart: binary searches of the smaller side in the larger, which cost
    O(small x log large) instead of O(both).
    """
    m, n = len(sorted_array), len(ordered)
    if m == 0 or n == 0:
        return
    small, large = min(m, n), max(m, n)
    if small * large.bit_length() < _MERGE_RATIO * large:
        if m < n:
            pos = np.searchsorted(ordered, sorted_array)
            inside = pos < n
            pos = pos[inside]
            hit[pos[ordered[pos] == sorted_array[inside]]] = True
        else:
            pos = np.searchsorted(sorted_array, ordered)
            pos[pos == m] = 0
            hit |= sorted_array[pos] == ordered
        return
    merged = np.sort(np.concatenate([sorted_array, ordered]), kind="stable")
    both = merged[1:][merged[1:] == merged[:-1]]
    hit[np.searchsorted(ordered, both)] = True


def _argsort(hashes: Hashes) -> tuple[npt.NDArray[np.intp], Hashes]:
    """The order that sorts ``hashes``, and the sorted hashes.

    ``np.argsort`` of 64-bit values is several times slower than ``np.sort`` (vectorised),
    so the positions ride in the low bits of the values: one sort orders by the high bits
    and, among equal high bits, by position; a stable sort (a timsort, linear on an
    array this close to sorted) then puts those rare ties in order.
    """
    n = len(hashes)
    if n < 1 << 12:
        order = np.argsort(hashes)
        return order, hashes[order]
    mask = np.uint64((1 << n.bit_length()) - 1)
    keys = hashes & ~mask
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    keys &= mask
    order = keys.astype(np.intp)
    ordered = hashes[order]
    if (ordered[1:] < ordered[:-1]).any():
        fix = np.argsort(ordered, kind="stable")
        order, ordered = order[fix], ordered[fix]
    return order, ordered


def _lookup(sets: list[tuple[Packed, Hashes]], hashes: Hashes) -> npt.NDArray[np.bool_]:
    """Membership of each of ``hashes`` in any of ``sets`` (each a main and a recent part)."""
    n = len(hashes)
    if n == 0 or not any(len(main) or len(recent) for main, recent in sets):
        return np.zeros(n, dtype=np.bool_)
    order, ordered = _argsort(hashes.astype(np.uint64, copy=False))
    first = np.empty(n, dtype=np.bool_)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    distinct = ordered[first]
    hit = np.zeros(len(distinct), dtype=np.bool_)
    for main, recent in sets:
        main.mark(distinct, hit)
        _mark(recent, distinct, hit)
    found = np.empty(n, dtype=np.bool_)
    found[order] = hit[np.cumsum(first) - 1]
    return found


@dataclass(frozen=True)
class SeenIds:
    """An immutable set of event-id hashes."""

    main: Packed = field(default_factory=Packed)
    recent: Hashes = field(default_factory=_empty)

    @classmethod
    def from_array(cls, hashes: Hashes) -> SeenIds:
        """A set holding ``hashes`` (any order, duplicates allowed)."""
        return cls(Packed.of(_sorted_unique(hashes)))

    def __len__(self) -> int:
        """Number of distinct hashes."""
        return len(self.main) + len(self.recent)

    def contains(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        """Membership of each hash."""
        return _lookup([(self.main, self.recent)], hashes)

    def add(self, hashes: Hashes) -> SeenIds:
        """A new set with ``hashes`` added."""
        unique = _sorted_unique(hashes)
        if not len(unique):
            return self
        hit = np.zeros(len(unique), dtype=np.bool_)
        self.main.mark(unique, hit)
        _mark(self.recent, unique, hit)
        recent = _merge(self.recent, unique[~hit])
        if len(recent) > max(_FOLD_MIN, len(self.main) // _FOLD_RATIO):
            return SeenIds(Packed.of(_merge(self.main.full(), recent)), _empty())
        return SeenIds(self.main, recent)

    def array(self) -> Hashes:
        """Every hash, sorted."""
        return _merge(self.main.full(), self.recent)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return int(self.main.nbytes + self.recent.nbytes)


Days = npt.NDArray[np.int64]
#: Width of one bucket of event time (microseconds): a day.
DAY_US: Final = 86_400 * 1_000_000


def _by_day(hashes: Hashes, days: Days) -> list[tuple[int, Hashes]]:
    """``hashes`` grouped by their day, in one stable sort (one mask a day is O(days x n))."""
    first, last = int(days.min()), int(days.max())
    if first == last:
        return [(first, hashes)]
    # Days within 2^15 of each other sort as 16-bit keys: numpy's stable sort is a radix.
    key = days - first if last - first >= 1 << 15 else (days - first).astype(np.int16)
    order = np.argsort(key, kind="stable")
    ordered = days[order]
    cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    starts = [0, *cuts.tolist()]
    parts = np.split(hashes[order], cuts)
    return [(int(ordered[i]), part) for i, part in zip(starts, parts, strict=True)]


@dataclass(frozen=True)
class SeenWindow:
    """Event-id hashes in buckets by the event's day (event time), so old days can be dropped.

    A duplicate carries its event's ``ts``, so its first copy sits in a bucket that is
    kept as long as that ``ts`` is inside the window; events older than the window are
    refused before they are looked up (``too_old``). Memory: 6 bytes per event id of the
    window (8 in a day of fewer than ``PACK_MIN`` ids; plus 64 KiB a day), whatever the
    history before it.
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
        return _lookup([(s.main, s.recent) for _, s in self.buckets], hashes)

    def add(self, hashes: Hashes, days: Days) -> SeenWindow:
        """A new window with ``hashes`` added to the buckets of their ``days``."""
        if len(hashes) == 0:
            return self
        by_day = dict(self.buckets)
        for day, part in _by_day(hashes, days):
            by_day[day] = by_day.get(day, SeenIds()).add(part)
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
