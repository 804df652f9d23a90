"""Live mode: wall-clock events as JSON lines until stopped (appended to a file, or published)."""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC as UTC_TZ
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import orjson
import polars as pl

from kpi import contract
from kpi.simulate.calendar import build_calendar
from kpi.simulate.demand import S10_PREFIX_LIVE, SERIAL_SPACE, deadlines, item_ids
from kpi.simulate.events import events_frame
from kpi.simulate.network import build_network
from kpi.simulate.routing import route_items

#: Average scans per item, used to turn an events/second rate into items/second.
EVENTS_PER_ITEM: Final = 8.3


@dataclass(frozen=True)
class LiveRun:
    """What a live append wrote."""

    path: Path
    events: int


def _iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC_TZ).isoformat(timespec="microseconds")


_CHUNK_S: Final = 10.0


class _LiveFeed:
    """Items accepted in wall-clock chunks, their scans queued until their time comes."""

    def __init__(self, rate: float, seed: int, wall0: float, seconds_per_hour: float) -> None:
        self.rate = rate
        self.seed = seed
        self.wall0 = wall0
        self.sim0 = wall0 / 3600.0
        self.seconds_per_hour = seconds_per_hour
        self.net = build_network()
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 3])))
        # Serials start from the wall clock so consecutive runs do not reuse item ids.
        self.serial_base = int(wall0 * 1000) % SERIAL_SPACE
        self.pending: list[tuple[float, int, dict[str, str | None]]] = []
        self.made_until = wall0
        self.made_items = 0
        self.seq = 0

    def fill_until(self, wall: float) -> None:
        """Simulate chunks of new items until their scans cover ``wall``."""
        while self.made_until < wall:
            self._make_chunk(self.made_until, self.made_until + _CHUNK_S)
            self.made_until += _CHUNK_S

    def _make_chunk(self, w_from: float, w_to: float) -> None:
        m = max(1, math.ceil(self.rate * (w_to - w_from) / EVENTS_PER_ITEM))
        acc = np.sort(
            self.sim0
            + ((w_from - self.wall0) + self.rng.random(m) * (w_to - w_from)) / self.seconds_per_hour
        )
        cal = build_calendar(float(acc[0]) - 24.0, float(acc[-1]) + 24.0 * 30, festival=False)
        r = route_items(self.rng, self.net, acc, cal, None, False)
        base = self.serial_base + self.made_items
        ids = item_ids(r.product, self.seed, S10_PREFIX_LIVE, base=base)
        self.made_items += m
        promise = deadlines(acc, r.product, r.origin, r.dest)
        explicit = np.zeros(m, dtype=np.bool_)
        frame = events_frame(r, ids, promise, explicit, self.net, float(acc[0]), math.inf)
        sim_h = frame["ts"].dt.epoch("us").to_numpy() / 3.6e9
        due = self.wall0 + (sim_h - self.sim0) * self.seconds_per_hour
        rows = frame.drop("ts").with_columns(pl.col("promised_by").cast(pl.String)).to_dicts()
        for d, row in zip(due.tolist(), rows, strict=True):
            heapq.heappush(self.pending, (d, self.seq, row))
            self.seq += 1

    def due_lines(self, now: float, limit: int | None) -> list[bytes]:
        """JSON lines of the scans due by ``now`` (at most ``limit``), stamped with their time."""
        lines: list[bytes] = []
        while self.pending and self.pending[0][0] <= now:
            if limit is not None and len(lines) >= limit:
                break
            due_s, _, row = heapq.heappop(self.pending)
            rec = {**row, "ts": _iso_utc(due_s)}
            rec = {c: rec[c] for c in contract.EVENT_SCHEMA}
            lines.append(orjson.dumps(rec) + b"\n")
        return lines


def live_feed(
    rate: float,
    seed: int = 0,
    stop: threading.Event | None = None,
    max_events: int | None = None,
    seconds_per_hour: float = 2.0,
    clock: Callable[[], float] = time.time,
    tick: float = 0.25,
    wall0: float | None = None,
) -> Iterator[list[bytes]]:
    """Batches of wall-clock events (~``rate``/s) as JSON lines, each batch as it falls due.

    New items are accepted continuously and travel their route in compressed time
    (``seconds_per_hour`` wall seconds per simulated hour); each scan is yielded when its
    wall-clock time (from ``wall0``, default now) comes, with that time as ``ts``. Ends
    when ``stop`` is set or after ``max_events``. Where they go is the caller's: a file
    (``live_append``) or a Kafka topic (``kpi.simulate.live_kafka``).
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    stop = stop or threading.Event()
    wall0 = clock() if wall0 is None else wall0
    feed = _LiveFeed(rate, seed, wall0, seconds_per_hour)
    written = 0
    while not stop.is_set():
        now = clock()
        feed.fill_until(now + _CHUNK_S)
        left = None if max_events is None else max_events - written
        lines = feed.due_lines(now, left)
        if left is not None and len(lines) >= left:
            stop.set()
        if lines:
            written += len(lines)
            yield lines
        if not stop.is_set():
            stop.wait(tick)


def live_append(
    out_dir: Path,
    rate: float,
    seed: int = 0,
    stop: threading.Event | None = None,
    max_events: int | None = None,
    seconds_per_hour: float = 2.0,
    clock: Callable[[], float] = time.time,
    tick: float = 0.25,
) -> LiveRun:
    """Append wall-clock events (``live_feed``) as JSON lines to ``events/live-*.jsonl`` until stopped."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    wall0 = clock()
    events_dir = Path(out_dir) / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(wall0, UTC_TZ).strftime("%Y%m%dT%H%M%SZ")
    path = events_dir / f"live-{stamp}-s{seed}.jsonl"
    written = 0
    with path.open("ab") as fh:
        for lines in live_feed(
            rate, seed, stop, max_events, seconds_per_hour, clock, tick, wall0=wall0
        ):
            fh.write(b"".join(lines))
            fh.flush()
            written += len(lines)
    return LiveRun(path=path, events=written)
