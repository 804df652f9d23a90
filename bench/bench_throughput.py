"""Exporter ingest rates, today's exporter beside this one in one run: Parquet, JSONL, Kafka path.

Usage::

    .venv/bin/python bench/bench_throughput.py                    # 1 M unfinished + 200 k finished
    .venv/bin/python bench/bench_throughput.py --unfinished 100000 --finished 20000  # quick

One synthetic folder (``bench_exporter.build_folder``: accepted items waiting at one of
2,000 facilities, finished items with their whole history) is built once; then, for each
exporter tree (``old``: a git revision exported to a temporary directory, ``new``: this
working tree), interleaved ``--rounds`` times, a fresh child process measures:

1. **Parquet catch-up**: an ``Ingestor`` reads every Parquet file (micro-batches of at
   most 250 k rows) -> events/s.
2. **JSONL**: ``--jsonl-lines`` scans of existing items and new acceptances appended at
   once, ingested with the whole state in memory -> events/s.
3. **Kafka path, no broker**: the same folder's events as JSON messages (``kpi publish``'s
   encoding), keyed by item, spread over 8 partitions (item number mod 8), fed to one
   shard's code exactly as a poll is: ``parse_messages`` (one NDJSON buffer per poll) ->
   ``validate_poll`` -> each partition's ``PartitionState.apply``, polls of
   ``--poll`` messages (the shard's ``max_messages``): the JSONL phase's scans as messages
   with the whole folder's items tracked -> events/s. A tree with ``OpenSets`` gathers the
   polls' shares and applies them when due, with the shard's defaults (``ShardConfig``'s
   ``max_set_seconds``/``max_set_events``; the input's end counts as a short poll); an older tree applies each poll's
   share of each partition at once, as its shard did. Before it, the folder's events are
   caught up partition by partition in polls of 250 k messages of one partition (also
   timed: the catch-up rate of a shard whose polls each hold one partition). The due
   sets are applied as the shard applies them: through the tree's ``SetPool``
   (``--apply-threads``, default the cores: the partitions' sets side by side), or one
   partition after the other in a tree without it. The broker,
   the network and librdkafka's fetches are not in it (they run on their own threads).

``--kafka-lines N`` gives the Kafka scans phase its own N scans (else the JSONL phase's);
``--set-events A B ...`` cuts them into equal consecutive chunks, one per size, each fed
in sets of that many records per partition (no age limit; 0 = the shard's defaults): what
a set costs apart from its records. ``--kafka-only`` skips the Parquet and JSONL phases.

Rates are events (rows) per second of wall time in the child, and per second of CPU
time of the child (all its threads: ``time.process_time``), which a loaded machine
distorts far less than wall time; the machine is shared, so compare the two trees
within one run (ratios, ``--rounds`` interleaves them), not with other runs.
Results: a Markdown table on stdout and ``bench/out/throughput.json``. ``--breakdown``
adds the CPU time of each step of the Kafka scans phase per event (each tree's own
functions, timed by wrappers; run it with ``POLARS_MAX_THREADS=1`` so CPU time is work).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from benchkit import export_tree

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_exporter import build_folder, live_lines  # noqa: E402

OUT: Final = ROOT / "bench" / "out" / "throughput.json"

_CHILD: Final = r"""
import json, shutil, sys, time
from pathlib import Path
tree, folder, live, work, poll, breakdown, kafka_live, set_sizes, file_phases, threads = sys.argv[1:11]
sys.path.insert(0, tree)
import polars as pl
try:  # the engine the tree's ``kpi exporter`` runs its queries on
    from exporters.engine import use_in_memory_engine
    use_in_memory_engine()
except ImportError:
    pass
from exporters.ingest import IngestConfig, Ingestor
from exporters.kafka.partition import PartitionId, PartitionState, validate_poll
from kpi.contract import Kind
from kpi.streams.messages import Messages, parse_messages, source_name, to_messages

def drain(ing):
    while True:
        r = ing.step()
        if not r.pending and r.rows == 0:
            return

work = Path(work)
data = work / "data"
shutil.copytree(folder, data)
res = {}
lines = Path(live).read_bytes()
if file_phases == "1":
  ing = Ingestor(IngestConfig(data, work / "state", max_batch_rows=250_000))
  events = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in (data / "events").glob("*.parquet"))
  t, c = time.perf_counter(), time.process_time(); drain(ing); s = time.perf_counter() - t
  res["parquet_events"], res["parquet_s"], res["parquet_eps"] = events, s, events / s
  res["parquet_cpu_s"] = time.process_time() - c
  (data / "events" / "live.jsonl").write_bytes(lines)
  n = lines.count(b"\n")
  t, c = time.perf_counter(), time.process_time(); drain(ing); s = time.perf_counter() - t
  res["jsonl_events"], res["jsonl_s"], res["jsonl_eps"] = n, s, n / s
  res["jsonl_cpu_s"] = time.process_time() - c
  res["items_tracked"] = ing.ledger.items.height
  ing.close()
  del ing

