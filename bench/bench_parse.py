"""Parse and validation alone, CPU µs per event: a shard's poll and a Parquet chunk, old tree beside this one.

Usage::

    POLARS_MAX_THREADS=1 .venv/bin/python bench/bench_parse.py --old-ref 804daa3
    POLARS_MAX_THREADS=1 .venv/bin/python bench/bench_parse.py --old-ref 804daa3 --events 300000 --rounds 3

The messages are ``bench_exporter.live_lines``' scans (as ``bench_throughput.py``'s Kafka
scans phase) encoded as ``kpi publish`` does (``to_messages``), each with its own
timestamp (a second apart; the throughput bench's scans share one, which polars' parse
cache makes nearly free: ``--same-ts`` for those), in polls of ``--poll`` messages over 8 partitions. Per tree
(``old``: a git revision exported to a temporary directory, ``new``: this working tree),
interleaved ``--rounds`` times, a child process times ``parse_messages`` and
``validate_poll`` (``exporters.kafka.partition``) on every poll, and
``validated_frames`` on the same rows as a typed Parquet chunk (``read_file`` of a
Parquet file, as the file exporter's catch-up reads it). CPU time of the child
(``time.process_time``): run it with ``POLARS_MAX_THREADS=1`` so CPU time is work.

``--catch-up N``: instead, the file exporter's Parquet catch-up (``bench_throughput.py``'s
Parquet column) on ``bench_exporter.build_folder`` with N unfinished items (and N/10
finished): an ``Ingestor`` drains the folder (micro-batches of at most 250 k rows) and the
CPU time of ``validated_frames`` (reading the chunk's Parquet rows and validating them,
as the ingest calls it), of the Parquet read alone (the chunk's frame collected before
validation, in a separate pass) and of everything else is reported per event.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from benchkit import export_tree

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from bench.bench_exporter import T_END, live_lines  # noqa: E402

_CHILD: Final = r"""
import json, sys, time
from pathlib import Path
tree, values_file, parquet, poll, reps = sys.argv[1:6]
sys.path.insert(0, tree)
import polars as pl
from exporters.kafka.partition import validate_poll
from kpi.contract import Kind
from kpi.sources.files import read_file
from kpi.sources.folder import validated_frames
from kpi.streams.messages import Messages, parse_messages, source_name
values = Path(values_file).read_bytes().split(b"\n")[:-1]
poll, reps = int(poll), int(reps)
srcs = [source_name("postal.events", i % 8) for i in range(len(values))]
offs = list(range(len(values)))
polls = [Messages(values[i:i + poll], srcs[i:i + poll], offs[i:i + poll])
         for i in range(0, len(values), poll)]
parse_messages(polls[0], Kind.EVENTS)  # warm-up (imports, first calls)
res = {"parse": 0.0, "validate": 0.0, "parquet_read": 0.0, "parquet_validate": 0.0}
good = 0
for _ in range(reps):
    for m in polls:
        c = time.process_time(); batch = parse_messages(m, Kind.EVENTS)
        res["parse"] += time.process_time() - c
        c = time.process_time(); shares = validate_poll(batch, Kind.EVENTS)
        res["validate"] += time.process_time() - c
        good += sum(s.good.height for s in shares.values())
    c = time.process_time(); batch = read_file(Path(parquet))
    res["parquet_read"] += time.process_time() - c
    c = time.process_time(); g, b = validated_frames(batch, Kind.EVENTS)
    res["parquet_validate"] += time.process_time() - c
    assert b.height == 0, b.head(3)
n = len(values) * reps
assert good == n, (good, n)
print(json.dumps({k: v / n * 1e6 for k, v in res.items()}))
"""


_CATCH_UP: Final = r"""
import functools, json, shutil, sys, time
from pathlib import Path
tree, folder, work = sys.argv[1:4]
sys.path.insert(0, tree)
import polars as pl
import exporters.ingest as ingest
from exporters.ingest import IngestConfig, Ingestor
work = Path(work)
shutil.copytree(folder, work / "data")
spent = {"validated_frames": 0.0, "read": 0.0}
inner = ingest.validated_frames
@functools.wraps(inner)
def timed(batch, *a, **k):
    c = time.process_time()
    frame = batch.frame.collect()  # the read alone, timed apart and left out below
    spent["read"] += time.process_time() - c
    c = time.process_time()
    try:
        return inner(batch, *a, **k)
    finally:
        spent["validated_frames"] += time.process_time() - c
