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
