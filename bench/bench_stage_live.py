"""The stage histograms' CPU in a live stream, today's exporter beside this one in one run.

Usage::

    .venv/bin/python bench/bench_stage_live.py /tmp/sim1m --old-ref bf26376 --catch-up 4 --set-rows 25000

For each tree (``old``: a git revision exported to a temporary directory, ``new``: this
working tree), a fresh child process (``POLARS_MAX_THREADS=1``, so CPU time is the work)
catches up on the first ``--catch-up`` day files of a simulated folder (one file per day,
``kpi simulate``; not timed), then reads the next day's events in time order as files of
``--set-rows`` rows, one set each (a live stream's short sets), and reports the CPU time
per event of the stage histograms (``exporters.books.apply_stages``, its ``observe`` calls
included) and of the whole ``Books.apply``, with the exporter's default late grace (the
stage horizon of this tree). Rounds alternate old, new.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from benchkit import export_tree

ROOT: Final = Path(__file__).resolve().parent.parent

_CHILD: Final = r"""
import sys, time, json, shutil
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import polars as pl
from exporters import books
from exporters.ingest import IngestConfig, Ingestor
from exporters import catalog as cat

src, work, days, per = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
data = work / "data"
(data / "events").mkdir(parents=True)
for name in ("facilities.csv", "service-standards.yaml"):
    if (src / name).exists():
        shutil.copy(src / name, data / name)
files = sorted((src / "events").glob("*.parquet"))
for f in files[:days]:
    shutil.copy(f, data / "events" / f.name)
ing = Ingestor(IngestConfig(data, work / "state"))
def drain():
    while ing.step().pending:
        pass
    ing.step()
drain()
spent = {"stages": 0.0, "apply": 0.0}
def timed(fn, key):
    def wrapper(*a, **k):
        c = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            spent[key] += time.process_time() - c
    return wrapper
books.apply_stages = timed(books.apply_stages, "stages")
books.Books.apply = timed(books.Books.apply, "apply")
live = pl.read_parquet(files[days]).sort("ts")
c0 = time.process_time()
for n, start in enumerate(range(0, live.height, per)):
    live.slice(start, per).write_parquet(data / "events" / f"zz-live-{n:05d}.parquet")
    drain()
cpu = time.process_time() - c0
late = dict(ing.counters.series(cat.EXPORTER_STAGE_LATE_SCANS)) if hasattr(cat, "EXPORTER_STAGE_LATE_SCANS") else {}
print(json.dumps({
    "events": live.height, "sets": n + 1, "items": ing.ledger.items.height,
    "stages_us": spent["stages"] / live.height * 1e6,
    "apply_us": spent["apply"] / live.height * 1e6,
    "step_us": cpu / live.height * 1e6,
    "late_scans": sum(late.values()),
    "stage_rows": ing.ledger.stages.height,
    "revisions": sum(v for _, v in ing.counters.series(cat.STAGE_REVISIONS)),
    "observations": sum(v.count for s in cat.STAGE_HISTOGRAMS for _, v in ing.counters.histogram_series(s)),
}))
"""


def main() -> None:
    """Run both trees, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--old-ref", default="main")
    parser.add_argument("--catch-up", type=int, default=4)
    parser.add_argument("--set-rows", type=int, default=25_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-stage-live-"))
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    rows = []
    try:
        trees = {"old": export_tree(args.old_ref, root / "old"), "new": ROOT}
        for r in range(args.rounds):
            for name, tree in trees.items():
                work = root / f"{name}-{r}"
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, str(tree), str(args.folder), str(work),
                     str(args.catch_up), str(args.set_rows)],
                    check=True, capture_output=True, text=True, env=env,
                )  # fmt: skip
                res = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append((r, name, res))
                print(name, r, res, flush=True)
                shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| round | tree | stage histograms µs/event | Books.apply µs/event | whole step µs/event "
          "| observations | revisions | late scans | recent stage rows |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r, name, res in rows:
        print(
            f"| {r} | {name} | {res['stages_us']:.2f} | {res['apply_us']:.2f} | {res['step_us']:.2f} "
            f"| {res['observations']:,} | {res['revisions']} | {res['late_scans']} "
            f"| {res['stage_rows']:,} |"
        )


if __name__ == "__main__":
    main()
