"""Exporter catch-up with and without the stage histograms (same folder), one mode per run.

Usage::

    for m in off on; do .venv/bin/python bench/bench_stage_histograms.py DATA_DIR $m; done

``off`` replaces the stage part of applying a set (``exporters.books_stages``) by a no-op.
Prints CPU and wall seconds, peak RSS and the rows of the stage history kept.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exporters import books
from exporters.ingest import IngestConfig, Ingestor


def _no_stages(counters: Any, history: Any, *args: Any, **kwargs: Any) -> Any:
    return history


def main() -> None:
    """Catch up on ``argv[1]`` with the stage histograms ``on`` or ``off`` (``argv[2]``)."""
    data, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "off":
        books.apply_stages = _no_stages
    cpu, wall = time.process_time(), time.perf_counter()
    ing = Ingestor(IngestConfig(data, Path(tempfile.mkdtemp())))
    while ing.step().pending:
        pass
    ing.step()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        f"{mode} cpu {time.process_time() - cpu:.1f} s, wall {time.perf_counter() - wall:.1f} s, "
        f"peak RSS {rss_mb} MB, items {ing.items.height}, stage rows {ing.ledger.stages.height}"
    )


if __name__ == "__main__":
    main()
