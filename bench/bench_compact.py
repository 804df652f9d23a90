"""``kpi compact`` peak RSS and time, an old tree against this one, side by side.

Usage::

    .venv/bin/python bench/bench_compact.py --data /work/data/sim10m --old-ref bf26376 \
        --work /tmp/h16c/bench

For each tree (the old ref, exported with ``git archive``; this checkout): a fresh lake
of the whole folder, then an append: a lake of the first half of the event files, then
the rest added to it (the append de-duplicates against the half already held). Each
``kpi compact`` runs under ``/usr/bin/time -v`` (peak RSS, wall time); the lakes of the
two trees must hold the same events
(row count and the sum of the rows' hashes compared).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
from benchkit import export_tree

ROOT = Path(__file__).resolve().parent.parent


def _tree(ref: str | None, work: Path) -> Path:
    return ROOT if ref is None else export_tree(ref, work / f"tree-{ref}")


def _compact(tree: Path, data: Path, lake: Path) -> tuple[float, float, str]:
    """(wall s, peak RSS GB, the CLI's summary line) of one ``kpi compact``."""
    code = "import sys; from kpi_cli.app import app; sys.argv[0] = 'kpi'; app()"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", code, "compact", str(data)]
    proc = subprocess.run(
        [*cmd, "--out", str(lake)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])  # type: ignore[index]
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)[1]  # type: ignore[index]
    secs = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
    return secs, rss / 2**20, proc.stdout.strip()


def _link(src: Path, dst: Path, files: list[Path]) -> None:
    for f in files:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f)


def fingerprint(lake: Path) -> tuple[int, int]:
    """(events, sum of row hashes) of a lake's committed events: equal lakes, equal prints."""
    sys.path.insert(0, str(ROOT))
    from kpi.lake import read_events

    rows = read_events(lake).select(pl.len(), pl.struct(pl.all()).hash().cast(pl.UInt128).sum())
    n, total = rows.collect(engine="streaming").row(0)
    return int(n), int(total)


def main() -> None:
    """Run the comparison and print one line per run."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--old-ref", required=True)
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    data: Path = args.data.resolve()
    events = sorted((data / "events").iterdir())
    refs = [files for files in sorted(data.iterdir()) if files.is_file()]
    half = len(events) // 2
    for label, ref in (("old", args.old_ref), ("new", None)):
        tree = _tree(ref, args.work)
        base = args.work / label
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        secs, gb, line = _compact(tree, data, base / "lake-full")
        print(f"{label} full     {secs:7.1f} s  {gb:5.2f} GB  | {line}", flush=True)
        part = base / "data"
        _link(data, part, refs + events[:half])
        secs, gb, line = _compact(tree, part, base / "lake-append")
        print(f"{label} half     {secs:7.1f} s  {gb:5.2f} GB  | {line}", flush=True)
        _link(data, part, events[half:] + sorted((data / "complaints").iterdir()))
        secs, gb, line = _compact(tree, part, base / "lake-append")
        print(f"{label} append   {secs:7.1f} s  {gb:5.2f} GB  | {line}", flush=True)
    for lake in ("lake-full", "lake-append"):
        prints = {fingerprint(args.work / label / lake) for label in ("old", "new")}
        print(f"{lake}: old and new hold {'the same' if len(prints) == 1 else 'DIFFERENT'} events")


if __name__ == "__main__":
    main()
