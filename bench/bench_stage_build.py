"""CPU time of building the stage tables alone (``Snapshot.stages``) on a data folder.

The whole-report bench (``bench_report.py``) times the process, where the stage build is
a few seconds among many on a loaded machine; this one times only the build, after the
snapshot, with ``time.process_time``. To compare two versions side by side, run it in
turn with each tree first on ``PYTHONPATH``::

    git archive <before> | tar -x -C /tmp/before
    for r in 1 2 3; do
      PYTHONPATH=/tmp/before .venv/bin/python bench/bench_stage_build.py DIR
      .venv/bin/python bench/bench_stage_build.py DIR
    done
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import kpi
from kpi.kpis.query import Snapshot
from kpi.sources.folder import load_data_dir


def main() -> None:
    ds = load_data_dir(Path(sys.argv[1]))
    snap = Snapshot.from_dataset(ds)
    start = time.process_time()
    tables = snap.stages
    cpu = time.process_time() - start
    out = {"code": str(Path(kpi.__file__).parent), "stage_build_cpu_s": round(cpu, 3)}
    print(json.dumps({**out, "stage_rows": tables.scans.height, "items": tables.items.height}))


if __name__ == "__main__":
    main()
