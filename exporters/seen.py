"""The set of event ids already counted, as sorted 64-bit hashes (8 bytes per event).

Hashes are BLAKE2b-64 of the UTF-8 id: stable across processes, machines and
library versions (polars' own ``hash`` is not), so a checkpoint stays valid after
an upgrade. Two distinct ids colliding would make the second one look like a
duplicate; with n ids the chance is about n^2 / 2^65 (3e-6 at 10 million ids).

The set is two sorted arrays: a large ``main`` and a small ``recent`` one that new
hashes are merged into; ``recent`` is folded into ``main`` when it grows past a
fraction of it, so adding a batch costs O(batch + recent) amortised and lookups are
binary searches. Only ``np.sort``/``np.searchsorted`` are used on big arrays: they
release the GIL, so scrapes are not held up while a batch is merged. Instances are immutable: ``add`` returns a new set, so a checkpoint can
write one while ingest goes on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

Hashes = npt.NDArray[np.uint64]
_FOLD_RATIO: Final = 8
_FOLD_MIN: Final = 1 << 16


def hash_ids(ids: pl.Series) -> Hashes:
    """BLAKE2b-64 of each id (nulls hash as the empty string)."""
    out = np.empty(len(ids), dtype=np.uint64)
    for i, value in enumerate(ids.to_list()):
        digest = hashlib.blake2b((value or "").encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
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
