"""Reading and ingest: validating a data folder, and merging event batches into a state.

Usage::

    .venv/bin/python bench/bench_validate.py --events 10000000   # ~10 M events
    .venv/bin/python bench/bench_validate.py --small              # quick smoke run
    .venv/bin/python bench/bench_validate.py --data DIR --repeat 5

Measures (median of ``--repeat`` runs, each phase in its own subprocess so peak RSS
is per phase):

- ``load``: ``load_data_dir(dir).events.collect()`` -- read every events file,
  validate the typed columns, drop rejects, de-duplicate ``event_id``;
- ``validate``: ``validate_data_dir(dir)`` -- the per-file report with rejects,
  duplicate ids and S10 check digits (what ``kpi validate`` runs);
- ``merge``: events per second through ``kpi.lifecycle.merge_events`` into an
  existing state of about 1 M items, for batches of 1k, 10k and 100k events (the
  state is built from the events before a cut-off, batches replay the events after
  it in time order, as a live feed would).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import polars as pl

HERE: Final = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_report import count_events, make_dataset  # noqa: E402

BATCH_SIZES: Final = (1_000, 10_000, 100_000)
#: Batches measured per size (after one warm-up batch).
BATCHES_PER_SIZE: Final = 5
#: Items the merge state should hold (the brief: "an existing state of 1 M items").
STATE_ITEMS: Final = 1_000_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_load(data: Path) -> dict[str, Any]:
    """``load_data_dir`` + collect of the validated, de-duplicated events."""
    from kpi.sources.folder import load_data_dir

    t0 = time.perf_counter()
    events = load_data_dir(data).events.collect()
    return {"seconds": time.perf_counter() - t0, "rows": events.height, "peak_rss_mb": _rss_mb()}


def phase_validate(data: Path) -> dict[str, Any]:
    """``validate_data_dir``: per-file counts, rejects file, duplicates, S10 checks."""
    from kpi.contract import Kind
    from kpi.sources.folder import validate_data_dir

    with tempfile.TemporaryDirectory() as rejects:
        t0 = time.perf_counter()
        reports = validate_data_dir(data, Path(rejects))
        seconds = time.perf_counter() - t0
    reports = [r for r in reports if r.kind is Kind.EVENTS]  # complaints: a few thousand rows
    return {
        "seconds": seconds,
        "rows": sum(r.rows_read for r in reports),
        "accepted": sum(r.accepted for r in reports),
        "rejected": sum(r.rejected_total for r in reports),
        "duplicate_ids": sum(r.duplicate_ids for r in reports),
        "peak_rss_mb": _rss_mb(),
    }


def phase_merge(data: Path, state_items: int = STATE_ITEMS) -> dict[str, Any]:
    """Events per second of ``merge_events`` into a state of about ``state_items`` items."""
    from kpi.lifecycle import collect_state, merge_events
    from kpi.sources.folder import load_data_dir

    events = load_data_dir(data).events.collect().sort("ts", maintain_order=True)
    # The cut-off: the instant by which `state_items` items had their first event.
    firsts = events.group_by("item_id").agg(pl.col("ts").min()).sort("ts")["ts"]
    cut = firsts[min(state_items, firsts.len()) - 1]
    before = events.filter(pl.col("ts") <= cut)
    after = events.filter(pl.col("ts") > cut)
    state, _, _ = collect_state(before.lazy())
    needed = sum(size * (BATCHES_PER_SIZE + 1) for size in BATCH_SIZES)
    if after.height < needed:  # small data sets: replay the whole feed
        after = pl.concat([after, events], how="vertical")
    out: dict[str, Any] = {"state_items": state.height, "sizes": {}}
    offset = 0
    for size in BATCH_SIZES:
        rates: list[float] = []
        for i in range(BATCHES_PER_SIZE + 1):
            batch = after.slice(offset % max(after.height - size, 1), size)
            offset += size
            t0 = time.perf_counter()
            merged = merge_events(state, batch.lazy())
            seconds = time.perf_counter() - t0
            if i:  # the first batch of each size warms up
                rates.append(batch.height / seconds)
            state = merged
        out["sizes"][str(size)] = {
            "events_per_s": statistics.median(rates),
            "ms_per_batch": 1000 * size / statistics.median(rates),
        }
    out["state_items_after"] = state.height
    out["peak_rss_mb"] = _rss_mb()
    return out


PHASES: Final = {"load": phase_load, "validate": phase_validate, "merge": phase_merge}


def run_phase(phase: str, data: Path) -> dict[str, Any]:
    """One phase in a fresh subprocess (its own peak RSS)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", phase, "--data", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{phase} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Time the phases on a generated (or given) data folder and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=10_000_000, help="approximate events to generate"
    )
    parser.add_argument("--small", action="store_true", help="200k events, 2 repetitions")
    parser.add_argument("--data", type=Path, help="use this data folder instead of generating one")
    parser.add_argument("--repeat", type=int, default=3, help="runs per phase (median reported)")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {list(PHASES)}"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.small:
        args.events, args.repeat = 200_000, 2
    data = args.data or make_dataset(args.events)
    n_events = count_events(data)
    print(f"data: {data} ({n_events:,} event rows)", file=sys.stderr)
    results: dict[str, Any] = {"data": str(data), "events": n_events}
    for phase in [p.strip() for p in args.phases.split(",") if p.strip()]:
        runs = [run_phase(phase, data) for _ in range(args.repeat if phase != "merge" else 1)]
        for r in runs:
            print(f"  {phase}: {json.dumps(r)}", file=sys.stderr)
        if phase == "merge":
            results[phase] = runs[0]
        else:
            results[phase] = {
                "median_s": statistics.median(r["seconds"] for r in runs),
                "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                "rows_per_s": n_events / statistics.median(r["seconds"] for r in runs),
                "runs": runs,
            }
    print(
        f"\n{n_events:,} event rows, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n"
    )
    for phase in ("load", "validate"):
        if phase in results:
            r = results[phase]
            print(
                f"{phase:9s} median {r['median_s']:.2f} s ({r['rows_per_s'] / 1e6:.1f} M rows/s), "
                f"peak RSS {r['median_peak_rss_mb']:.0f} MB"
            )
    if "merge" in results:
        m = results["merge"]
        print(
            f"merge into a state of {m['state_items']:,} items (peak RSS {m['peak_rss_mb']:.0f} MB):"
        )
        for size, r in m["sizes"].items():
            print(
                f"  batch {int(size):>7,}: {r['events_per_s']:>12,.0f} events/s ({r['ms_per_batch']:.0f} ms/batch)"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        _argv = sys.argv
        _phase = _argv[_argv.index("--child") + 1]
        print(json.dumps(PHASES[_phase](Path(_argv[_argv.index("--data") + 1]))))
    else:
        sys.exit(main())
