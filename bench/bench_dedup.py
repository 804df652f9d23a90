"""Exporter memory over a 30-day replay: is it flat once the dedup window is full?

Usage::

    .venv/bin/python bench/bench_dedup.py --data bench/out/data-sim-200000-30d-s1 \
        --windows 14d,forever --retention 7d

The folder's daily Parquet files (``kpi simulate`` writes one per day) are handed to
the exporter one day at a time, as a live feed would deliver them: each day is
linked into a fresh data folder and read to the end (one set per day) by an
in-process ``Ingestor``. After each day: RSS (``VmRSS``), event ids held in the
dedup window, items tracked. Each window runs in its own subprocess.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Resident set size of this process, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(data: Path, window: str, retention: str) -> list[dict[str, float]]:
    """Replay ``data`` day by day with one dedup window; one row of figures per day."""
    import datetime as dt

    from exporters.ingest import IngestConfig, Ingestor
    from kpi_cli.options import parse_retention

    def delta(text: str) -> dt.timedelta | None:
        seconds = parse_retention(text)
        return None if seconds is None else dt.timedelta(seconds=seconds)

    days = sorted((data / "events").glob("*.parquet"))
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        live, state = Path(tmp) / "data", Path(tmp) / "state"
        (live / "events").mkdir(parents=True)
        config = IngestConfig(live, state, retention=delta(retention), dedup_window=delta(window))
        ing = Ingestor(config)
        started = time.perf_counter()
        for n, path in enumerate(days, 1):
            os.link(path, live / "events" / path.name)
            while ing.step().pending:
                pass
            gc.collect()
            rows.append(
                {
                    "day": n,
                    "rss_mb": round(rss_mb(), 1),
                    "seen_ids": len(ing.seen),
                    "items": ing.items.height,
                    "events": ing.counters.value(_ingested()),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps({"window": window, **rows[-1]}), file=sys.stderr, flush=True)
        ing.close()
    return rows


def _ingested():  # type: ignore[no-untyped-def]
    from exporters import catalog as cat

    return cat.EXPORTER_EVENTS_INGESTED


def main() -> None:
    """Run each window in a subprocess and print the per-day figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--windows", default="14d,forever", help="comma-separated values")
    parser.add_argument("--retention", default="7d")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.data, args.child, args.retention)))
        return
    results: dict[str, list[dict[str, float]]] = {}
    for window in args.windows.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--data", str(args.data), "--retention", args.retention,
             "--child", window],
            stdout=subprocess.PIPE, text=True, check=True,  # per-day lines on stderr
        )  # fmt: skip
        results[window] = json.loads(out.stdout.strip().splitlines()[-1])
    names = list(results)
    head = " | ".join(f"{w}: RSS MB / ids held" for w in names)
    print(f"| day | events | items tracked | {head} |")
    print("|---|---|---|" + "---|" * len(names))
    for i, row in enumerate(results[names[0]]):
        cells = " | ".join(
            f"{results[w][i]['rss_mb']:.0f} / {results[w][i]['seen_ids']:,}" for w in names
        )
        print(f"| {row['day']} | {row['events']:,} | {row['items']:,} | {cells} |")
    for w in names:
        print(f"{w}: {results[w][-1]['seconds']} s in all")
    out_path = ROOT / "bench" / "out" / "dedup.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
