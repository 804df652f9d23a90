"""Exporter benchmark: ingest rates with 1M+ unfinished items, memory per item, /metrics latency.

Usage::

    .venv/bin/python bench/bench_exporter.py                # 1 M unfinished + 200 k finished items
    .venv/bin/python bench/bench_exporter.py --small        # quick smoke run (seconds)

Phases, all on one synthetic data folder (``--facilities`` sets the series count):

1. Parquet catch-up, in process: an ``Ingestor`` reads every Parquet file of the
   folder (micro-batches of at most 250 k rows) -> events/s; RSS growth and state
   bytes per tracked item; checkpoint write time and size.
2. Appended JSONL, in process: ``--jsonl-lines`` scans of existing items (and new
   acceptances) appended to ``events/live.jsonl`` at once, ingested with the 1 M+
   item lifecycle in memory -> events/s and mean micro-batch time.
3. One refresh (gauges from ``Snapshot.query`` + both expositions rendered), timed.
4. The real process: ``kpi exporter`` restores the checkpoint (restart time), then a
   writer process appends JSONL at ``--rate`` lines/s while this process scrapes
   ``/metrics`` back to back (Prometheus' Accept and gzip) -> p50/p99/max latency.

Results go to stdout as a Markdown table and to ``bench/out/exporter.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exporters import catalog as cat  # noqa: E402
from exporters.exposition import collectors, registry_of, render  # noqa: E402
from exporters.ingest import IngestConfig, Ingestor  # noqa: E402
from exporters.state import write_checkpoint  # noqa: E402
from exporters.view import SelfStats, build_view  # noqa: E402
from kpi.contract import COMPLAINT_CATEGORIES, PROVINCES  # noqa: E402
from tests.exporterkit import ExporterProcess, raw_samples, total  # noqa: E402

OUT: Final = ROOT / "bench" / "out" / "exporter.json"
T_END: Final = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)
PRODUCTS: Final = ("express", "standard", "economy")
TYPES: Final = ("collection", "processing", "delivery")
REASONS: Final = ("addressee_absent", "refused", "wrong_address", "no_access", "other")
PROMETHEUS_ACCEPT: Final = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
HOUR_US: Final = 3_600_000_000


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- data folder ---------------------------------------------------------------------------


def facilities(n: int, rng: np.random.Generator) -> pl.DataFrame:
    """``n`` facilities over the 31 provinces, all three types, thresholds 20-200."""
    k = np.arange(n)
    region = np.array(PROVINCES)[k % len(PROVINCES)]
    kind = np.array(TYPES)[(k // len(PROVINCES)) % 3]
    prefix = np.array(["CO", "PC", "DO"])[(k // len(PROVINCES)) % 3]
    return pl.DataFrame(
        {
            "facility": [f"{p}-{r[3:]}-{i:04d}" for p, r, i in zip(prefix, region, k, strict=True)],
            "name": [f"Facility {i}" for i in k],
            "type": kind,
            "region": region,
            "backlog_threshold": rng.integers(20, 200, n),
        }
    )


def _ids(first: int, n: int) -> pl.Expr:
    return pl.concat_str(
        pl.lit("BM"), (pl.int_range(n) + first).cast(pl.String).str.zfill(9), pl.lit("CN")
    )


def items_frame(first: int, n: int, rng: np.random.Generator, hours: float) -> pl.DataFrame:
    """Items with product, regions and an acceptance time in the ``hours`` before T_END."""
    acc_us = int(T_END.timestamp() * 1e6) - (rng.uniform(0, hours, n) * HOUR_US).astype(np.int64)
    return pl.select(
        _ids(first, n).alias("item_id"),
        pl.Series("product", np.array(PRODUCTS)[rng.integers(0, 3, n)]),
        pl.Series("origin", np.array(PROVINCES)[rng.integers(0, 31, n)]),
        pl.Series("destination", np.array(PROVINCES)[rng.integers(0, 31, n)]),
        pl.Series("t0", acc_us),
    )


def scans(
    items: pl.DataFrame,
    k: int,
    kind: str,
    facility: np.ndarray,
    offset_us: np.ndarray,
    reason: str | None = None,
) -> pl.DataFrame:
    """One scan of every item: event ``kind`` at ``facility`` ``offset_us`` after acceptance."""
    accepted = kind == "accepted"
    return items.select(
        (pl.col("item_id") + f"-{k:02d}").alias("event_id"),
        "item_id",
        pl.lit(kind).alias("event"),
        pl.from_epoch(pl.col("t0") + pl.Series(offset_us), time_unit="us")
        .dt.replace_time_zone("UTC")
        .alias("ts"),
        pl.Series("facility", facility),
        *(
            (pl.col(c) if accepted else pl.lit(None, pl.String)).alias(c)
            for c in ("product", "origin", "destination")
        ),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("promised_by"),
        pl.lit(reason, pl.String).alias("reason"),
    )


def build_folder(
    data: Path, unfinished: int, finished: int, n_fac: int, complaints: int, seed: int
) -> dict[str, int]:
    """Write facilities.csv, Parquet event files and a complaints file; returns counts."""
    rng = np.random.default_rng(seed)
    (data / "events").mkdir(parents=True)
    (data / "complaints").mkdir()
    fac = facilities(n_fac, rng)
    fac.write_csv(data / "facilities.csv")
    names = fac["facility"].to_numpy()

    def pick(n: int) -> np.ndarray:
        return names[rng.integers(0, n_fac, n)]

    def hours(lo: float, hi: float, n: int) -> np.ndarray:
        return (rng.uniform(lo, hi, n) * HOUR_US).astype(np.int64)

    open_items = items_frame(0, unfinished, rng, 72.0)
    n = unfinished
    frames = [
        scans(open_items, 0, "accepted", pick(n), np.zeros(n, np.int64)),
        # waiting somewhere, for 0 to ~60 h (every age band) until T_END
        scans(open_items, 1, "arrived", pick(n), hours(0.1, 12, n)),
    ]
    done = items_frame(unfinished, finished, rng, 240.0)
    m = finished
    failed = rng.random(m) < 0.2
    returned = rng.random(m) < 0.03
    frames += [
        scans(done, 0, "accepted", pick(m), np.zeros(m, np.int64)),
        scans(done, 1, "arrived", pick(m), hours(2, 10, m)),
        scans(done, 2, "departed", pick(m), hours(11, 20, m)),
        scans(done, 3, "out_for_delivery", pick(m), hours(30, 40, m)),
        scans(
            done.filter(pl.Series(failed)),
            4,
            "delivery_failed",
            pick(int(failed.sum())),
            hours(41, 45, int(failed.sum())),
            "addressee_absent",
        ),
        scans(
            done.filter(pl.Series(~returned)),
            5,
            "delivered",
            pick(int((~returned).sum())),
            hours(46, 230, int((~returned).sum())),
        ),
        scans(
            done.filter(pl.Series(returned)),
            5,
            "returned",
            pick(int(returned.sum())),
            hours(46, 230, int(returned.sum())),
        ),
    ]
    # An empty share (e.g. no finished items) has an untyped facility column: left out.
    events = pl.concat([f for f in frames if f.height]).sort("ts")
    per_file = 250_000
    for i in range(0, events.height, per_file):
        path = data / "events" / f"base-{i // per_file:04d}.parquet"
        events.slice(i, per_file).write_parquet(path.with_suffix(".parquet.tmp"))
        os.replace(path.with_suffix(".parquet.tmp"), path)
    opened = int(T_END.timestamp() * 1e6) - hours(1, 24 * 40, complaints)
    resolved = rng.random(complaints) < 0.7
    resolution = hours(0.5, 24 * 35, complaints)
    valid = rng.choice(np.array([True, False, None], dtype=object), complaints)
    comp = (
        pl.DataFrame(
            {
                "complaint_id": [f"CP{i:08d}" for i in range(complaints)],
                "opened_at": opened,
                "category": np.array(COMPLAINT_CATEGORIES)[rng.integers(0, 7, complaints)],
                "item_id": None,
                "region": np.array(PROVINCES)[rng.integers(0, 31, complaints)],
                "product": np.array(PRODUCTS)[rng.integers(0, 3, complaints)],
                "valid": pl.Series(valid.tolist(), dtype=pl.Boolean),
                "resolved_at": np.where(resolved, opened + resolution, 0),
            }
        )
        .with_columns(
            pl.from_epoch("opened_at", "us").dt.replace_time_zone("UTC"),
            pl.when(pl.Series(resolved))
            .then(pl.from_epoch("resolved_at", "us").dt.replace_time_zone("UTC"))
            .alias("resolved_at"),
        )
        .with_columns(pl.coalesce("resolved_at", "opened_at").alias("updated_at"))
    )
    comp.write_parquet(data / "complaints" / "complaints.parquet")
    return {"events": events.height, "complaints": complaints, "items": unfinished + finished}


def live_lines(unfinished: int, lines: int, seed: int, first_new: int) -> bytes:
    """JSONL scans after T_END: existing items move on (2/3), new items are accepted (1/3)."""
    rng = np.random.default_rng(seed)
    n_move = lines * 2 // 3
    moved = pl.DataFrame({"n": rng.integers(0, unfinished, n_move)}).unique(maintain_order=True)
    kinds = np.array(["departed", "arrived", "out_for_delivery", "delivered"])
    move = moved.select(
        pl.concat_str(pl.lit("BM"), pl.col("n").cast(pl.String).str.zfill(9), pl.lit("CN")).alias(
            "item_id"
        ),
        pl.Series("event", kinds[rng.integers(0, 4, moved.height)]),
    ).with_columns((pl.col("item_id") + f"-live{seed}").alias("event_id"))
    n_new = lines - move.height
    new = pl.select(
        _ids(first_new, n_new).alias("item_id"),
        pl.lit("accepted").alias("event"),
        pl.Series("product", np.array(PRODUCTS)[rng.integers(0, 3, n_new)]),
        pl.Series("origin", np.array(PROVINCES)[rng.integers(0, 31, n_new)]),
        pl.Series("destination", np.array(PROVINCES)[rng.integers(0, 31, n_new)]),
    ).with_columns((pl.col("item_id") + "-00").alias("event_id"))
    rows = pl.concat([move, new], how="diagonal").with_columns(
        pl.lit((T_END + dt.timedelta(hours=1)).isoformat()).alias("ts"),
        pl.lit("DO-SH-0001").alias("facility"),
    )
    order = rng.permutation(rows.height)
    return rows[order].write_ndjson().encode()


# --- phases --------------------------------------------------------------------------------------


def drain(ing: Ingestor) -> int:
    """Step until nothing is pending; returns the number of steps."""
    steps = 0
    while True:
        result = ing.step()
        steps += 1
        if not result.pending and result.rows == 0:
            return steps


def writer_main(src: str, dst: str, rate: float, seconds: float) -> None:
    """Append ``src``'s lines to ``dst`` at ``rate`` lines/s in 100 ms ticks (a separate process)."""
    lines = Path(src).read_bytes().splitlines(keepends=True)
    per_tick = max(1, int(rate / 10))
    start = time.monotonic()
    i = 0
    with open(dst, "ab") as fh:
        while i < len(lines) and time.monotonic() - start < seconds:
            fh.write(b"".join(lines[i : i + per_tick]))
            fh.flush()
            i += per_tick
            time.sleep(max(0.0, start + (i / per_tick) * 0.1 - time.monotonic()))
    print(i, flush=True)


