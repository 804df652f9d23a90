"""The API's cold 30-day by-destination on-time query, in process, text vs Enum dimensions.

Usage::

    .venv/bin/python bench/bench_query.py --lake /tmp/lake1m --reps 40

The question ``bench_api.py`` sends (``on_time_ratio`` by destination and day in
Asia/Shanghai, the 30 days up to the lake's as-of), asked of the lake's default
snapshot as the API builds it, without the server (no HTTP, no start-up): alternately
of the snapshot as read (dimensions as text) and of the same snapshot prepared as the
API keeps it (``Snapshot.prepare``: Enum dimensions), so both see the same load. The
answers must be equal. Prints p50/p95 per variant, their ratio and the load average.
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


def main() -> None:
    """Run the comparison and print it as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lake", type=Path, default=Path("/tmp/lake1m"))
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args()
    text = LakeReader.open(args.lake).snapshot()
    coded = replace(text)
    t0 = time.perf_counter()
    coded.prepare()
    prepare_ms = (time.perf_counter() - t0) * 1000
    end = text.as_of + dt.timedelta(microseconds=1)
    q = KpiQuery(
        kpis=("on_time_ratio",),
        by=("destination",),
        start=end - dt.timedelta(days=30),
        end=end,
        granularity="day",
        tz="Asia/Shanghai",
    )
    if not coded.query(q).equals(text.query(q)):
        raise SystemExit("the prepared snapshot's answer differs")
    times: dict[str, list[float]] = {"text": [], "enum": []}
    load_before = os.getloadavg()
    for _ in range(args.reps):
        for name, snap in (("text", text), ("enum", coded)):
            t = time.perf_counter()
            snap.query(q)
            times[name].append((time.perf_counter() - t) * 1000)
    out = {
        name: {
            "p50_ms": round(statistics.median(xs), 1),
            "p95_ms": round(_p95(xs), 1),
            "min_ms": round(min(xs), 1),
        }
        for name, xs in times.items()
    }
    out["ratio_p50"] = round(out["enum"]["p50_ms"] / out["text"]["p50_ms"], 2)
    out["ratio_p95"] = round(out["enum"]["p95_ms"] / out["text"]["p95_ms"], 2)
    out["prepare_ms"] = round(prepare_ms, 1)
    out["reps"] = args.reps
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
