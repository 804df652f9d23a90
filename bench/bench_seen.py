"""The dedup window's lookups, adds and bytes, and the id hashes: another commit's ``exporters/seen.py`` beside this tree's.

Usage::

    POLARS_MAX_THREADS=1 .venv/bin/python bench/bench_seen.py --old-ref 45b34c3

Each case ``NAME:WINDOW:BUCKETS:QUERIES`` gives both modules the same arrays: a window
of WINDOW random hashes in BUCKETS day buckets, added in 8 batches (so buckets hold a
main and a recent part), and QUERIES lookups of which 10 % are present; then adding
QUERIES new hashes over the last 3 days (a set's add), and a set's own growing
``SeenIds`` (8 adds of QUERIES/8, each after a lookup of the same hashes, as the intake's
``_earlier``). Then ``hash_ids`` on ids of one length and of mixed lengths. Bytes per
id: each case's window, and the slope between ``--slope`` windows (6 buckets each, as
``bench_state.py``'s 1 M and 10 M items). Rounds alternate old and new; medians of the
process's CPU time are printed (steadier than wall time on a shared machine; numpy runs
these on one thread), and the answers are checked equal.

``--catch-up FOLDER``: instead, each tree's ``Ingestor`` reads the folder's Parquet from
scratch in batches of ``--catch-up-rows`` (a child process per tree, ``POLARS_MAX_THREADS``
as given) and prints the process's CPU time per event and the CPU time (thread) of
``hash_ids``, ``Intake._earlier`` (a set's own ``SeenIds``), ``SeenWindow.contains`` and
``SeenWindow.add`` in it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Final

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


_CATCH_UP: Final = r"""
import functools, json, shutil, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from exporters.ingest import IngestConfig, Ingestor
import exporters.intake as I, exporters.seen as S
spent = {}
def wrap(owner, name, label):
    f = getattr(owner, name)
    @functools.wraps(f)
    def g(*a, **k):
        t = time.thread_time()
        try:
            return f(*a, **k)
        finally:
            spent[label] = spent.get(label, 0.0) + time.thread_time() - t
    setattr(owner, name, g)
wrap(I, "hash_ids", "hash_ids (intake)")
wrap(I.Intake, "_earlier", "Intake._earlier")
wrap(S.SeenWindow, "contains", "SeenWindow.contains")
wrap(S.SeenWindow, "add", "SeenWindow.add")
work = Path(tempfile.mkdtemp(prefix="bench-seen-"))
try:
    shutil.copytree(sys.argv[2], work / "data")
    cfg = IngestConfig(work / "data", work / "state", max_batch_rows=int(sys.argv[3]), max_batch_bytes=1 << 40)
    ing, n, c = Ingestor(cfg), 0, time.process_time()
    while True:
        r = ing.step()
        n += r.rows
        if not r.pending and r.rows == 0:
            break
    print(json.dumps({"events": n, "cpu_s": time.process_time() - c, **spent}))
finally:
    shutil.rmtree(work, ignore_errors=True)
"""


def catch_up(old_tree: Path, folder: str, rows: int) -> None:
    """CPU per event of each tree's Parquet catch-up, and of its seen steps."""
    got = {}
    for tag, tree in (("old", old_tree), ("new", ROOT)):
        out = subprocess.run(
            [sys.executable, "-c", _CATCH_UP, str(tree), folder, str(rows)],
            check=True,
            capture_output=True,
            text=True,
            cwd=tree,
        ).stdout
        got[tag] = json.loads(out.strip().splitlines()[-1])
    n = got["new"]["events"]
    print(f"| Parquet catch-up, {n:,} events, CPU µs per event | old | new | old/new |")
    print("| --- | ---: | ---: | ---: |")
    for key in got["new"]:
        if key == "events":
            continue
        a, b = got["old"].get(key, 0.0) / n * 1e6, got["new"][key] / n * 1e6
        print(
            f"| {'whole process' if key == 'cpu_s' else key} | {a:.3f} | {b:.3f} | {a / b if b else 0:.2f} |"
        )


def build(module: Any, hashes: np.ndarray, days: np.ndarray) -> Any:
    """A window of ``hashes`` added in 8 batches."""
    window = module.SeenWindow()
    for part in np.array_split(np.arange(len(hashes)), 8):
        window = window.add(hashes[part], days[part])
    return window