ingest.validated_frames = timed
ing = Ingestor(IngestConfig(work / "data", work / "state", max_batch_rows=250_000))
files = sorted((work / "data" / "events").glob("*.parquet"))
n = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in files)
c = time.process_time()
while True:
    r = ing.step()
    if not r.pending and r.rows == 0:
        break
total = time.process_time() - c - spent["read"]
ing.close()
out = {k: v / n * 1e6 for k, v in spent.items()}
out["total"] = total / n * 1e6
out["events"] = n
print(json.dumps(out))
"""


def catch_up(args: argparse.Namespace, trees: dict[str, Path], root: Path) -> None:
    """The Parquet catch-up of each tree, ``validated_frames`` timed within it."""
    from bench.bench_exporter import build_folder

    folder = root / "folder"
    build_folder(folder, args.catch_up, args.catch_up // 10, 2000, 1000, 0)
    rows: list[dict[str, object]] = []
    for r in range(args.rounds):
        for name, tree in trees.items():
            work = root / f"work-{name}-{r}"
            out = subprocess.run(
                [sys.executable, "-c", _CATCH_UP, str(tree), str(folder), str(work)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows.append({"round": r, "tree": name, **json.loads(out.splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(work)
    print("\n| round | tree | events | CPU µs per event | of it validated_frames | (read, apart) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['round']} | {row['tree']} | {row['events']:,} | {row['total']:.3f} "
            f"| {row['validated_frames']:.3f} | {row['read']:.3f} |"
        )


def messages(events: int, seed: int, same_ts: bool = False) -> pl.DataFrame:
    """``live_lines``' scans, each a second after the previous one (all distinct timestamps),
    or with ``same_ts`` as ``live_lines`` writes them (one timestamp for all)."""
    scans = pl.read_ndjson(live_lines(events * 3, events, seed, events * 3))
    if same_ts:
        return scans
    start = T_END + dt.timedelta(hours=1)
    ts = pl.datetime_range(
        start, start + dt.timedelta(seconds=scans.height - 1), "1s", eager=True, time_zone="UTC"
    )
    return scans.with_columns(ts.alias("ts"))


def main() -> None:
    """Build the messages once, time each tree's parse and validation in children."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-ref", default="804daa3")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--poll", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=2, help="passes over the polls per child")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--same-ts", action="store_true", help="one timestamp for all scans")
    parser.add_argument("--catch-up", type=int, default=0, help="unfinished items (0: no)")
    args = parser.parse_args()
    from kpi.contract import Kind
    from kpi.streams.messages import to_messages

    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        root = Path(tmp)
        if args.catch_up:
            trees = {"old": export_tree(args.old_ref, root / "old"), "new": ROOT}
            return catch_up(args, trees, root)
        scans = messages(args.events, 7, args.same_ts)
        values_file = root / "values.ndjson"
        values_file.write_bytes(b"\n".join(to_messages(scans.lazy(), Kind.EVENTS)[1]) + b"\n")
        parquet = root / "chunk.parquet"
        typed = pl.read_ndjson(values_file).with_columns(
            pl.col("ts").str.to_datetime(time_zone="UTC")
        )
        typed.write_parquet(parquet)
        trees = {"old": export_tree(args.old_ref, root / "old"), "new": ROOT}
        rows: list[dict[str, object]] = []
        for r in range(args.rounds):
            for name, tree in trees.items():
                argv = [str(tree), str(values_file), str(parquet), str(args.poll), str(args.reps)]
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, *argv],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                rows.append({"round": r, "tree": name, **json.loads(out)})
                print(json.dumps(rows[-1]), flush=True)
    cols = ["parse", "validate", "parquet_read", "parquet_validate"]
    print("\n| round | tree | " + " | ".join(cols) + " | parse + validate |")
    print("| --- | --- |" + " ---: |" * (len(cols) + 1))
    for row in rows:
        figs = " | ".join(f"{row[c]:.3f}" for c in cols)
        pv = float(row["parse"]) + float(row["validate"])  # type: ignore[arg-type]
        print(f"| {row['round']} | {row['tree']} | {figs} | {pv:.3f} |")


if __name__ == "__main__":
    main()
