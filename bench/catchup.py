"""Parquet catch-up of one tree, timed: a folder's whole history read by an ``Ingestor``.

Usage (run from the tree to time; the folder is copied to a temporary directory)::

    cd TREE && POLARS_MAX_THREADS=1 .venv/bin/python bench/catchup.py 2000000 /tmp/sim1m

Prints the micro-batch rows, events read, wall seconds, events/s, CPU µs per event, items
tracked and the counter totals (to compare trees: they must be equal).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, ".")

from exporters.ingest import IngestConfig, Ingestor

try:  # the engine the tree's ``kpi exporter`` runs its queries on
    from exporters.engine import use_in_memory_engine

    use_in_memory_engine()
except ImportError:
    pass


def main() -> None:
    """Catch up once and print the figures."""
    rows, src = int(sys.argv[1]), Path(sys.argv[2])
    work = Path(tempfile.mkdtemp(prefix="catchup-"))
    try:
        shutil.copytree(src, work / "data")
        config = IngestConfig(
            work / "data", work / "state", max_batch_rows=rows, max_batch_bytes=1 << 40
        )
        ing = Ingestor(config)
        t, c, n = time.perf_counter(), time.process_time(), 0
        while True:
            r = ing.step()
            n += r.rows
            if not r.pending and r.rows == 0:
                break
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        totals = sorted((k, sum(v.values())) for k, v in ing.counters.counters.items())
        print(
            rows,
            n,
            f"{wall:.1f}s",
            f"{n / wall:,.0f} ev/s",
            f"{cpu / n * 1e6:.2f} cpu-us/ev",
            ing.ledger.items.height,
            totals,
        )
        ing.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
