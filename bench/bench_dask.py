"""``kpi report --engine dask`` against the single-process report, side by side in one run.

Usage::

    # the 10 M-event scenario: simulate, compact (64 buckets), then single vs 1 and 2 workers
    .venv/bin/python bench/bench_dask.py --items 1200000 --json bench/out/dask-10M.json
    # an existing folder and its lake
    .venv/bin/python bench/bench_dask.py --data DIR --lake LAKE --runs single,dask-1,dask-2
    # a large lake written directly in bucketed form (N buckets, each a copy of one simulated
    # chunk with its own item and event ids), processed by 2 workers: peak RSS per worker
    .venv/bin/python bench/bench_dask.py --synth-lake /tmp/lake100m --buckets 120 \\
        --chunk-items 100000 --runs dask-2 --json bench/out/dask-100M.json
    # the same runs on another commit too (a git worktree), side by side: old:dask-2
    .venv/bin/python bench/bench_dask.py --lake LAKE --runs dask-2 --old-ref a70e8de

Every run is its own subprocess: ``single`` answers on the folder in one process;
``dask-K`` starts a local cluster of K worker processes (one thread each), then times
``kpi.cluster.report`` alone (the cluster's start is reported apart), and reads each
worker's peak RSS (``ru_maxrss``) through the cluster and the driver's own. The answers
of all runs are compared (integers exact, floats to 1e-9) before the figures are shown.
The question is the default report: every KPI of the catalog, ungrouped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import polars as pl

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT: Final = ROOT / "bench" / "out"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds of this process so far (user + system): usable under load, unlike wall."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_single(data: Path, answer: Path) -> dict[str, Any]:
    from kpi.kpis.query import KpiQuery, Snapshot
    from kpi.sources.folder import load_data_dir

    t0, c0 = time.perf_counter(), _cpu_s()
    frame = Snapshot.from_dataset(load_data_dir(data)).query(KpiQuery())
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
    frame.write_parquet(answer)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": _rss_mb()}


def run_dask(lake: Path, workers: int, answer: Path) -> dict[str, Any]:
    from kpi.cluster import connect, report
    from kpi.kpis.query import KpiQuery

    t0 = time.perf_counter()
    with connect(None, workers) as client:
        started = time.perf_counter() - t0
        cpu_before = client.run(_cpu_s)
        t1, c1 = time.perf_counter(), _cpu_s()
        frame = report(lake, KpiQuery(), client)
        seconds, driver_cpu = time.perf_counter() - t1, _cpu_s() - c1
        worker_rss = client.run(_rss_mb)
        cpu_after = client.run(_cpu_s)
    frame.write_parquet(answer)
    return {
        "seconds": seconds,
        "cluster_start_seconds": started,
        "driver_peak_rss_mb": _rss_mb(),
        "driver_cpu_seconds": driver_cpu,
        "worker_peak_rss_mb": sorted(worker_rss.values()),
        "worker_cpu_seconds": sorted(cpu_after[w] - cpu_before[w] for w in cpu_after),
    }


def _child(args: argparse.Namespace) -> None:
    answer = Path(args.answer)
    if args.child == "single":
        out = run_single(Path(args.data), answer)
    else:
        out = run_dask(Path(args.lake), int(args.child.split("-", 1)[1]), answer)
    print(json.dumps(out))


def _spawn(
    run: str, data: Path | None, lake: Path, answer: Path, tree: Path = ROOT
) -> dict[str, Any]:
    """One run in its own process, on the code of ``tree`` (this checkout, or an old one:
    PYTHONPATH puts it before the installed tree, for the workers the run starts too)."""
    cmd = [sys.executable, str(tree / "bench" / "bench_dask.py"), "--child", run,
           "--lake", str(lake), "--answer", str(answer)]  # fmt: skip
    if data is not None:
        cmd += ["--data", str(data)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _old_tree(ref: str) -> Path:
    """A detached git worktree of ``ref`` (made once, under /tmp)."""
    tree = Path("/tmp") / f"bench-dask-{ref}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
                       check=True, capture_output=True)  # fmt: skip
    return tree


def synth_lake(out: Path, buckets: int, chunk_items: int, seed: int = 1) -> int:
    """A lake of ``buckets`` buckets, each a copy of one simulated chunk with the bucket's
    own item and event ids (so every item lives in exactly one bucket); events written."""
    import kpi.simulate as sim
    from kpi.contract import SCHEMAS, Kind
    from kpi.lake import Manifest

    result = sim.generate(sim.SimConfig(items=chunk_items, days=30, seed=seed))
    events = result.events.cast(SCHEMAS[Kind.EVENTS])  # type: ignore[arg-type]
    dates = events.with_columns(pl.col("ts").dt.date().cast(pl.String).alias("_date"))
    groups = [(d, part.drop("_date")) for (d,), part in dates.group_by(["_date"])]
    width = max(2, len(str(buckets - 1)))
    manifest = Manifest(buckets=buckets)
    for b in range(buckets):
        suffix = f"-{b:0{width}d}"
        for date, part in groups:
            rel = f"events/bucket={b:0{width}d}/date={date}/part-synth.parquet"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            part.with_columns(
                pl.col("item_id") + suffix, pl.col("event_id") + suffix
            ).write_parquet(out / rel)
            manifest.parts.append(rel)
    result.facilities.write_csv(out / "facilities.csv")
    manifest.save(out)
    return events.height * buckets


def _same(answers: dict[str, Path]) -> None:
    from polars.testing import assert_frame_equal

    names = list(answers)
    first = pl.read_parquet(answers[names[0]])
    for name in names[1:]:
        assert_frame_equal(pl.read_parquet(answers[name]), first, rel_tol=1e-9, abs_tol=1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--items", type=int, help="simulate a folder of this many items first")
    ap.add_argument("--data", help="the data folder (single)")
    ap.add_argument("--lake", help="the lake (dask)")
    ap.add_argument("--buckets", type=int, default=64)
    ap.add_argument("--synth-lake", help="write a large lake in bucketed form here")
    ap.add_argument("--chunk-items", type=int, default=100_000)
    ap.add_argument("--runs", default="single,dask-1,dask-2")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--old-ref", help="also run each dask-K on this commit, as old:dask-K")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--answer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    figures: dict[str, Any] = {
        "loadavg_before": list(map(float, Path("/proc/loadavg").read_text().split()[:3]))
    }
    data = Path(args.data) if args.data else None
    if args.synth_lake:
        lake = Path(args.synth_lake)
        if not (lake / "_manifest.json").exists():
            t0 = time.perf_counter()
            figures["events"] = synth_lake(lake, args.buckets, args.chunk_items)
            figures["synth_seconds"] = time.perf_counter() - t0
    elif args.lake and not args.data and not args.items:
        lake = Path(args.lake)  # an existing lake alone (dask runs only)
    else:
        if args.items:
            data = OUT / f"dask-sim-{args.items}"
            if not data.exists():
                subprocess.run([str(Path(sys.executable).parent / "kpi"), "simulate", "--out",
                                str(data), "--items", str(args.items), "--seed", "1", "-q"],
                               check=True)  # fmt: skip
        assert data is not None, "--items, --data or --synth-lake"
        lake = Path(args.lake) if args.lake else data.with_name(data.name + "-lake")
        if not (lake / "_manifest.json").exists():
            from kpi.lake import compact

            t0 = time.perf_counter()
            rep = compact(data, lake, args.buckets)
            figures["compact_seconds"] = time.perf_counter() - t0
            figures["events"] = rep.new_events
    answers: dict[str, Path] = {}
    runs = [(run, ROOT) for run in args.runs.split(",")]
    if args.old_ref:
        old = _old_tree(args.old_ref)
        runs += [(f"old:{run}", old) for run, _ in runs if run.startswith("dask-")]
    for name, tree in runs:
        answers[name] = lake.parent / f".answer-{lake.name}-{name.replace(':', '-')}.parquet"
        figures[name] = _spawn(name.removeprefix("old:"), data, lake, answers[name], tree)
        print(name, json.dumps(figures[name]), flush=True)
    _same(answers)
    figures["identical_answers"] = True
    figures["loadavg_after"] = list(map(float, Path("/proc/loadavg").read_text().split()[:3]))
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