topic, poll = "postal.events", int(poll)
def open_state(p):
    pid = PartitionId(topic, p, Kind.EVENTS)
    try:  # the shard's way since 778e695: the partition's own IngestConfig
        return PartitionState(pid, IngestConfig(data, work / "kafka" / pid.key))
    except TypeError:  # older trees: (pid, data_dir, state_root, max_future)
        return PartitionState(pid, data, work / "kafka", None)
states = {p: open_state(p) for p in range(8)}
import exporters.kafka.partition as KP
OpenSets = getattr(KP, "OpenSets", None)
# The shard's pool of set appliers (this tree's ``SetPool``, as ``KafkaShard._flush``
# uses it); threads "0" = the shard's default (the cores), "1" = one after the other.
pool = KP.SetPool(KP.apply_threads(int(threads))) if hasattr(KP, "SetPool") else None
res["apply_threads"] = pool.threads if pool is not None else 1
def feed(frame, set_events=0):
    keys, values = to_messages(frame.lazy(), Kind.EVENTS)
    parts = frame.select(pl.col("item_id").str.extract(r"(\d+)").cast(pl.Int64) % 8).to_series().to_list()
    offsets = {p: states[p].next_offset or 0 for p in range(8)}
    srcs, offs = [], []
    for p in parts:
        srcs.append(source_name(topic, p)); offs.append(offsets[p]); offsets[p] += 1
    # As the shard's _apply: the poll's next offset per partition in one pass; with
    # OpenSets (this tree) the shares are gathered and applied when due, as the shard
    # does (a short poll, age, size); the input's end is a short poll.
    # set_events > 0: each partition's set is ~set_events records (no age limit), to
    # measure what a set costs apart from its records.
    try:  # the shard's defaults
        from exporters.kafka.config import ShardConfig as SC
        defaults = (SC.max_set_seconds, SC.max_set_events)
    except (ImportError, AttributeError):
        defaults = (5.0, 500_000)
    limits = defaults if set_events <= 0 else (float("inf"), set_events * 8)
    sets = OpenSets(*limits) if OpenSets is not None else None
    def flush(last=False):
        taken = sets.take()
        if pool is None:  # trees before SetPool: one partition after the other
            for (_, p), share, end in taken:
                states[p].apply(share, next_offset=end)
            return
        # As KafkaShard._flush: the sets under way end first, then these start and the
        # next polls are parsed and validated while they are applied.
        done = pool.wait()
        pool.start([(states[p], share, end) for (_, p), share, end in taken])
        if last:
            done += pool.wait()
        failed = [d.failure for d in done if d.failure is not None]
        if failed:
            raise failed[0]
    # Polls no larger than a set (all partitions' shares) so the sets are that size.
    n_poll = poll if set_events <= 0 else min(poll, set_events * 8)
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, len(values), n_poll):
        batch = Messages(values[i:i + n_poll], srcs[i:i + n_poll], offs[i:i + n_poll])
        ends = {}
        for s_, o in zip(batch.sources, batch.rows):
            ends[s_] = o + 1
        shares = validate_poll(parse_messages(batch, Kind.EVENTS), Kind.EVENTS)
        for src, share in shares.items():
            p = int(src.rsplit("/", 1)[1])
            if sets is None:
                states[p].apply(share, next_offset=ends[src])
            else:
                sets.add((topic, p), share, ends[src])
        if sets is not None and sets.due(short_poll=len(batch.values) < n_poll):
            flush()
    if sets is not None:
        flush(last=True)
    return len(values), time.perf_counter() - t, time.process_time() - c
# Catch-up (not timed): the folder's events straight into each partition's state in
# large sets, as validated frames (what a long catch-up's polls become).
from exporters.kafka.partition import Validated
from kpi.sources.folder import validated
from kpi.sources.files import RawBatch
from kpi.sources.validate import ROW, SOURCE
hist = pl.concat([pl.read_parquet(p) for p in sorted((data / "events").glob("*.parquet"))]).sort("ts")
hist = hist.with_columns((pl.col("item_id").str.extract(r"(\d+)").cast(pl.Int64) % 8).alias("_p"))
t, c = time.perf_counter(), time.process_time()
for (p,), part in hist.partition_by("_p", as_dict=True).items():
    for i in range(0, part.height, 250_000):
        chunk = part.slice(i, 250_000).drop("_p")
        msgs = Messages(to_messages(chunk.lazy(), Kind.EVENTS)[1], [source_name(topic, p)] * chunk.height, list(range(i, i + chunk.height)))
        share = validate_poll(parse_messages(msgs, Kind.EVENTS), Kind.EVENTS)[source_name(topic, p)]
        states[p].apply(share, next_offset=i + chunk.height)
