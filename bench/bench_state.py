"""Exporter state at scale: RSS per tracked item as a slope, today's exporter beside this one.

Usage::

    .venv/bin/python bench/bench_state.py                       # 1 M and 5 M items, both trees
    .venv/bin/python bench/bench_state.py --sizes 1e6 1e7       # the slope between 1 M and 10 M
    .venv/bin/python bench/bench_state.py --old-ref main        # "today" = another git revision

For each exporter tree (``old``: a git revision exported to a temporary directory,
``new``: this working tree) and each size N, a child process writes a checkpoint of a
synthetic state of N items with that tree's own code (5/6 of the items accepted and
waiting at one of 2,000 facilities, 1/6 finished: attempted, delivered or returned;
2 event ids per waiting item and 5 per finished one in the dedup window; the stage
history of issue 19 where the tree keeps one: 5 stage scans per waiting item, accepted,
out of its origin, through a hub and arrived where it waits, 6 per finished one,
delivered there; every time in whole seconds; a tree with the stage summaries holds the
scans older than the default horizon, one day before the newest event, as one summary per
item: its own row, or in the item's row where the tree keeps it there), and a second,
fresh child restores an ``Ingestor`` from it and reports
its ``VmRSS`` before and after the restore, the peak (``VmHWM``, reset before it) during
one gauge refresh (``exporters.gauges.build_view_by_parts`` where the tree has it, else
``build_view`` of ``view_items()``), right after it and after ``--settle`` seconds idle.

The figure is the **slope** ``(RSS(N2) - RSS(N1)) / (N2 - N1)``: the memory one more
tracked item costs, without the interpreter and libraries. The dedup window is part of
it (7 event ids per 3 items at 8 bytes here); it is also reported apart, per event id,
as it scales with the events of the window rather than with the items.

Results: a Markdown table on stdout and ``bench/out/state.json``.
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
OUT: Final = ROOT / "bench" / "out" / "state.json"
T_END_US: Final = 1_801_440_000_000_000  # 2027-02-01T00:00Z
HOUR_US: Final = 3_600_000_000
N_FAC: Final = 2_000

_WRITE: Final = r"""
import sys, time
from pathlib import Path
import numpy as np
import polars as pl
sys.path.insert(0, sys.argv[1])
from kpi.contract import EVENT_TYPES, PROVINCES
from exporters import state as st
from exporters.store import CounterStore
from exporters.seen import hash_ids

