"""``kpi backfill`` on a 30-day folder: one pass over the history vs the report once per step.

Usage::

    .venv/bin/kpi simulate --out /tmp/sim10m --items 1203369 --days 30 --seed 0 \
        --start 2026-01-01T00:00:00Z                       # ~10 M events
    .venv/bin/python bench/bench_backfill.py --data /tmp/sim10m          # -> bench/out/backfill.json
    .venv/bin/python bench/bench_backfill.py --small                      # 20 k items, 7 days

Side by side, in one run:

- the backfill itself (``exporters.backfill.backfill``, 5-minute steps, blocks by the
  real promtool; recording rules too unless ``--no-rules``), wall and CPU seconds
  (this process plus its children: promtool, the throw-away Prometheus) per phase;
- the naive way: ``Snapshot.from_dataset(as_of=t)`` + the exporter's gauge queries for
  ``--naive-steps`` steps, extrapolated to the whole grid;
- the text: prometheus_client's encoder fed one timestamped ``add_metric`` per point vs
  the backfill's (prefixes rendered once, tails appended by polars), per million samples.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def naive(data: Path, steps: list[dt.datetime]) -> float:
    """Seconds per step of the report-per-step way (the exporter's gauge questions)."""
    from exporters.view import BACKLOG_QUERY, COMPLAINTS_QUERY, NETWORK_QUERY, STALLED_QUERY
    from kpi.kpis.query import Snapshot
    from kpi.sources.folder import load_data_dir

    ds = load_data_dir(data)
    started = time.perf_counter()
    for t in steps:
        snap = Snapshot.from_dataset(ds, t)
        for q in (BACKLOG_QUERY, NETWORK_QUERY, STALLED_QUERY, COMPLAINTS_QUERY):
            snap.query(q)
    return (time.perf_counter() - started) / len(steps)


def encoders(data: Path, start: dt.datetime, end: dt.datetime) -> dict[str, float]:
    """µs per sample: prometheus_client per point vs the backfill's text, on one block range."""
    from prometheus_client.openmetrics import exposition

    from exporters import catalog as cat
    from exporters.backfill import SPECS, Stager
    from exporters.store import bucket_edges_us
    from kpi.kpis.steps import VALUE, K, step_deltas, step_grid
    from kpi.sources.folder import load_data_dir

    ds = load_data_dir(data)
    steps = step_grid(start, end, dt.timedelta(minutes=5))
    deltas = step_deltas(
        ds.events,
        ds.complaints,
        ds.facilities,
        ds.standards,
        steps,
        transit_edges_us=bucket_edges_us(cat.TRANSIT_TIME),
        resolution_edges_us=bucket_edges_us(cat.COMPLAINT_RESOLUTION),
    )
    extra = {"job": "postal-exporter", "instance": "127.0.0.1:9108"}
    ours = Stager(deltas, extra)
    k0, k1 = next(ours.windows(dt.timedelta(hours=18)))
    sink = io.BytesIO()
    t = time.perf_counter()
    n = ours.write(sink, k0, k1)
    ours_s = time.perf_counter() - t
    twin = Stager(deltas, extra)
    values = twin.values.window(k0, k1)
    t = time.perf_counter()
    samples = 0

    class One:
        def __init__(self, fam: Any) -> None:
            self.fam = fam

        def collect(self) -> list[Any]:
            return [self.fam]

    for name, spec in SPECS.items():
        if spec.type is cat.MetricType.HISTOGRAM:
            continue  # counters and gauges are enough for a per-sample figure
        fam = spec.family([*spec.labels, *extra])
        labels = list(spec.labels)
        for row in values[name].select(*labels, K, VALUE).rows():
            fam.add_metric([*row[:-2], *extra.values()], float(row[-1]), timestamp=row[-2])
        samples += len(fam.samples)
        exposition.generate_latest(One(fam))
    client_s = time.perf_counter() - t
    return {
        "backfill_us_per_sample": ours_s / n * 1e6,
        "client_us_per_sample": client_s / max(samples, 1) * 1e6,
        "window_samples": float(n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--no-rules", action="store_true")
    parser.add_argument("--naive-steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "backfill.json")
    args = parser.parse_args()

    import polars as pl

    from exporters.backfill import Options, backfill
    from kpi.sources.folder import load_data_dir

    tmp = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    data = args.data
    if data is None:
        from kpi.simulate import SimConfig, generate, write_data_folder

        data = tmp / "data"
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        items, days = (20_000, 7) if args.small else (1_203_369, 30)
        write_data_folder(generate(SimConfig(items=items, days=days, seed=0, start=start)), data)
    events = (
        load_data_dir(data)
        .events.select(
            pl.len().alias("n"), pl.col("ts").min().alias("a"), pl.col("ts").max().alias("b")
        )
        .collect()
    )
    n_events, first, last = events.row(0)
    print(f"{n_events:,} events, {first} .. {last}", flush=True)

    wall, cpu = time.perf_counter(), _cpu()
    result = backfill(
        Options(data_dir=data, out=tmp / "blocks", rules=not args.no_rules),
        progress=lambda m: print(m, flush=True),
    )
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    print(f"backfill: {wall:.1f} s wall, {cpu:.1f} s CPU, {result.seconds}", flush=True)

    grid = [
        result.start + (result.end - result.start) * (i + 1) / (args.naive_steps + 1)
        for i in range(args.naive_steps)
    ]
    per_step = naive(data, grid)
    print(f"report per step: {per_step:.2f} s/step -> {per_step * result.steps:.0f} s", flush=True)
    text = encoders(data, result.start, result.start + dt.timedelta(days=1))
    print(f"text: {text}", flush=True)
    blocks_bytes = sum(f.stat().st_size for f in (tmp / "blocks").rglob("*") if f.is_file())
    figures = {
        "events": n_events,
        "steps": result.steps,
        "series": result.series,
        "samples": result.samples,
        "blocks": len(result.blocks),
        "rule_blocks": len(result.rule_blocks),
        "blocks_mb": blocks_bytes / 2**20,
        "wall_s": wall,
        "cpu_s": cpu,
        "phases_wall_s": result.seconds,
        "naive_s_per_step": per_step,
        "naive_s_whole_grid": per_step * result.steps,
        "text": text,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
