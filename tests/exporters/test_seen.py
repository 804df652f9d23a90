"""The seen-id window: buckets by event day, dropped whole once the window passes them."""

from __future__ import annotations

import numpy as np
import polars as pl

from exporters.seen import DAY_US, SeenWindow, hash_ids


def test_window_holds_hashes_by_day_and_prunes_whole_days() -> None:
    hashes = hash_ids(pl.Series(["a", "b", "c", "d"]))
    days = np.array([10, 10, 11, 12], dtype=np.int64)
    window = SeenWindow.from_arrays(hashes, days)
    assert window.contains(hashes).all() and len(window) == 4
    assert not window.contains(hash_ids(pl.Series(["e"]))).any()
    # A horizon inside day 11 keeps day 11 (some of its events may still come) and 12.
    pruned = window.prune(11 * DAY_US + 5)
    assert pruned.contains(hashes).tolist() == [False, False, True, True]
    assert window.prune(None) is window
    again = SeenWindow.from_arrays(*pruned.arrays())
    assert again.contains(hashes).tolist() == [False, False, True, True]
    assert again.arrays()[1].tolist() == [11, 12]
    # Adding to an existing day keeps one bucket per day.
    more = again.add(hash_ids(pl.Series(["f"])), np.array([12], dtype=np.int64))
    assert [d for d, _ in more.buckets] == [11, 12] and len(more) == 3


def _window_and_set(rng: np.random.Generator, sizes: list[int]) -> tuple[SeenWindow, set[int]]:
    """A window of random hashes, one bucket per size, added in two batches (main + recent)."""
    edges = np.array([0, 2**64 - 1], dtype=np.uint64)
    window, reference = SeenWindow(), set()
    for day, size in enumerate(sizes):
        hashes = rng.integers(0, 2**64, size, dtype=np.uint64, endpoint=False)
        if size >= 2 and day % 2 == 0:
            hashes[:2] = edges
        cut = size * 9 // 10
        for part in (hashes[:cut], hashes[cut:]):
            window = window.add(part, np.full(len(part), day, dtype=np.int64))
        reference |= set(hashes.tolist())
    return window, reference


def test_window_lookup_equals_a_python_set() -> None:
    rng = np.random.default_rng(7)
    for sizes in ([], [0], [1], [5], [3, 0, 200_000], [70_000] * 3 + [1, 2], [1000] * 15):
        window, reference = _window_and_set(rng, [s for s in sizes if s])
        held = np.fromiter(reference, dtype=np.uint64, count=len(reference))
        for n in (0, 1, 7, 5000, 300_000):
            fresh = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
            pick = held[rng.integers(0, len(held), n // 3)] if len(held) else fresh[:0]
            queries = np.concatenate(
                [fresh, pick, pick[:5], np.array([0, 2**64 - 1, 0], dtype=np.uint64)]
            )
            rng.shuffle(queries)
            expected = [int(q) in reference for q in queries.tolist()]
            assert window.contains(queries).tolist() == expected
    # The recent/main split is exercised: some buckets hold both arrays.
    big, _ = _window_and_set(rng, [200_000])
    assert all(len(s.main) and len(s.recent) for _, s in big.buckets)


def test_hashes_do_not_depend_on_the_batch() -> None:
    ids = ["", "a", "ab", "abcdefgh", "abcdefghi", "x" * 40, None, "E0000001-03", "é€😀"]
    alone = [int(hash_ids(pl.Series([i], dtype=pl.String))[0]) for i in ids]
    assert hash_ids(pl.Series(ids, dtype=pl.String)).tolist() == alone
    same_length = [f"E{i:09d}-{i % 7:02d}" for i in range(500)]
    batch = hash_ids(pl.Series(same_length)).tolist()
    assert batch == [int(hash_ids(pl.Series([i]))[0]) for i in same_length]
    assert len(set(batch)) == 500 and alone[0] == alone[6]