s = time.perf_counter() - t
res["kafka_catchup_events"], res["kafka_catchup_s"], res["kafka_catchup_eps"] = hist.height, s, hist.height / s
res["kafka_catchup_cpu_s"] = time.process_time() - c
del hist
scans = pl.read_ndjson(Path(kafka_live).read_bytes() if kafka_live else lines)
spent = {}
if breakdown == "1":
    # CPU time of the steps of the scans phase (each tree's own functions; a step absent
    # from a tree is left out). Nested: "books.apply" holds the stages, settle, counters.
    import functools, importlib
    def timed(module, attr, label):
        owner = importlib.import_module(module) if module else sys.modules[__name__]
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        f = getattr(owner, name, None)
        if f is None:
            return
        @functools.wraps(f)
        def wrapper(*a, **k):
            c0 = time.process_time()
            try:
                return f(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - c0
        setattr(owner, name, wrapper)
    for module, attr, label in [
        ("", "parse_messages", "parse"), ("", "validate_poll", "validate"),
        ("exporters.kafka.partition", "PartitionState.apply", "apply (intake + books)"),
        ("exporters.intake", "Intake.add_events", "intake"),
        ("exporters.books", "Books.apply", "books.apply"),
        ("exporters.books", "apply_stages", "books.apply: stage histograms"),
        ("exporters.books", "settle", "books.apply: lifecycle increments (settle)"),
        ("exporters.store", "CounterStore.observe", "counters.observe (also inside the stages)"),
        ("exporters.store", "CounterStore.add_counts", "counters.add_counts"),
        ("exporters.compact", "CompactItems.replace", "books.apply: item state replace"),
        ("exporters.compact", "CompactItems.rows", "item state rows"),
        ("exporters.compact", "CompactItems.retire", "books.apply: item state retire"),
        ("exporters.seen", "SeenWindow.contains", "intake: dedup window lookups"),
        ("exporters.intake", "hash_ids", "intake: id hashes"),
        ("exporters.intake", "_reduced", "intake: set summaries"),
        ("kpi.kpis.increments", "reduce_repeated", "settle: state reduction"),
        ("kpi.kpis.increments", "_increments", "settle: increments"),
    ]:
        timed(module, attr, label)
# The scans in equal consecutive chunks, one per set size (0: the shard's defaults).
sizes = [int(x) for x in set_sizes.split(",")]
step = -(-scans.height // len(sizes))
res["kafka_sets"] = []
for k, size in enumerate(sizes):
    spent.clear()
    n, s, cpu = feed(scans.slice(k * step, step), size)
    res["kafka_sets"].append({"set_events": size, "events": n, "s": s, "cpu_s": cpu,
        "breakdown_us": {k_: v / n * 1e6 for k_, v in sorted(spent.items(), key=lambda kv: -kv[1])}})
first = res["kafka_sets"][0]
res["kafka_breakdown_us"] = first["breakdown_us"]
res["kafka_events"], res["kafka_s"], res["kafka_eps"] = first["events"], first["s"], first["events"] / first["s"]
res["kafka_cpu_s"] = first["cpu_s"]
res["kafka_items_tracked"] = sum(st.ledger.items.height for st in states.values())
for st in states.values():
    st.close()
print(json.dumps(res))
"""


def child(
    tree: Path,
    folder: Path,
    live: Path,
    work: Path,
    args: argparse.Namespace,
    kafka_live: Path | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """One tree's three phases in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [
        str(tree),
        str(folder),
        str(live),
        str(work),
        str(args.poll),
        "1" if args.breakdown else "0",
        "" if kafka_live is None else str(kafka_live),
        ",".join(str(n) for n in args.set_events),
        "0" if args.kafka_only else "1",
        str(threads),
    ]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    shutil.rmtree(work, ignore_errors=True)
    res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--unfinished", type=int, default=1_000_000)
    parser.add_argument("--finished", type=int, default=200_000)
    parser.add_argument("--jsonl-lines", type=int, default=300_000)
    parser.add_argument("--poll", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--old-ref", default="main", help="git revision of today's exporter")
    parser.add_argument(
        "--new-ref", default=None, help="git revision of the new tree (default: the working tree)"
    )
    parser.add_argument("--only", choices=["old", "new"], default=None)
    parser.add_argument(
        "--kafka-lines",
        type=int,
        default=None,
        help="scans for the Kafka phase (default: the JSONL phase's lines)",
    )
    parser.add_argument(
        "--set-events",
        type=int,
        nargs="+",
        default=[0],
        help="records per partition per set, one chunk of the scans each (0: the shard's "
        "defaults, ShardConfig's max_set_seconds / max_set_events in all)",
    )
    parser.add_argument(
        "--apply-threads",
        type=int,
        nargs="+",
        default=[0],
        help="threads applying partitions' sets at once (SetPool; 0: the shard's default, "
        "the cores; 1: one partition after the other), one child of the new tree per value "
        "and round; the old tree's: --old-apply-threads",
    )
    parser.add_argument(
        "--old-apply-threads",
        type=int,
        nargs="+",
        default=[1],
        help="--apply-threads of the old tree (default 1: trees before SetPool have one)",
    )
    parser.add_argument(
        "--kafka-only", action="store_true", help="skip the Parquet and JSONL phases"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="CPU µs per event of each step of the Kafka scans phase (timers add a little)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    results: dict[str, Any] = {**vars(args), "old": [], "new": []}
    try:
        folder = root / "folder"
        results["folder"] = build_folder(folder, args.unfinished, args.finished, 2000, 1000, 1)
        live = root / "live.jsonl"
        first_new = args.unfinished + args.finished
        live.write_bytes(live_lines(args.unfinished, args.jsonl_lines, 2, first_new))
        kafka_live = None
        if args.kafka_lines is not None:
            kafka_live = root / "kafka-live.jsonl"
            kafka_live.write_bytes(live_lines(args.unfinished, args.kafka_lines, 3, first_new))
        new = ROOT if args.new_ref is None else export_tree(args.new_ref, root / "new")
        trees = {"old": export_tree(args.old_ref, root / "old"), "new": new}
        for r in range(args.rounds):
            for name, tree in trees.items():
                if args.only and name != args.only:
                    continue
                # The old tree applies one partition after the other unless asked.
                for threads in args.apply_threads if name == "new" else args.old_apply_threads:
                    work = root / f"work-{name}-{r}-{threads}"
                    res = child(tree, folder, live, work, args, kafka_live, threads)
                    results[name].append(res)
                    print(name, r, json.dumps(res), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    report(results, args.breakdown)


def _rate(runs: list[dict[str, Any]], phase: str, key: str) -> str:
    vals = [r[f"{phase}_events"] / r[f"{phase}_{key}"] for r in runs if f"{phase}_{key}" in r]
    return f"{max(vals):,.0f}" if vals else "-"


def report(results: dict[str, Any], breakdown: bool) -> None:
    """The Markdown tables: rates, rates by set size, and the breakdown."""
    phases = ("parquet", "jsonl", "kafka_catchup", "kafka")
    print(
        "| tree | rate | Parquet catch-up | JSONL | Kafka path, catch-up | Kafka path, 1 M+ items |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in ("old", "new"):
        runs = results[name]
        if not runs:
            continue
        print(f"| {name} | events/s | " + " | ".join(_rate(runs, p, "s") for p in phases) + " |")
        cpu = " | ".join(_rate(runs, p, "cpu_s") for p in phases)
        print(f"| {name} | events/CPU-s | {cpu} |")
    print(
        "\n| tree | apply threads | records per partition per set | events "
        "| wall events/s (best) | events/CPU-s (best) | CPU µs per event (best) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ("old", "new"):
        for threads in dict.fromkeys(r.get("apply_threads", 1) for r in results[name]):
            runs = [r for r in results[name] if r.get("apply_threads", 1) == threads]
            chunks = [c for r in runs for c in r.get("kafka_sets", [])]
            for size in dict.fromkeys(c["set_events"] for c in chunks):
                same = [c for c in chunks if c["set_events"] == size]
                best = min(c["cpu_s"] / c["events"] * 1e6 for c in same)
                wall = max(c["events"] / c["s"] for c in same)
                print(
                    f"| {name} | {threads} | {size or 'defaults'} | {same[0]['events']:,} "
                    f"| {wall:,.0f} | {1e6 / best:,.0f} | {best:.2f} |"
                )
    if not breakdown:
        return
    print("\n| Kafka scans, CPU µs per event | set size | old | new |")
    print("| --- | ---: | ---: | ---: |")
    sizes = dict.fromkeys(
        c["set_events"] for n in ("old", "new") for r in results[n] for c in r.get("kafka_sets", [])
    )
    for size in sizes:
        chunks = {
            n: [c for r in results[n] for c in r.get("kafka_sets", []) if c["set_events"] == size]
            for n in ("old", "new")
        }
        steps = {k for n in chunks for c in chunks[n] for k in c["breakdown_us"]}
        for step in sorted(steps):
            cells = [
                min(
                    (c["breakdown_us"].get(step, float("nan")) for c in chunks[n]),
                    default=float("nan"),
                )
                for n in ("old", "new")
            ]
            print(
                f"| {step} | {size or 'defaults'} | " + " | ".join(f"{v:.2f}" for v in cells) + " |"
            )


if __name__ == "__main__":
    main()