n, out = int(sys.argv[2]), Path(sys.argv[3])
rng = np.random.default_rng(1)
T_END, H = %(t_end)d, %(hour)d
done = rng.random(n) < 1 / 6
returned = done & (rng.random(n) < 0.03)
S = 1_000_000  # times in whole seconds, as scanners (and the simulator) stamp them
acc = (T_END - (rng.uniform(0, 72, n) * H).astype(np.int64)) // S * S
last = (acc + (rng.uniform(0.1, 60, n) * H).astype(np.int64)) // S * S
rank = {e: i for i, e in enumerate(EVENT_TYPES)}
last_rank = np.where(done, np.where(returned, rank["returned"], rank["delivered"]), rank["arrived"])
us = lambda a: pl.Series(a).cast(pl.Datetime("us", "UTC"))
fac = np.array([f"DO-{i %% 31:02d}-{i:04d}" for i in range(%(n_fac)d)])
ids = pl.select(pl.concat_str(pl.lit("BM"), pl.int_range(n).cast(pl.String).str.zfill(9), pl.lit("CN")).alias("i"))["i"]
products = np.array(["express", "standard", "economy"])
provinces = np.array(PROVINCES)
items = pl.DataFrame({
    "item_id": ids,
    "accepted_at": us(acc),
    "accepted_event_id": ids + "-00",
    "product": products[rng.integers(0, 3, n)],
    "origin": provinces[rng.integers(0, 31, n)],
    "destination": provinces[rng.integers(0, 31, n)],
    "promised_by_given": pl.repeat(None, n, dtype=pl.Datetime("us", "UTC"), eager=True),
    "attempt_key": pl.Series(np.where(done, (last - H) * 8 + rank["delivered"], 0)).set(pl.Series(~done), None),
    "delivered_at": us(last).set(pl.Series(~done | returned), None),
    "returned_at": us(last).set(pl.Series(~returned), None),
    "last_key": pl.Series(last * 8 + last_rank),
    "last_facility": fac[rng.integers(0, len(fac), n)],
})
per_item = np.where(done, 5, 2)
eids = pl.DataFrame({"i": ids, "k": per_item}).select(
    pl.col("i").repeat_by("k").explode() + "-" + pl.int_ranges("k").explode().cast(pl.String).str.zfill(2)
).to_series()
seen = hash_ids(eids)
days = np.repeat(last // 86_400_000_000, per_item).astype(np.int64)
# The stage history (issue 19): a waiting item accepted, out of its origin, through a hub
# and arrived where it waits (5 scans); a finished one delivered there too (6).
from exporters.compact import item_key
origin, hub = rng.integers(0, len(fac), n), rng.integers(0, len(fac), n)
span = (last - acc) // S
keys = item_key(hash_ids(ids))
scans = [(acc, rank["accepted"], fac[origin], None), (acc + span // 5 * S, rank["departed"], fac[origin], None),
    (acc + 2 * span // 5 * S, rank["arrived"], fac[hub], None), (acc + 3 * span // 5 * S, rank["departed"], fac[hub], None),
    (np.where(done, acc + 4 * span // 5 * S, last), rank["arrived"], items["last_facility"].to_numpy(), None),
    (last, rank["delivered"], items["last_facility"].to_numpy(), done)]
history = pl.concat([pl.DataFrame({"item_id": keys, "key": pl.Series(ts * 8 + r), "facility": pl.Series(f, dtype=pl.String)})
    .filter(pl.Series(np.ones(n, bool) if only is None else only)) for ts, r, f, only in scans])
extra = {}
if hasattr(st, "COMPACT_STAGES_FORMAT"):  # the encoded stage history
    from exporters.compact_stages import CompactStages
    extra["stages"] = CompactStages().add(history)
    if hasattr(st, "STAGE_SUMMARY_FORMAT"):  # scans older than the horizon summarised
        from exporters.books_stages import stage_mark
        extra["stages"] = extra["stages"].fold(stage_mark(int(last.max()), 24 * H))
elif "stages" in st.Checkpoint.__dataclass_fields__:
    extra["stages"] = history
del history
if hasattr(st, "COMPACT_FORMAT"):  # the compact tree: its own encoding of the same state
    from exporters.compact import CompactItems
    items = CompactItems.from_state(items)
    if hasattr(extra.get("stages"), "attach"):  # summaries held in the item rows
        extra["stages"] = extra["stages"].attach(items)
        items = extra["stages"].items
ckpt = st.Checkpoint(**extra, seq=1, created_at=time.time(), files={}, counters=CounterStore(), items=items,
    complaints=pl.DataFrame(schema=st.COMPLAINT_STATE_SCHEMA), seen=seen, seen_days=days,
    rejects_bytes=0, last_event_us=int(last.max()))
out.mkdir(parents=True, exist_ok=True)
st.write_checkpoint(out, ckpt)
"""

_RESTORE: Final = r"""
import sys, gc, json, time, datetime as dt
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import polars as pl
from exporters.ingest import IngestConfig, Ingestor
from exporters.view import SelfStats, build_view
from exporters.store import CounterStore

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

data, state = Path(sys.argv[2]), Path(sys.argv[3])
res = {"rss_imports": rss()}
t = time.perf_counter()
ing = Ingestor(IngestConfig(data, state))
res["restore_s"] = time.perf_counter() - t
gc.collect()
res["rss_restored"] = rss()
led = ing.ledger
items = led.items
res["items"] = items.height
res["items_bytes"] = int(getattr(items, "nbytes", None) or items.estimated_size())
res["seen_bytes"] = int(led.seen.nbytes)
res["seen_ids"] = len(led.seen)
stages = getattr(led, "stages", None)
res["stage_scans"] = 0 if stages is None else stages.height
if hasattr(stages, "attached"):  # summaries in the item rows and apart (no union built)
    res["stage_summaries"] = stages.attached() + stages.side.height
else:
    res["stage_summaries"] = int(getattr(getattr(stages, "summary", None), "height", 0))
main = getattr(items, "main", None)
held = [c for c in ("arr_fac", "arr_key", "dep_fac", "dep_key", "dep2_fac", "dep2_key", "delivered",
    "first_dep_key") if main is not None and c in main.columns]
res["summaries_in_items_bytes"] = int(main.select(held).estimated_size()) if held else 0
res["stages_bytes"] = 0 if stages is None else int(getattr(stages, "nbytes", None) or stages.estimated_size())
def peak():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: the refresh's own peak
as_of = dt.datetime(2027, 2, 1, 2, tzinfo=dt.UTC)
t = time.perf_counter()
try:  # the refresh part by part (exporters.gauges), where the tree has it
    from exporters.gauges import build_view_by_parts
    view = build_view_by_parts([led], ing.reference.facilities, ing.reference.standards, as_of,
        CounterStore(), CounterStore(), SelfStats())
except ImportError:
    view = build_view(led.view_items(), led.complaints, ing.reference.facilities,
        ing.reference.standards, as_of, CounterStore(), CounterStore(), SelfStats())
res["refresh_s"] = time.perf_counter() - t
res["rss_refresh_peak"] = peak()
del view
gc.collect()
res["rss_after_refresh"] = rss()
time.sleep(float(sys.argv[4]))
res["rss_settled"] = rss()
print(json.dumps(res))
"""


def _data_dir(root: Path) -> Path:
    data = root / "data"
    (data / "events").mkdir(parents=True)
    lines = ["facility,name,type,region,backlog_threshold"]
    lines += [f"DO-{i % 31:02d}-{i:04d},F{i},delivery,Beijing,50" for i in range(N_FAC)]
    (data / "facilities.csv").write_text("\n".join(lines) + "\n")
    return data


def measure(tree: Path, n: int, root: Path, settle_s: float, malloc_conf: str) -> dict[str, Any]:
    """Write a checkpoint of ``n`` items with ``tree``'s code, restore it in a fresh process."""
    state = root / f"state-{tree.name}-{n}"
    params = {"t_end": T_END_US, "hour": HOUR_US, "n_fac": N_FAC}
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if malloc_conf:
        env["_RJEM_MALLOC_CONF"] = malloc_conf
    subprocess.run(
        [sys.executable, "-c", _WRITE % params, str(tree), str(n), str(state)], check=True, env=env
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _RESTORE,
            str(tree),
            str(_data_dir_cached(root)),
            str(state),
            str(settle_s),
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    shutil.rmtree(state, ignore_errors=True)
    res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return res


_DATA: dict[Path, Path] = {}


def _data_dir_cached(root: Path) -> Path:
    if root not in _DATA:
        _DATA[root] = _data_dir(root)
    return _DATA[root]


def slopes(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per-item RSS slopes between the smallest and largest size."""
    lo, hi = rows[0], rows[-1]
    dn = hi["items"] - lo["items"]
    return {
        "restored_b_per_item": (hi["rss_restored"] - lo["rss_restored"]) / dn,
        "after_refresh_b_per_item": (hi["rss_after_refresh"] - lo["rss_after_refresh"]) / dn,
        "refresh_peak_b_per_item": (hi["rss_refresh_peak"] - lo["rss_refresh_peak"]) / dn,
        "stages_b_per_item": (hi["stages_bytes"] - lo["stages_bytes"]) / dn,
        "settled_b_per_item": (hi["rss_settled"] - lo["rss_settled"]) / dn,
        "items_b_per_item": (hi["items_bytes"] - lo["items_bytes"]) / dn,
        "summaries_in_items_b_per_item": (
            hi.get("summaries_in_items_bytes", 0) - lo.get("summaries_in_items_bytes", 0)
        )
        / dn,
        "seen_b_per_item": (hi["seen_bytes"] - lo["seen_bytes"]) / dn,
        "seen_b_per_id": (hi["seen_bytes"] - lo["seen_bytes"]) / (hi["seen_ids"] - lo["seen_ids"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 5e6])
    parser.add_argument("--old-ref", default="main", help="git revision of today's exporter")
    parser.add_argument("--only", choices=["old", "new"], default=None)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle after the refresh")
    parser.add_argument(
        "--malloc-conf",
        default="",
        help="polars' jemalloc options for both trees (_RJEM_MALLOC_CONF), e.g. the exporter's",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-state-"))
    results: dict[str, Any] = {
        "sizes": [int(s) for s in args.sizes],
        "old_ref": args.old_ref,
        "malloc_conf": args.malloc_conf,
    }
    try:
        trees = {"old": export_tree(args.old_ref, root / "old"), "new": ROOT}
        for name, tree in trees.items():
            if args.only and name != args.only:
                continue
            rows = [measure(tree, int(n), root, args.settle, args.malloc_conf) for n in args.sizes]
            results[name] = {"rows": rows, **slopes(rows)}
            print(name, json.dumps(results[name], indent=1), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(
        "| tree | RSS/item restored | refresh peak | right after it | idle after it "
        "| items B/item (of which summaries) | stage history B/item | seen B/item | seen B/id |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ("old", "new"):
        if name in results:
            r = results[name]
            print(
                f"| {name} | {r['restored_b_per_item']:.0f} | {r['refresh_peak_b_per_item']:.0f} "
                f"| {r['after_refresh_b_per_item']:.0f} | {r['settled_b_per_item']:.0f} "
                f"| {r['items_b_per_item']:.1f} ({r['summaries_in_items_b_per_item']:.1f}) "
                f"| {r['stages_b_per_item']:.1f} "
                f"| {r['seen_b_per_item']:.1f} | {r['seen_b_per_id']:.1f} |"
            )


if __name__ == "__main__":
    main()