def timed(name: str, f_old: Callable[[], Any], f_new: Callable[[], Any], rounds: int) -> None:
    """One table row: medians of alternating rounds, answers checked equal."""
    a_, b_ = f_old(), f_new()
    if isinstance(a_, np.ndarray):
        assert np.array_equal(a_, b_), name
    spent: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for f, out in ((f_old, spent[0]), (f_new, spent[1])):
            t = time.process_time()
            f()
            out.append(time.process_time() - t)
    a, b = float(np.median(spent[0])), float(np.median(spent[1]))
    print(f"| {name} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f} |", flush=True)


def case(old: ModuleType, spec: str, rounds: int, rng: np.random.Generator) -> None:
    """The rows of one window size and query size."""
    name, *sizes = spec.split(":")
    n, buckets, q = map(int, sizes)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    days = rng.integers(0, buckets, n).astype(np.int64)
    w_old, w_new = build(old, hashes, days), build(seen_new, hashes, days)
    queries = np.concatenate(
        [hashes[rng.integers(0, n, q // 10)], rng.integers(0, 2**64, q - q // 10, dtype=np.uint64)]
    )
    rng.shuffle(queries)
    fresh = rng.integers(0, 2**64, q, dtype=np.uint64)
    fresh_days = rng.integers(buckets - 3, buckets, q).astype(np.int64)
    label = f"{name} (window {n:,}, {buckets} days, {q:,} queries)"
    timed(
        f"{label}: contains",
        lambda: w_old.contains(queries),
        lambda: w_new.contains(queries),
        rounds,
    )
    timed(
        f"{label}: add",
        lambda: w_old.add(fresh, fresh_days),
        lambda: w_new.add(fresh, fresh_days),
        rounds,
    )

    def earlier(module: Any) -> Callable[[], Any]:
        def run() -> Any:
            ids, found = module.SeenIds(), []
            for part in np.array_split(queries, 8):
                found.append(ids.contains(part))
                ids = ids.add(part)
            return np.concatenate(found)

        return run

    timed(f"{label}: a set's own SeenIds", earlier(old), earlier(seen_new), rounds)
    for tag, w in (("old", w_old), ("new", w_new)):
        print(f"|   {tag} window bytes/id | {w.nbytes / len(w):.2f} | | |")


def slope(old: ModuleType, sizes: list[int], rng: np.random.Generator) -> None:
    """Bytes per id between two window sizes (6 day buckets, one add as a restore)."""
    got: dict[str, list[tuple[int, int]]] = {"old": [], "new": []}
    for n in sizes:
        hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
        days = rng.integers(0, 6, n).astype(np.int64)
        for tag, module in (("old", old), ("new", seen_new)):
            w = module.SeenWindow.from_arrays(hashes, days)
            got[tag].append((len(w), w.nbytes))
            del w
    for tag, ((n0, b0), (n1, b1)) in got.items():
        print(f"| {tag} bytes/id, slope {n0:,} -> {n1:,} ids | {(b1 - b0) / (n1 - n0):.3f} | | |")


def main() -> None:
    """Print old vs new medians per step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old-ref", default="main")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["kafka:1200000:15:156250", "catch-up:6000000:15:2000000"],
        help="NAME:WINDOW:BUCKETS:QUERIES",
    )
    parser.add_argument("--slope", type=int, nargs=2, default=[2_330_000, 23_300_000])
    parser.add_argument("--hash-ids", type=int, default=156_250)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--catch-up", metavar="FOLDER", help="time a Parquet catch-up instead")
    parser.add_argument("--catch-up-rows", type=int, default=2_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = export_tree(args.old_ref, Path(tmp))
        if args.catch_up:
            catch_up(tree, args.catch_up, args.catch_up_rows)
            return
        old = load(tree / "exporters" / "seen.py")
    rng = np.random.default_rng(0)
    print("| step | old CPU ms | new CPU ms | old/new |\n| --- | ---: | ---: | ---: |")
    for spec in args.cases:
        case(old, spec, args.rounds, rng)
    q = args.hash_ids
    same = pl.Series([f"EV{i:012d}-{i % 9}" for i in rng.integers(0, 10**12, q)])
    mixed = pl.Series([f"EV{i}" for i in rng.integers(0, 10**12, q)])
    timed(
        f"hash_ids, {q:,} of one length",
        lambda: old.hash_ids(same),
        lambda: seen_new.hash_ids(same),
        args.rounds,
    )
    timed(
        f"hash_ids, {q:,} of mixed lengths",
        lambda: old.hash_ids(mixed),
        lambda: seen_new.hash_ids(mixed),
        args.rounds,
    )
    slope(old, args.slope, rng)


if __name__ == "__main__":
    main()
