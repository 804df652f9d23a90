"""Exporter state with and without retention: the same folder ingested from scratch.

Usage::

    .venv/bin/python bench/bench_retention.py --data bench/out/data-sim-1203369-30d-s0 \
        --retention 7d,forever

Each retention runs in its own subprocess (peak RSS = its ``ru_maxrss``): an
``Ingestor`` with a fresh state folder reads every file of the folder to the end, then
writes one checkpoint. Reported: wall time, events/s, items still tracked, items
retired, peak RSS, checkpoint size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def child(data: Path, retention: str) -> dict[str, float]:
    """Ingest ``data`` once with ``retention``; the figures as a dict."""
    import datetime as dt

    from exporters import catalog as cat
    from exporters.ingest import IngestConfig, Ingestor
    from exporters.state import write_checkpoint
    from kpi_cli.options import parse_retention

    seconds = parse_retention(retention)
    keep = None if seconds is None else dt.timedelta(seconds=seconds)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        ing = Ingestor(IngestConfig(data, state, retention=keep))
        started = time.perf_counter()
        while True:
            step = ing.step()
            if not step.pending and step.rows == 0:
                break
        took = time.perf_counter() - started
        path = write_checkpoint(state, ing.capture())
        size = sum(f.stat().st_size for f in path.iterdir())
        events = ing.counters.value(cat.EXPORTER_EVENTS_INGESTED)
        out = {
            "seconds": took,
            "events_per_s": events / took,
            "items_tracked": ing.items.height,
            "items_retired": len(ing.retired),
            "checkpoint_mb": size / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        ing.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--retention", default="7d,forever", help="comma-separated values")
    args = parser.parse_args()
    print(
        "| retention | time (s) | events/s | items tracked | items retired | peak RSS (MB) | checkpoint (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for retention in args.retention.split(","):
        cmd = [sys.executable, __file__, "--child", retention, str(args.data)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"| {retention} | {result['seconds']:.1f} | {result['events_per_s']:,.0f} "
            f"| {result['items_tracked']:,} | {result['items_retired']:,} "
            f"| {result['peak_rss_mb']:,.0f} | {result['checkpoint_mb']:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        print(json.dumps(child(Path(sys.argv[i + 2]), sys.argv[i + 1])))
        sys.exit(0)
    sys.exit(main())
