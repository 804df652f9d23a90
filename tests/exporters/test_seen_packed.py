"""The packed seen sets (6 bytes a hash) against plain Python sets of ints: exact on all 64 bits.

And the id hash against a plain Python rendering of its algorithm.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from exporters.seen import DAY_US, PACK_MIN, Packed, SeenIds, SeenWindow, hash_ids

MAX = 2**64 - 1


def _hashes(rng: np.random.Generator, n: int, crowded: int = 0) -> np.ndarray:
    """``n`` random hashes, ``crowded`` of them under one 16-bit prefix, with 0 and 2^64-1."""
    out = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    if crowded:
        low = rng.integers(0, 2**48, crowded, dtype=np.uint64)
        out[:crowded] = np.uint64(0xBEEF << 48) | low
    if n >= 2:
        out[-2:] = np.array([0, MAX], dtype=np.uint64)
    return out


def _queries(rng: np.random.Generator, held: np.ndarray, n: int) -> np.ndarray:
    """Fresh hashes, held ones, their neighbours (one bit off: same prefix) and the edges."""
    fresh = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    pick = held[rng.integers(0, len(held), n // 2)] if len(held) else fresh[:0]
    near = pick ^ np.uint64(1)
    edges = np.array([0, 1, MAX, MAX - 1, 1 << 48, (1 << 48) - 1], dtype=np.uint64)
    out = np.concatenate([fresh, pick, near, pick[:3], edges])
    rng.shuffle(out)
    return out


def test_packing_keeps_every_bit_and_costs_six_bytes_a_hash() -> None:
    rng = np.random.default_rng(1)
    cases = [(0, 0), (5, 0), (PACK_MIN - 1, 0), (PACK_MIN, 0), (200_000, 300), (150_000, 70_000)]
    for n, crowded in cases:
        ordered = np.unique(_hashes(rng, n, crowded))
        packed = Packed.of(ordered)
        assert np.array_equal(packed.full(), ordered) and len(packed) == len(ordered)
        if len(ordered) >= PACK_MIN:
            assert packed.hi is not None and packed.counts is not None
            # 6 bytes a hash plus the prefix index (wider when one prefix is crowded).
            index = (1 << 16) * (1 if crowded < 256 else 2 if crowded < 65536 else 4)
            assert packed.nbytes == 6 * len(ordered) + index
        else:
            assert packed.nbytes == 8 * len(ordered)
        # Few queries are searched inside their prefix's run, many against the rebuilt set.
        held = set(ordered.tolist())
        for n_queries in (3, 50, 100_000):
            queries = np.unique(_queries(rng, ordered, n_queries))
            hit = np.zeros(len(queries), dtype=np.bool_)
            packed.mark(queries, hit)
            assert hit.tolist() == [q in held for q in queries.tolist()]


def test_seen_ids_equal_a_python_set_through_adds_and_folds() -> None:
    rng = np.random.default_rng(2)
    seen, reference = SeenIds(), set()
    # Batches small and large: recent parts, folds into a packed main, a crowded prefix.
    for size, crowded in [(10, 0), (70_000, 0), (3, 0), (20_000, 500), (150_000, 0), (40_000, 0)]:
        batch = _hashes(rng, size, crowded)
        batch = np.concatenate([batch, batch[: size // 4]])  # repeats inside a batch
        seen = seen.add(batch)
        reference |= set(batch.tolist())
        assert len(seen) == len(reference)
        held = seen.array()
        assert held.tolist() == sorted(reference)
        for n in (1, 40, 5_000, 200_000):
            queries = _queries(rng, held, n)
            assert seen.contains(queries).tolist() == [
                int(q) in reference for q in queries.tolist()
            ]
    assert seen.main.hi is not None and len(seen.recent)  # both parts were exercised
    again = SeenIds.from_array(np.concatenate([seen.array(), seen.array()[:10]]))
    assert (
        again.array().tolist() == sorted(reference)
        and again.nbytes <= 6 * len(reference) + 2 * 65536
    )


def test_window_equals_python_sets_by_day_through_prunes() -> None:
    rng = np.random.default_rng(3)
    window, by_day = SeenWindow(), dict[int, set[int]]()
    for step in range(6):
        size = [240_000, 5, 300_000, 0, 150_000, 1_000][step]
        hashes = _hashes(rng, size, crowded=400 if step == 2 else 0)
        days = rng.integers(step, step + 3, size).astype(np.int64)
        window = window.add(hashes, days)
        # Each day's bucket is a set of its own (the intake adds only hashes not held).
        for h, d in zip(hashes.tolist(), days.tolist(), strict=True):
            by_day.setdefault(d, set()).add(h)
        if step == 4:  # drop the days wholly before day 2
            window = window.prune(2 * DAY_US + 1)
            by_day = {d: held for d, held in by_day.items() if d >= 2}
        every = set().union(*by_day.values()) if by_day else set()
        held = np.fromiter(every, dtype=np.uint64, count=len(every))
        for n in (2, 300, 100_000):
            queries = _queries(rng, held, n)
            assert window.contains(queries).tolist() == [int(q) in every for q in queries.tolist()]
        hashes_out, days_out = window.arrays()
        pairs = sorted(zip(days_out.tolist(), hashes_out.tolist(), strict=True))
        assert pairs == sorted((d, h) for d, held in by_day.items() for h in held)
    assert any(s.main.hi is not None for _, s in window.buckets)


def _reference_hash(text: str) -> int:
    """``hash_ids`` of one id in plain Python integers (the algorithm as documented)."""
    m, mask = 0x9E3779B97F4A7C15, 2**64 - 1

    def fmix(h: int) -> int:
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & mask
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & mask
        return h ^ (h >> 33)

    data = text.encode()
    h = fmix(len(data) ^ m)
    for k in range(0, len(data), 8):
        x = ((h ^ int.from_bytes(data[k : k + 8], "little")) * m) & mask
        h = x ^ (x >> 29)
    return fmix(h)


def test_hashes_equal_the_documented_algorithm_and_their_persisted_values() -> None:
    rng = np.random.default_rng(4)
    mixed = [
        "",
        "a",
        "abcdefgh",
        "abcdefghi",
        "é€😀",
        *(f"EV{i}" for i in rng.integers(0, 10**12, 300)),
    ]
    mixed += ["y" * int(k) for k in rng.integers(0, 70, 200)]
    same = [f"E{i:09d}-{i % 7:02d}" for i in rng.integers(0, 10**9, 300)]
    for ids in (mixed, same, ["abcdefgh"] * 3, ["abcdefghijklmnop"] * 2):
        assert hash_ids(pl.Series(ids)).tolist() == [_reference_hash(i) for i in ids]
    # Checkpoints hold these values: they must never change.
    pinned = {"": 7175312947680778460, "E0000001-03": 11058144522047390222}
    pinned |= {"BM000000001CN-00": 11109322393787206402, "EV123456789012-3": 11151182511608799533}
    assert hash_ids(pl.Series(list(pinned))).tolist() == list(pinned.values())


def test_days_far_apart_and_before_1970_keep_their_own_buckets() -> None:
    hashes = np.array([5, 6, 7, 8, 5], dtype=np.uint64)
    days = np.array([40_000, -3, 40_000, 0, 0], dtype=np.int64)
    window = SeenWindow().add(hashes, days)
    assert [(d, s.array().tolist()) for d, s in window.buckets] == [
        (-3, [6]),
        (0, [5, 8]),
        (40_000, [5, 7]),
    ]


def test_hashes_alike_but_in_their_low_16_bits_are_told_apart() -> None:
    rng = np.random.default_rng(6)
    # 7 hashes share each top-48-bit value: a query must find its own among them.
    heads = rng.integers(0, 2**48, 20_000, dtype=np.uint64) << np.uint64(16)
    tails = np.array([0, 3, 4, 900, 901, 40_000, 65_535], dtype=np.uint64)
    ordered = np.unique((heads[:, None] | tails[None, :]).ravel())
    packed, held = Packed.of(ordered), set(ordered.tolist())
    assert packed.hi is not None
    for n_queries in (40, 3_000, 90_000):
        queries = heads[rng.integers(0, len(heads), n_queries)] | rng.integers(
            0, 8, n_queries, dtype=np.uint64
        )
        queries = np.unique(
            np.concatenate([queries, ordered[rng.integers(0, len(ordered), n_queries)]])
        )
        hit = np.zeros(len(queries), dtype=np.bool_)
        packed.mark(queries, hit)
        assert hit.tolist() == [q in held for q in queries.tolist()]
