"""Digests of everything the simulator writes, for a few seeds and options.

Run before and after a refactor of ``kpi/simulate/``; the output must not change
(same arguments, same bytes): ``.venv/bin/python scripts/sim_digest.py``.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kpi import simulate as sim

CASES: list[dict[str, Any]] = [
    {"items": 4000, "days": 30, "seed": 0, "scenario": "spring-festival", "bad_rows": 0.05},
    {"items": 3000, "days": 10, "seed": 7, "scenario": "steady", "bad_rows": 0.0},
    {
        "items": 5000,
        "days": 45,
        "seed": 11,
        "scenario": "spring-festival",
        "bad_rows": 0.2,
        "start": datetime(2026, 2, 1, tzinfo=timezone(timedelta(hours=8))),
    },
    {"items": 20000, "days": 30, "seed": 3, "scenario": "spring-festival", "bad_rows": 0.01},
]


def folder_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in path order."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def main() -> None:
    """Print one line per case, then one for live mode under a fake clock."""
    for case in CASES:
        result = sim.generate(sim.SimConfig(**case))
        frames = hashlib.sha256()
        for df in (result.items, result.events, result.complaints, result.facilities):
            frames.update(df.write_csv().encode())
        frames.update(repr(result.incidents).encode())
        with tempfile.TemporaryDirectory() as tmp:
            written = sim.write_data_folder(result, Path(tmp))
            files = folder_digest(Path(tmp))
        rows = sum(written.values())
        print(f"{case['seed']} files={files} frames={frames.hexdigest()[:16]} rows={rows}")
    clock_at = [1_800_000_000.0]

    def clock() -> float:
        clock_at[0] += 7.0
        return clock_at[0]

    with tempfile.TemporaryDirectory() as tmp:
        run = sim.live_append(Path(tmp), rate=50, seed=5, max_events=3000, clock=clock, tick=0.0)
        live = hashlib.sha256(run.path.read_bytes()).hexdigest()[:16]
        print(f"live events={run.events} sha={live} name={run.path.name}")


if __name__ == "__main__":
    main()
