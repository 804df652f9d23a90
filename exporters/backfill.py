"""``kpi backfill``: a data folder's history as Prometheus TSDB blocks, recording rules included.

The engine (``kpi.kpis.steps``) gives every series' value at every step in event time;
this face turns them into OpenMetrics text with timestamps and lets ``promtool`` make
blocks of it:

1. one staging file per TSDB block range (2 h, aligned as promtool aligns blocks):
   ``promtool tsdb create-blocks-from openmetrics`` parses its whole input once per
   block range it spans, so one file per range keeps it linear; files are written
   window by window (never the whole history in memory), handed to promtool while
   the next is written, and deleted once their block exists;
2. recording rules: a throw-away Prometheus on 127.0.0.1 serves the new blocks to
   ``promtool tsdb create-blocks-from rules``; rules that read other rules' output go
   in later rounds, after the blocks of the rules they read are loaded;
3. everything is built in a temporary directory beside ``--out`` and moved in only
   when complete, so a failure leaves nothing half-written there.

The text: headers and series (name, labels, escaping, ``le`` text) are rendered by
prometheus_client's OpenMetrics encoder (``generate_latest``) once per series; the
per-sample tail `` <value> <timestamp>`` is appended with polars. The encoder can write
timestamps itself, but building one ``Sample`` per point costs ~2 µs in Python: a 30-day
history at 5-minute steps has ~90 M points (see docs/backfill.md and the bench).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from exporters import catalog as cat

#: Range of the blocks written (one of the TSDB's compaction ranges 2h, 6h, 18h, 54h, ...):
#: every block costs promtool an fsync'd write (~2 s here), so 18 h rather than the
#: default 2 h; still well below Prometheus' own largest block (10 % of the retention).
from exporters.backfill_rules import backfill_rules
from exporters.backfill_text import (
    BACKFILLED,
    BLOCK,
    DEFAULT_INSTANCE,
    DEFAULT_STEP,
    SPECS,
    THRESHOLD,
    BackfillError,
    Options,
    Result,
    Stager,
    _BlockMaker,
    _blocks,
    find_tool,
)
from exporters.store import bucket_edges_us
from kpi.kpis.steps import (
    StepDeltas,
    step_deltas,
    step_grid,
)
from kpi.sources.folder import load_data_dir

__all__ = [
    "BACKFILLED",
    "BLOCK",
    "DEFAULT_INSTANCE",
    "DEFAULT_STEP",
    "SPECS",
    "THRESHOLD",
    "BackfillError",
    "Options",
    "Result",
    "Stager",
    "backfill",
    "find_tool",
]


# --- the whole run ----------------------------------------------------------------------------


def _floor(t: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + ((t - epoch) // step) * step


def _work_dir(out: Path) -> Path:
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackfillError(f"cannot create the parent of --out ({parent}): {exc}") from exc
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.backfill-", dir=parent))


def _install(blocks: Path, out: Path) -> None:
    """Move the finished blocks to ``out``: a rename of the whole directory when ``out`` does
    not exist, else one rename per complete block (e.g. into a Prometheus data directory)."""
    if not out.exists():
        blocks.rename(out)
        return
    for name in _blocks(blocks):
        (blocks / name).rename(out / name)


def _check(opts: Options) -> str:
    """Refuse what cannot work before reading anything; returns promtool's path."""
    if opts.step < dt.timedelta(seconds=1) or opts.step % dt.timedelta(seconds=1):
        raise BackfillError("--step must be a whole number of seconds")
    promtool = find_tool("promtool")
    if opts.rules:
        find_tool("prometheus")
    if opts.out.exists() and not opts.out.is_dir():
        raise BackfillError(f"--out {opts.out} exists and is not a directory")
    if opts.start is not None and opts.end is not None and opts.end <= opts.start:
        raise BackfillError(
            f"--to ({opts.end.isoformat()}) must be after --from ({opts.start.isoformat()})"
        )
    if opts.as_of is not None and opts.end is not None and opts.end > opts.as_of:
        raise BackfillError("--to must not be after --as-of (nothing is known after it)")
    return promtool