def scrape_latency(port: int, seconds: float) -> tuple[list[float], int]:
    """Back-to-back scrapes with Prometheus' headers; (latencies in s, bytes of the last)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    out: list[float] = []
    size = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        conn.request("GET", "/metrics", headers=headers)
        body = conn.getresponse().read()
        out.append(time.perf_counter() - t)
        size = len(body)
    conn.close()
    return out, size


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-exporter-"))
    data, state = root / "data", root / "state"
    res: dict[str, Any] = {"unfinished_items": args.unfinished, "finished_items": args.finished}
    try:
        t = time.perf_counter()
        counts = build_folder(
            data, args.unfinished, args.finished, args.facilities, args.complaints, 1
        )
        res["build_s"] = time.perf_counter() - t
        res.update(counts)

        # 1. Parquet catch-up in process
        ing = Ingestor(IngestConfig(data, state, max_batch_rows=250_000))
        t = time.perf_counter()
        steps = drain(ing)
        res["parquet_s"] = time.perf_counter() - t
        res["parquet_events_per_s"] = counts["events"] / res["parquet_s"]
        res["parquet_steps"] = steps
        items = ing.ledger.items  # the compact state (exporters/compact.py), not decoded
        res["items_tracked"] = items.height
        state_bytes = items.nbytes + ing.seen.nbytes
        res["state_bytes_per_item"] = state_bytes / items.height
        t = time.perf_counter()
        ckpt_dir = write_checkpoint(state, ing.capture())
        res["checkpoint_s"] = time.perf_counter() - t
        res["checkpoint_mb"] = sum(p.stat().st_size for p in ckpt_dir.iterdir()) / 1e6

        # 2. appended JSONL with the 1M+ item lifecycle in memory
        live = live_lines(args.unfinished, args.jsonl_lines, 2, args.unfinished + args.finished)
        (data / "events" / "live.jsonl").write_bytes(live)
        t = time.perf_counter()
        steps = drain(ing)
        res["jsonl_s"] = time.perf_counter() - t
        res["jsonl_lines"] = live.count(b"\n")
        res["jsonl_events_per_s"] = res["jsonl_lines"] / res["jsonl_s"]
        res["jsonl_steps"] = steps
        unfinished_now = ing.items.filter(
            pl.col("delivered_at").is_null() & pl.col("returned_at").is_null()
        ).height
        res["unfinished_after_jsonl"] = unfinished_now
        res["items_after_jsonl"] = ing.ledger.items.height

        # 3. one refresh
        t = time.perf_counter()
        view = build_view(
            ing.items,
            ing.complaints,
            ing.reference.facilities,
            ing.reference.standards,
            T_END + dt.timedelta(hours=2),
            ing.counters.copy(),
            ing.local.copy(),
            SelfStats(),
        )
        res["refresh_gauges_s"] = time.perf_counter() - t
        holder = {"view": view}
        registry = registry_of(collectors(lambda: holder["view"]))
        t = time.perf_counter()
        expo = render(registry)
        res["render_s"] = time.perf_counter() - t
        res["series"] = len(raw_samples(expo.text.decode()))
        res["exposition_kb"] = len(expo.text) / 1024
        res["exposition_gzip_kb"] = len(expo.openmetrics_gzip) / 1024
        write_checkpoint(state, ing.capture())
        ing.close()

        # 4. the real process: restart from the checkpoint, scrape while a writer appends
        more = live_lines(args.unfinished, int(args.rate * args.seconds), 3, 50_000_000)
        src = root / "more.jsonl"
        src.write_bytes(more)
        empty = ExporterProcess(root / "empty", root / "empty-state", ["--log-level", "WARNING"])
        (root / "empty").mkdir()
        empty.start()
        empty.wait_ready(timeout=600)
        assert empty.process is not None
        res["exporter_rss_empty_mb"] = rss_bytes(empty.process.pid) / 1e6
        empty.terminate()
        proc = ExporterProcess(data, state, ["--refresh-interval", "5s", "--log-level", "WARNING"])
        t = time.perf_counter()
        proc.start()
        proc.wait_ready(timeout=600)
        res["restart_to_ready_s"] = time.perf_counter() - t
        assert proc.process is not None
        res["exporter_rss_ready_mb"] = rss_bytes(proc.process.pid) / 1e6
        res["rss_per_item_b"] = (
            (res["exporter_rss_ready_mb"] - res["exporter_rss_empty_mb"])
            * 1e6
            / res["items_after_jsonl"]
        )
        start_samples = proc.scrape() or {}
        rows0 = total(start_samples, cat.EXPORTER_EVENTS_INGESTED.series) + total(
            start_samples, cat.EXPORTER_EVENTS_REJECTED.series
        )
        writer = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--writer",
                str(src),
                str(data / "events" / "live.jsonl"),
                str(args.rate),
                str(args.seconds),
            ],
            stdout=subprocess.PIPE,
        )
        lat, size = scrape_latency(proc.port, args.seconds)
        written = int((writer.communicate(timeout=60)[0] or b"0").strip() or 0)
        res["live_lines_written"] = written
        res["live_rate"] = args.rate
        t = time.perf_counter()
        deadline = t + 300
        while time.perf_counter() < deadline:
            now = proc.scrape() or {}
            rows = total(now, cat.EXPORTER_EVENTS_INGESTED.series) + total(
                now, cat.EXPORTER_EVENTS_REJECTED.series
            )
            if rows >= rows0 + written:
                break
            time.sleep(0.5)
        # includes up to one refresh interval (5 s) before the counter shows it
        res["live_caught_up_after_s"] = time.perf_counter() - t
        res["scrapes"] = len(lat)
        res["scrape_p50_ms"] = pct(lat, 0.5) * 1000
        res["scrape_p99_ms"] = pct(lat, 0.99) * 1000
        res["scrape_max_ms"] = max(lat) * 1000
        res["scrape_mean_ms"] = statistics.fmean(lat) * 1000
        res["scrape_body_gzip_kb"] = size / 1024
        res["exporter_rss_mb"] = rss_bytes(proc.process.pid) / 1e6
        proc.terminate(timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res


def markdown(res: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    rows = [
        (
            "Items tracked (unfinished + finished)",
            f"{res['items_tracked']:,} ({res['unfinished_items']:,} unfinished)",
        ),
        (
            "Parquet catch-up",
            f"{res['events']:,} events in {res['parquet_s']:.1f} s = **{res['parquet_events_per_s']:,.0f} events/s**",
        ),
        (
            "Appended JSONL, all the items above in memory",
            f"{res['jsonl_lines']:,} lines in {res['jsonl_s']:.1f} s = **{res['jsonl_events_per_s']:,.0f} events/s** ({res['jsonl_steps']} micro-batches)",
        ),
        ("State per tracked item (lifecycle + seen ids)", f"{res['state_bytes_per_item']:.0f} B"),
        (
            "Exporter RSS: empty folder / restored with all items",
            f"{res['exporter_rss_empty_mb']:.0f} MB / {res['exporter_rss_ready_mb']:.0f} MB = **{res['rss_per_item_b']:.0f} B per tracked item** ({res['items_after_jsonl']:,} items)",
        ),
        (
            "Checkpoint write (items, seen ids, counters)",
            f"{res['checkpoint_s']:.2f} s, {res['checkpoint_mb']:.0f} MB",
        ),
        ("Refresh: gauges via Snapshot.query", f"{res['refresh_gauges_s']:.2f} s"),
        ("Refresh: render text + OpenMetrics + gzip", f"{res['render_s']:.2f} s"),
        (
            "Series exposed",
            f"{res['series']:,} ({res['exposition_kb']:.0f} KiB text, {res['exposition_gzip_kb']:.0f} KiB OpenMetrics gzip)",
        ),
        ("Restart from checkpoint to ready", f"{res['restart_to_ready_s']:.1f} s"),
        (
            "/metrics while ingesting",
            f"{res['scrapes']:,} scrapes, p50 **{res['scrape_p50_ms']:.2f} ms**, p99 **{res['scrape_p99_ms']:.2f} ms**, max {res['scrape_max_ms']:.1f} ms ({res['live_lines_written']:,} lines appended at {res['live_rate']:,.0f}/s meanwhile, all counted {res['live_caught_up_after_s']:.1f} s after the writer stopped)",
        ),
        ("Exporter RSS after the scraping window", f"{res['exporter_rss_mb']:.0f} MB"),
    ]
    return "| Measure | Result |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--unfinished", type=int, default=1_000_000)
    parser.add_argument("--finished", type=int, default=200_000)
    parser.add_argument("--facilities", type=int, default=2000)
    parser.add_argument("--complaints", type=int, default=20_000)
    parser.add_argument("--jsonl-lines", type=int, default=300_000)
    parser.add_argument(
        "--rate", type=float, default=5000.0, help="lines/s appended while scraping"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="scraping window")
    parser.add_argument("--small", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument(
        "--writer", nargs=4, metavar=("SRC", "DST", "RATE", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.writer:
        src, dst, rate, seconds = args.writer
        writer_main(src, dst, float(rate), float(seconds))
        return
    if args.small:
        args.unfinished, args.finished, args.facilities = 20_000, 5_000, 100
        args.complaints, args.jsonl_lines, args.seconds, args.rate = 500, 10_000, 5.0, 1000.0
    res = run(args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(markdown(res))


if __name__ == "__main__":
    main()
