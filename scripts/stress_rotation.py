"""Stress the tailer against logrotate ``copytruncate`` racing its polls: lost and twice-read lines.

Runs the racing test's writer (another process rotating every few ms, sometimes twice in
a row) many times while a ``Tailer`` polls every 2 ms, and prints each trial where a line
was lost or read twice, with the (poll, file, line) it was read at. The test runs two
trials; this runs as many as asked, to measure a rare race::

    .venv/bin/python scripts/stress_rotation.py --trials 100
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporters.tail import Tailer
from tests.exporters.test_exporter_tail import rotating_writer, step, taken

Reads = dict[str, list[tuple[int, str, int]]]


def trial(root: Path, seed: int, rotations: int) -> tuple[set[str], Reads]:
    """One race: the lines never read, and the lines read more than once (where)."""
    events = root / "events"
    events.mkdir(parents=True)
    (events / "live.jsonl").write_bytes(b"")
    tailer = Tailer(root)
    writer = multiprocessing.get_context("spawn").Process(
        target=rotating_writer, args=(events, rotations, seed)
    )
    writer.start()
    reads: Reads = collections.defaultdict(list)
    polls = 0
    while writer.is_alive():
        for source, row, event_id in taken(step(tailer)):
            reads[event_id].append((polls, source, row))
        polls += 1
        time.sleep(0.002)
    writer.join()
    for _ in range(3):
        for source, row, event_id in taken(step(tailer)):
            reads[event_id].append((polls, source, row))
        polls += 1
    generations = int((events / "generations").read_text())
    written = {f"g{g}-{i}" for g in range(generations) for i in range(5)}
    return written - set(reads), {k: v for k, v in reads.items() if len(v) > 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="trials per seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rotations", type=int, default=20, help="rotations per trial")
    args = parser.parse_args()
    bad = 0
    for n in range(args.trials):
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                lost, twice = trial(Path(tmp), seed, args.rotations)
            if lost or twice:
                bad += 1
                print(f"trial {n} seed {seed}: {len(lost)} lost, {len(twice)} read twice")
                for event_id, where in sorted(twice.items())[:5]:
                    print(f"  {event_id}: {where}")
    print(f"{bad} of {args.trials * args.seeds} trials lost or read a line twice")


if __name__ == "__main__":
    main()
