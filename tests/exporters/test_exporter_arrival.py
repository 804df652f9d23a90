"""Arrival order: acceptances up to 12 h (event time) late, random cuts, restarts and crashes.

Property: when every item's acceptance arrives before the clock passes its first
attempt plus the late grace, the counters of a run fed in random sets, restarted and
crashed (restored from an older checkpoint) equal those of one exporter started once
on the finished folder and the report's all-time answers; no counter ever goes down.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporters import catalog as cat
from exporters.ingest import IngestConfig, Ingestor
from exporters.state import PROCESS_LOCAL, write_checkpoint
from exporters.store import CounterStore
from tests.exporterkit import (
    ExporterProcess,
    append_jsonl,
    counters_only,
    event,
    total,
    wait_until,
    write_parquet_atomic,
)
from tests.exporters.parity import exporter_counters, report_counters

T0 = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
PRODUCTS = ("express", "standard")
REGIONS = ("CN-SH", "CN-BJ", "CN-GD")


def stream(seed: int, items: int) -> list[dict[str, Any]]:
    """Events in arrival order: each item's scans in time order, its acceptance delayed
    to at most 12 h after its first attempt (or its last scan)."""
    rng = random.Random(seed)
    keyed: list[tuple[dt.datetime, int, dict[str, Any]]] = []
    for i in range(items):
        item = f"I{i:03d}"
        start = T0 + dt.timedelta(minutes=rng.randint(0, 72 * 60))
        origin, dest = rng.choice(REGIONS), rng.choice(REGIONS)
        acc = event(
            f"{item}-a",
            item,
            "accepted",
            start,
            facility=f"CO-{origin}",
            product=rng.choice(PRODUCTS),
            origin=origin,
            destination=dest,
            promised_by=start + rng.choice([24, 48, 60]) * H if rng.random() < 0.5 else None,
        )
        t = start
        scans: list[tuple[dt.datetime, dict[str, Any]]] = []
        for k, kind in enumerate(["arrived", "departed", "arrived", "out_for_delivery"]):
            t += dt.timedelta(minutes=rng.randint(30, 18 * 60))
            scans.append((t, event(f"{item}-{k}", item, kind, t, facility=f"F-{dest}")))
        end = rng.random()
        for k in range(rng.choice([0, 0, 1, 2])):
            t += dt.timedelta(hours=rng.randint(2, 30))
            scans.append((t, event(f"{item}-f{k}", item, "delivery_failed", t, reason="absent")))
        if end < 0.8:
            t += dt.timedelta(hours=rng.randint(1, 10))
            scans.append((t, event(f"{item}-d", item, "delivered", t)))
        elif end < 0.9:
            t += dt.timedelta(hours=rng.randint(1, 10))
            scans.append((t, event(f"{item}-r", item, "returned", t)))
        attempts = [
            s for s in scans if s[1]["event"] in ("delivery_failed", "delivered", "returned")
        ]
        anchor = attempts[0][0] if attempts else scans[-1][0]
        late = rng.random() < 0.5
        arrives = anchor + dt.timedelta(minutes=rng.randint(0, 12 * 60)) if late else start
        keyed.append((arrives, rng.getrandbits(16), acc))
        keyed.extend((ts, rng.getrandbits(16), row) for ts, row in scans)
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [row for _, _, row in keyed]


def config(data: Path, state: Path) -> IngestConfig:
    return IngestConfig(
        data,
        state,
        max_batch_bytes=8 << 10,
        late_grace=dt.timedelta(hours=24),
        dedup_window=dt.timedelta(days=14),
    )


def drain(ing: Ingestor) -> None:
    while ing.step().pending:
        pass


def comparable(store: CounterStore) -> dict[str, Any]:
    """Every counter and histogram (late events are process-local: not in the books)."""
    counters = store.counters
    hist = {
        name: {k: (v.buckets, v.sum_us, v.count) for k, v in series.items()}
        for name, series in store.histograms.items()
    }
    return {"counters": counters, "histograms": hist}


def not_lower(now: CounterStore, before: CounterStore) -> None:
    for name, series in before.counters.items():
        for key, value in series.items():
            assert now.counters.get(name, {}).get(key, 0) >= value, (name, key)


def write_set(data: Path, rows: list[dict[str, Any]], rng: random.Random, n: int) -> None:
    """One set of the stream into one of a few live files, or a new Parquet file."""
    if rng.random() < 0.2:
        write_parquet_atomic(data / "events" / f"drop-{n:03d}.parquet", rows)
    else:
        append_jsonl(data / "events" / rng.choice(["stream.jsonl", "a.jsonl", "z.jsonl"]), rows)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    sets=st.integers(2, 8),
    actions=st.lists(st.sampled_from(["go", "restart", "crash", "checkpoint"]), max_size=12),
)
def test_random_arrival_within_grace_restarts_and_crashes(
    tmp_path_factory: pytest.TempPathFactory, seed: int, sets: int, actions: list[str]
) -> None:
    root = tmp_path_factory.mktemp("arrival")
    data, state = root / "data", root / "state"
    rows = stream(seed, 20)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(rows)), sets - 1))
    parts = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    ing = Ingestor(config(data, state))
    highest = CounterStore()
    for n, part in enumerate(parts):
        write_set(data, part, rng, n)
        drain(ing)
        not_lower(ing.counters, highest)
        highest = ing.counters.copy()
        action = actions[n] if n < len(actions) else "go"
        if action == "checkpoint":
            write_checkpoint(state, ing.capture())
        elif action in ("restart", "crash"):
            if action == "restart":  # graceful: a final checkpoint
                write_checkpoint(state, ing.capture())
            ing.close()
            ing = Ingestor(config(data, state))  # a crash restores an older checkpoint
    drain(ing)
    not_lower(ing.counters, highest)
    once = Ingestor(config(data, root / "once"))
    drain(once)
    assert comparable(ing.counters) == comparable(once.counters)
    assert ing.ledger.held_deliveries() == once.ledger.held_deliveries() == 0
    want, want_transit = report_counters(data)
    got, got_transit = exporter_counters(ing.counters)
    for name in want:
        assert got[name] == want[name], name
    assert got_transit == want_transit
    assert ing.counters.total(cat.ITEMS_ACCEPTED) == 20


def test_the_stream_makes_deliveries_wait(tmp_path: Path) -> None:
    """The generator does exercise the hold: deliveries wait for late acceptances."""
    data = tmp_path / "data"
    rows = stream(1, 20)
    ing = Ingestor(config(data, tmp_path / "state"))
    held = 0
    for n in range(0, len(rows), 5):
        append_jsonl(data / "events" / "stream.jsonl", rows[n : n + 5])
        drain(ing)
        held = max(held, ing.ledger.held_deliveries())
    assert held > 0 and ing.ledger.held_deliveries() == 0


@pytest.mark.slow
def test_sigkill_with_late_acceptances_equals_one_run_on_the_finished_folder(
    tmp_path: Path,
) -> None:
    """A live feed (stream.jsonl, plus chunk files whose names sort first) with acceptances
    up to 12 h late, six SIGKILLs: every postal_* counter and histogram sample equals an
    exporter started once on the finished folder (process-local ones aside), and the report."""
    data, state = tmp_path / "data", tmp_path / "state"
    rows = stream(7, 60)
    rng = random.Random(7)
    args = [
        "--batch-interval",
        "0.05s",
        "--checkpoint-interval",
        "0.2s",
        "--refresh-interval",
        "0.1s",
    ]
    exporter = ExporterProcess(data, state, args).start()
    pos, kills, n = 0, 0, 0
    while pos < len(rows):
        take = rng.randint(5, 40)
        part, pos = rows[pos : pos + take], pos + take
        name = "stream.jsonl" if rng.random() < 0.6 else f"chunk-{n:03d}.jsonl"
        append_jsonl(data / "events" / name, part)
        n += 1
        time.sleep(rng.uniform(0.0, 0.3))
        if kills < 6 and rng.random() < 0.4:
            exporter.kill()
            kills += 1
            exporter = ExporterProcess(data, state, args).start()
    try:
        exporter.wait_ready()

        def all_read() -> bool:
            s = exporter.scrape()
            got = 0.0 if s is None else total(s, cat.EXPORTER_EVENTS_INGESTED.series)
            return got == len(rows)

        wait_until(all_read, timeout=60)
        final = exporter.scrape()
    finally:
        assert exporter.terminate() == 0, exporter.log()
    reference = ExporterProcess(data, tmp_path / "reference", args).start()
    try:
        reference.wait_ready()
        expected = reference.scrape()
    finally:
        reference.terminate()
    assert final is not None and expected is not None and kills == 6
    local = tuple(spec.name for spec in PROCESS_LOCAL)
    assert dict(counters_only(final, local)) == dict(counters_only(expected, local))
    assert total(final, cat.ITEMS_DELIVERED.series, on_time="unknown") == 0
    want, _ = report_counters(data)
    assert total(final, cat.ITEMS_DELIVERED.series) == sum(want[cat.ITEMS_DELIVERED.name].values())
