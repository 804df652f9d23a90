"""The dedup window's lookups and the id hashes alone: another commit's ``exporters/seen.py`` beside this tree's.

Usage::

    POLARS_MAX_THREADS=1 .venv/bin/python bench/bench_seen.py --old-ref 8fd0e70

Both modules get the same arrays: a window of ``--window`` random hashes in ``--buckets``
day buckets, added in 8 batches (so buckets hold a main and a recent array), and
``--queries`` lookups of which 10 % are present; then ``hash_ids`` on ids of one length
and of mixed lengths. Rounds alternate old and new; medians are printed, and the answers
are checked equal.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.benchkit import export_tree  # noqa: E402
from exporters import seen as seen_new  # noqa: E402


def load(path: Path) -> ModuleType:
    """The module at ``path``, under a name of its own."""
    spec = importlib.util.spec_from_file_location("seen_old", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["seen_old"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    """Print old vs new medians per step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old-ref", default="main")
    parser.add_argument("--window", type=int, default=1_200_000)
    parser.add_argument("--buckets", type=int, default=15)
    parser.add_argument("--queries", type=int, default=156_250)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = load(export_tree(args.old_ref, Path(tmp)) / "exporters" / "seen.py")
    rng = np.random.default_rng(0)
    n, q = args.window, args.queries
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    days = rng.integers(0, args.buckets, n).astype(np.int64)

    def build(module: Any) -> Any:
        window = module.SeenWindow()
        for part in np.array_split(np.arange(n), 8):
            window = window.add(hashes[part], days[part])
        return window

    w_old, w_new = build(old), build(seen_new)
    queries = np.concatenate(
        [hashes[rng.integers(0, n, q // 10)], rng.integers(0, 2**64, q - q // 10, dtype=np.uint64)]
    )
    rng.shuffle(queries)
    same = pl.Series([f"EV{i:012d}-{i % 9}" for i in rng.integers(0, 10**12, q)])
    mixed = pl.Series([f"EV{i}" for i in rng.integers(0, 10**12, q)])
    steps: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "SeenWindow.contains": (lambda: w_old.contains(queries), lambda: w_new.contains(queries)),
        "hash_ids, one length": (lambda: old.hash_ids(same), lambda: seen_new.hash_ids(same)),
        "hash_ids, mixed lengths": (lambda: old.hash_ids(mixed), lambda: seen_new.hash_ids(mixed)),
    }
    print("| step | old ms | new ms | old/new |\n| --- | ---: | ---: | ---: |")
    for name, (f_old, f_new) in steps.items():
        assert np.array_equal(f_old(), f_new()), name
        spent: tuple[list[float], list[float]] = ([], [])
        for _ in range(args.rounds):
            for f, out in ((f_old, spent[0]), (f_new, spent[1])):
                t = time.perf_counter()
                f()
                out.append(time.perf_counter() - t)
        a, b = float(np.median(spent[0])), float(np.median(spent[1]))
        print(f"| {name} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f} |")
    print(f"window bytes: old {w_old.nbytes:,} new {w_new.nbytes:,}")


if __name__ == "__main__":
    main()
