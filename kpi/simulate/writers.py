"""Writing a data folder: daily Parquet event files, complaints, facilities, text feeds."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import orjson
import polars as pl
import yaml

from kpi.simulate.bad_rows import COMPLAINT_FEEDS, EVENT_FEEDS
from kpi.simulate.config import LOCAL_OFFSET_H
from kpi.simulate.run import Report, SimResult, no_report
from kpi.standards import DEFAULT_STANDARDS, STANDARDS_FILE, ServiceStandards, StageTargets

#: The simulated network's stage targets (hours): what a sorting centre, a collection and
#: a delivery office are expected to hold an item, and a trunk leg to take. The scripted
#: slowed hub and delayed route break them, so the demo's stage alerts have something to say.
STAGE_TARGETS: Final = StageTargets(
    dwell_hours={"collection": 12.0, "processing": 6.0, "delivery": 24.0},
    leg_hours={"default": 24.0},
)
#: The standard a simulated folder ships: the built-in one plus the stage targets.
SIMULATED_STANDARDS: Final = DEFAULT_STANDARDS.model_copy(update={"stages": STAGE_TARGETS})

#: Files a run writes (glob patterns relative to the data folder); a new run replaces them.
GENERATED_FILES: Final = (
    "facilities.csv",
    STANDARDS_FILE,
    "events/events-*.parquet",
    *EVENT_FEEDS,
    "complaints/complaints.parquet",
    *COMPLAINT_FEEDS,
)


def _jsonl_complaints(df: pl.DataFrame) -> str:
    """JSON lines with a real JSON boolean for ``valid`` (a bad row's "maybe" stays a string)."""
    booleans = {"true": True, "false": False}
    out = []
    for row in df.iter_rows(named=True):
        row["valid"] = booleans.get(row["valid"], row["valid"])
        out.append(orjson.dumps(row).decode())
    return "\n".join(out)


def write_standards(standards: ServiceStandards, out: Path) -> None:
    """``standards`` as the folder's ``service-standards.yaml`` (what ``load_standards`` reads)."""
    text = yaml.safe_dump(standards.model_dump(mode="json"), sort_keys=False)
    (out / STANDARDS_FILE).write_text(text, encoding="utf-8")


def write_data_folder(
    result: SimResult, out_dir: Path, report: Report | None = None
) -> dict[str, int]:
    """Write a data folder (events/, complaints/, facilities.csv, service-standards.yaml);
    returns rows per file."""
    say = report or no_report
    out = Path(out_dir)
    (out / "events").mkdir(parents=True, exist_ok=True)
    (out / "complaints").mkdir(parents=True, exist_ok=True)
    for pattern in GENERATED_FILES:
        for old in out.glob(pattern):
            old.unlink()
    written: dict[str, int] = {}
    result.facilities.write_csv(out / "facilities.csv")
    written["facilities.csv"] = result.facilities.height
    write_standards(SIMULATED_STANDARDS, out)

    events = result.events
    moved = result.feeds.event_moved
    # One file per local (Asia/Shanghai) day; the frame is sorted by ts, so days are slices.
    sec = events["ts"].dt.epoch("s").to_numpy()
    day = (sec + LOCAL_OFFSET_H * 3600) // 86_400
    cuts = np.flatnonzero(np.diff(day)) + 1
    bounds = [0, *cuts.tolist(), len(day)]
    for j, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        part = events.slice(lo, hi - lo)
        if moved is not None:
            part = part.filter(~moved.slice(lo, hi - lo))
        name = f"events/events-{date(1970, 1, 1) + timedelta(days=int(day[lo]))}.parquet"
        part.write_parquet(out / name, compression="zstd", compression_level=1)
        written[name] = part.height
        say(f"writing {name}", 0.5 + 0.45 * (j + 1) / max(1, len(bounds) - 1))

    complaints = result.complaints
    if result.feeds.complaint_moved is not None:
        complaints = complaints.filter(~result.feeds.complaint_moved)
    complaints.write_parquet(
        out / "complaints/complaints.parquet", compression="zstd", compression_level=1
    )
    written["complaints/complaints.parquet"] = complaints.height

    for rel, frame in result.feeds.files.items():
        if rel.endswith(".csv"):
            text = frame.write_csv()
        elif rel.startswith("complaints/"):
            text = _jsonl_complaints(frame)
        else:
            text = frame.write_ndjson()
        lines = text.splitlines()
        header = 1 if rel.endswith(".csv") else 0
        for at, line in sorted(result.feeds.raw_lines.get(rel, []), reverse=True):
            lines.insert(header + at, line)
        (out / rel).write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[rel] = len(lines) - header
    say("done", 1.0)
    return written
