"""The API's cold 30-day by-destination on-time query, in process: text, Enum, hour counts.

Usage::

    .venv/bin/python bench/bench_query.py --lake /tmp/lake1m --reps 40

The question ``bench_api.py`` sends (``on_time_ratio`` by destination and day in
Asia/Shanghai, the 30 days up to the lake's as-of), asked of the lake's default
snapshot as the API builds it, without the server (no HTTP, no start-up): in turn of
the snapshot as read (dimensions as text), of the same snapshot prepared without its
flow counts per hour (``Snapshot.prepare(index=False)``: Enum dimensions) and with
them (``build_index``, as the API keeps it), so all see the same load. The answers must be equal. Prints
p50/p95 per variant, the ratios to text and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from kpi.kpis.query import KpiQuery
from kpi.lake_snapshot import LakeReader


def _p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]


def _stat(xs: list[float], stat: str) -> float:
    return statistics.median(xs) if stat == "p50" else _p95(xs)


def main() -> None:
    """Run the comparison and print it as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lake", type=Path, default=Path("/tmp/lake1m"))
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args()
    text = LakeReader.open(args.lake).snapshot()
    coded = replace(text)
    t0 = time.perf_counter()
    coded.prepare(index=False)
    prepare_ms = (time.perf_counter() - t0) * 1000
    indexed = replace(text)
    indexed.prepare(index=False)
    t0 = time.perf_counter()
    indexed.build_index()
    index_ms = (time.perf_counter() - t0) * 1000
    end = text.as_of + dt.timedelta(microseconds=1)
    q = KpiQuery(
        kpis=("on_time_ratio",),
        by=("destination",),
        start=end - dt.timedelta(days=30),
        end=end,
        granularity="day",
        tz="Asia/Shanghai",
    )
    variants = (("text", text), ("enum", coded), ("hours", indexed))
    want = text.query(q)
    if not all(snap.query(q).equals(want) for _, snap in variants):
        raise SystemExit("a prepared snapshot's answer differs")
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    load_before = os.getloadavg()
    for _ in range(args.reps):
        for name, snap in variants:
            t = time.perf_counter()
            snap.query(q)
            times[name].append((time.perf_counter() - t) * 1000)
    out: dict[str, object] = {
        name: {
            "p50_ms": round(statistics.median(xs), 1),
            "p95_ms": round(_p95(xs), 1),
            "min_ms": round(min(xs), 1),
        }
        for name, xs in times.items()
    }
    for name in ("enum", "hours"):
        for stat in ("p50", "p95"):
            ratio = _stat(times[name], stat) / _stat(times["text"], stat)
            out[f"{name}_over_text_{stat}"] = round(ratio, 2)
    out["index_ms"] = round(index_ms, 1)
    out["prepare_ms"] = round(prepare_ms, 1)
    out["reps"] = args.reps
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