def _range(opts: Options, events: pl.LazyFrame) -> tuple[dt.datetime, dt.datetime]:
    """The first and last step: the options, or the defaults from the events' span."""
    first, last = (
        events.select(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
        .collect()
        .row(0)
    )
    if first is None:
        raise BackfillError(f"no valid events in {opts.data_dir} (`kpi validate` says why)")
    second = dt.timedelta(seconds=1)
    start = _floor(opts.start or _floor(first, opts.step), second)
    if opts.end is not None:
        end = _floor(opts.end, second)
    elif opts.as_of is not None:
        end = _floor(opts.as_of, second)
    else:  # the first step after the newest event (the last counters count every event),
        # but never in the future: live scrapes will follow from now on.
        end = min(_floor(last, opts.step) + opts.step, _floor(dt.datetime.now(dt.UTC), second))
    if end <= start:
        raise BackfillError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    in_range = events.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).select(pl.len())
    if not in_range.collect().item():
        raise BackfillError(
            f"no events between {start.isoformat()} and {end.isoformat()}"
            f" (the folder's events span {first.isoformat()} .. {last.isoformat()})"
        )
    return start, end


def _metric_blocks(
    opts: Options, promtool: str, deltas: StepDeltas, work: Path, result: Result
) -> Path:
    """The metrics' blocks (in ``work/blocks``), staging file by staging file."""
    blocks = work / "blocks"
    staging = work / "staging"
    staging.mkdir()
    blocks.mkdir()
    stager = Stager(deltas, {"job": opts.job, "instance": opts.instance})
    result.series = stager.series_count
    maker = _BlockMaker(promtool, blocks, opts.jobs, opts.block)
    try:
        for k0, k1 in stager.windows(opts.block):
            path = staging / f"{k0:08d}.om"
            with path.open("wb") as sink:
                result.samples += stager.write(sink, k0, k1)
            maker.submit(path)
        maker.finish()
    finally:
        maker.abort()
    result.blocks = _blocks(blocks)
    return blocks


def backfill(opts: Options, progress: Callable[[str], None] = lambda _: None) -> Result:
    """Run a backfill (see the module docstring); raises ``BackfillError`` with the reason."""
    promtool = _check(opts)
    clock = time.monotonic()
    ds = load_data_dir(opts.data_dir)
    events, complaints = ds.events, ds.complaints
    if opts.as_of is not None:
        events = events.filter(pl.col("ts") <= opts.as_of)
        complaints = complaints.filter(pl.col("opened_at") <= opts.as_of)
    start, end = _range(opts, events)
    steps = step_grid(start, end, opts.step)
    result = Result(start=start, end=end, steps=steps.len())
    progress(f"{steps.len()} steps from {start.isoformat()} to {end.isoformat()}")
    deltas = step_deltas(
        events,
        complaints,
        ds.facilities,
        ds.standards,
        steps,
        transit_edges_us=bucket_edges_us(cat.TRANSIT_TIME),
        resolution_edges_us=bucket_edges_us(cat.COMPLAINT_RESOLUTION),
        stall_hours=opts.stall_hours,
    )
    result.seconds["engine"] = time.monotonic() - clock
    work = _work_dir(opts.out)
    try:
        clock = time.monotonic()
        blocks = _metric_blocks(opts, promtool, deltas, work, result)
        result.seconds["blocks"] = time.monotonic() - clock
        progress(f"{len(result.blocks)} blocks, {result.samples} samples, {result.series} series")
        if opts.rules:
            clock = time.monotonic()
            result.rule_blocks = backfill_rules(opts, blocks, work, start, end)
            result.seconds["rules"] = time.monotonic() - clock
            progress(f"{len(result.rule_blocks)} recording-rule blocks")
        _install(blocks, opts.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result
