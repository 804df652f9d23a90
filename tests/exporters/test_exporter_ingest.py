"""The micro-batch loop and its checkpoints: exactly-once across restarts, in process."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from exporters import catalog as cat
from exporters.ingest import IngestConfig, Ingestor
from exporters.service import ExporterConfig, ExporterService
from exporters.state import PROCESS_LOCAL, StateDirLock, latest_checkpoint, write_checkpoint
from exporters.store import CounterStore
from tests.exporterkit import Feed, append_jsonl, event, facilities_csv, write_parquet_atomic
from tests.exporters.parity import item_keys

FEED = Feed()


def drain(ing: Ingestor) -> None:
    while True:
        result = ing.step()
        if not result.pending and result.rows == 0:
            return


def counters(ing: Ingestor, local: bool = True) -> CounterStore:
    """The exporter's counters (``local=False``: without the process-local ones)."""
    out = ing.counters.copy()
    if not local:
        for spec in PROCESS_LOCAL:
            out.counters.pop(spec.name, None)
    return out


def checkpoint(ing: Ingestor, state: Path) -> None:
    write_checkpoint(state, ing.capture())


def test_restart_from_checkpoint_counts_exactly_once(tmp_path: Path) -> None:
    data, state, ref_state = tmp_path / "data", tmp_path / "state", tmp_path / "ref"
    live = data / "events" / "live.jsonl"
    rows = FEED.interleaved(0, 60)
    parts = [rows[:100], rows[100:250], rows[250:]]

    ing = Ingestor(IngestConfig(data, state))
    append_jsonl(live, parts[0])
    drain(ing)
    checkpoint(ing, state)
    append_jsonl(live, parts[1])
    drain(ing)  # applied in memory, never checkpointed: lost in the "crash"
    ing.close()

    append_jsonl(live, parts[2])
    again = Ingestor(IngestConfig(data, state))
    assert again.restored_from == 1
    drain(again)

    reference = Ingestor(IngestConfig(data, ref_state))
    drain(reference)
    assert counters(again) == counters(reference)
    assert counters(again).value(cat.EXPORTER_EVENTS_INGESTED) == len(rows)
    assert counters(again).total(cat.ITEMS_ACCEPTED) == 60
    delivered = sum(1 for r in rows if r["event"] == "delivered")
    assert counters(again).total(cat.ITEMS_DELIVERED) == delivered
    assert again.items.sort("item_id").equals(reference.items.sort("item_id"))


def test_duplicates_across_files_and_restarts_count_once(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    rows = FEED.lifecycle(1)
    append_jsonl(data / "events" / "a.jsonl", rows)
    ing = Ingestor(IngestConfig(data, state))
    drain(ing)
    checkpoint(ing, state)
    ing.close()
    # the same scans again, in another file and in Parquet, after a restart
    append_jsonl(data / "events" / "b.jsonl", rows[:3])
    write_parquet_atomic(data / "events" / "c.parquet", rows)
    again = Ingestor(IngestConfig(data, state))
    drain(again)
    store = again.counters
    assert store.value(cat.EXPORTER_EVENTS_INGESTED) == len(rows)
    assert store.value(cat.EXPORTER_EVENTS_REJECTED, ("duplicate",)) == 3 + len(rows)
    assert store.total(cat.ITEMS_ACCEPTED) == 1
    assert store.total(cat.ITEMS_DELIVERED) == 1


def test_rejects_file_is_cut_back_to_the_checkpoint(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    path = data / "events" / "x.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("not json\n")
    ing = Ingestor(IngestConfig(data, state))
    drain(ing)
    checkpoint(ing, state)
    with path.open("a") as fh:
        fh.write("[1, 2]\n")
    drain(ing)  # the second reject is written, then the process "dies"
    ing.close()
    assert len((state / "rejects.jsonl").read_text().splitlines()) == 2
    again = Ingestor(IngestConfig(data, state))
    drain(again)
    lines = [json.loads(x) for x in (state / "rejects.jsonl").read_text().splitlines()]
    assert [(r["source"], r["row"], r["reason"]) for r in lines] == [
        ("events/x.jsonl", 1, "malformed_row"),
        ("events/x.jsonl", 2, "malformed_row"),
    ]
    assert again.counters.value(cat.EXPORTER_EVENTS_REJECTED, ("malformed_row",)) == 2


def test_interrupted_checkpoint_write_is_ignored(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    append_jsonl(data / "events" / "a.jsonl", FEED.lifecycle(2))
    ing = Ingestor(IngestConfig(data, state))
    drain(ing)
    final = write_checkpoint(state, ing.capture())
    ing.close()
    # a later write that died before its rename: a .tmp directory with partial content
    broken = state / "checkpoint-000000000099.tmp"
    shutil.copytree(final, broken)
    (broken / "items.parquet").write_bytes(b"garbage")
    ckpt = latest_checkpoint(state)
    assert ckpt is not None and ckpt.seq == 1
    assert not broken.exists()


def test_a_delivery_read_before_its_acceptance_in_one_set_is_judged(tmp_path: Path) -> None:
    """Records visible together have no file order: the delivery (first line) gets the
    acceptance of the second line; nothing is late within a set."""
    data, state = tmp_path / "data", tmp_path / "state"
    t0 = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    rows = [
        event("d", "I", "delivered", t0 + dt.timedelta(hours=30)),
        event("a", "I", "accepted", t0, product="express", origin="CN-BJ", destination="CN-SH"),
    ]
    append_jsonl(data / "events" / "a.jsonl", rows)
    ing = Ingestor(IngestConfig(data, state))
    drain(ing)
    assert ing.counters.value(cat.ITEMS_DELIVERED, ("express", "CN-SH", "true")) == 1
    assert ing.counters.total(cat.ITEMS_DELIVERED) == 1
    assert ing.local.value(cat.EXPORTER_LATE_EVENTS) == 0
    assert ing.items.height == 1


def test_late_acceptance_is_waited_for_within_the_grace(tmp_path: Path) -> None:
    """Live: I's delivery waits (gauge 1) until its acceptance arrives 12 h later (event
    time), then counts on time; J's acceptance never comes: once the clock passes J's
    delivery + 24 h it counts `unknown`. The held delivery survives a restart."""
    data, state = tmp_path / "data", tmp_path / "state"
    live = data / "events" / "live.jsonl"
    t0 = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    h = dt.timedelta(hours=1)
    acc = {"product": "express", "origin": "CN-BJ", "destination": "CN-SH"}
    append_jsonl(
        live,
        [
            event("j", "J", "delivered", t0 + 2 * h),
            event("d", "I", "delivered", t0 + 20 * h),
            event("f", "I", "delivery_failed", t0 + 10 * h, reason="absent"),
        ],
    )
    ing = Ingestor(IngestConfig(data, state))
    drain(ing)
    assert ing.counters.total(cat.ITEMS_DELIVERED) == 0
    assert ing.counters.total(cat.DELIVERY_ATTEMPTS) == 0
    assert ing.counters.total(cat.DELIVERY_FAILURES) == 1  # no label to wait for
    assert ing.ledger.held_deliveries() == 2
    assert sorted(ing.ledger.view_items()["item_id"]) == item_keys("I", "J")  # the gauges see them
    checkpoint(ing, state)
    ing.close()

    ing = Ingestor(IngestConfig(data, state))
    assert ing.ledger.held_deliveries() == 2
    append_jsonl(live, [event("a", "I", "accepted", t0 + 8 * h, **acc)])
    drain(ing)
    assert ing.counters.value(cat.ITEMS_DELIVERED, ("express", "CN-SH", "true")) == 1
    assert ing.counters.value(cat.DELIVERY_ATTEMPTS, ("express", "CN-SH", "failed", "first")) == 1
    assert (
        ing.counters.value(cat.DELIVERY_ATTEMPTS, ("express", "CN-SH", "delivered", "repeat")) == 1
    )
    assert ing.ledger.held_deliveries() == 1
    # The clock reaches J's delivery + 24 h: not yet past it.
    append_jsonl(live, [event("x", "X", "arrived", t0 + 26 * h, facility="PC-1")])
    drain(ing)
    assert ing.ledger.held_deliveries() == 1
    append_jsonl(live, [event("y", "X", "arrived", t0 + 26 * h + dt.timedelta(seconds=1))])
    drain(ing)
    assert ing.ledger.held_deliveries() == 0
    assert ing.counters.value(cat.ITEMS_DELIVERED, ("unknown", "unknown", "unknown")) == 1
    assert ing.local.value(cat.EXPORTER_LATE_EVENTS) == 1  # I's acceptance


def test_state_dir_is_locked_by_one_exporter(tmp_path: Path) -> None:
    lock = StateDirLock(tmp_path)
    lock.acquire()
    try:
        service = ExporterService(ExporterConfig(tmp_path / "data", tmp_path, port=0))
        with pytest.raises(RuntimeError, match="in use by another exporter"):
            service.start()
    finally:
        lock.release()


def test_facilities_and_standards_are_reloaded_when_changed(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    data.mkdir()
    facilities_csv(data / "facilities.csv", [("PC-SH-01", "Hub", "processing", "CN-SH", 5)])
    ing = Ingestor(IngestConfig(data, state))
    assert ing.reference.facilities["facility"].to_list() == ["PC-SH-01"]
    facilities_csv(
        data / "facilities.csv",
        [
            ("PC-SH-01", "Hub", "processing", "CN-SH", 5),
            ("DO-SH-001", "Office", "delivery", "CN-SH", 9),
        ],
    )
    (data / "service-standards.yaml").write_text(
        "products:\n  express:\n    cutoff: '12:00'\n"
        "    days: {same_region: 1, other_region: 1, remote: 1}\n"
    )
    ing.step()
    assert ing.reference.facilities["facility"].to_list() == ["PC-SH-01", "DO-SH-001"]
    assert list(ing.reference.standards.products) == ["express"]
    (data / "service-standards.yaml").write_text("products: [not, a, mapping]\n")
    ing.step()  # a broken file is logged and the previous standards kept
    assert list(ing.reference.standards.products) == ["express"]


def test_finished_items_retire_and_their_late_scans_are_rejected(tmp_path: Path) -> None:
    """Retention 30 days of event time: A (delivered on day 1) leaves the state once an
    event of day 40 is read; B, never finished, stays however old. A's later scans are
    rejects (`retired_item`), also after a restart; the item counters are those of an
    exporter that keeps every item."""
    data, state, ref_state = tmp_path / "data", tmp_path / "state", tmp_path / "ref"
    t0 = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    live = data / "events" / "live.jsonl"
    acc = {"product": "express", "origin": "CN-BJ", "destination": "CN-SH"}
    append_jsonl(
        live,
        [
            event("a1", "A", "accepted", t0, **acc),
            event("a2", "A", "delivered", t0 + day),
            event("b1", "B", "accepted", t0, **acc),
            event("b2", "B", "arrived", t0 + day, facility="PC-1"),
        ],
    )
    month = dt.timedelta(days=30)
    ing = Ingestor(IngestConfig(data, state, retention=month))
    keep = Ingestor(IngestConfig(data, ref_state))
    drain(ing)
    assert sorted(ing.items["item_id"]) == item_keys("A", "B")  # day 1: nothing is old yet
    append_jsonl(live, [event("c1", "C", "accepted", t0 + 40 * day, **acc)])
    drain(ing)
    assert sorted(ing.items["item_id"]) == item_keys("B", "C")
    # A late second delivery of A: a new id, so only the retirement keeps it out.
    append_jsonl(live, [event("a3", "A", "delivered", t0 + 2 * day)])
    drain(ing)
    drain(keep)
    retired = ("retired_item",)
    assert ing.counters.value(cat.EXPORTER_EVENTS_REJECTED, retired) == 1
    for spec in (cat.ITEMS_ACCEPTED, cat.ITEMS_DELIVERED):
        assert ing.counters.total(spec) == keep.counters.total(spec)
    assert ing.counters.total(cat.ITEMS_DELIVERED) == 1
    # The one difference: the dropped scan is not counted as a repeat attempt.
    assert ing.counters.total(cat.DELIVERY_ATTEMPTS) == 1
    assert keep.counters.total(cat.DELIVERY_ATTEMPTS) == 2
    checkpoint(ing, state)
    ing.close()

    # After a restart: A's scans are still rejected; a new item D is counted as usual.
    append_jsonl(
        live,
        [
            event("a4", "A", "returned", t0 + 3 * day),
            event("d1", "D", "accepted", t0 + 41 * day, **acc),
        ],
    )
    again = Ingestor(IngestConfig(data, state, retention=month))
    drain(again)
    assert again.counters.value(cat.EXPORTER_EVENTS_REJECTED, retired) == 2
    assert again.counters.total(cat.ITEMS_RETURNED) == 0
    assert again.counters.total(cat.ITEMS_ACCEPTED) == 4
    assert sorted(again.items["item_id"]) == item_keys("B", "C", "D")
    rejects = [json.loads(line) for line in (state / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects if r["reason"] == "retired_item"] == [
        "retired_item",
        "retired_item",
    ]


def test_checkpoint_without_retired_ids_restores(tmp_path: Path) -> None:
    """Checkpoints written before retention existed have no retired.npy: none retired."""
    data, state = tmp_path / "data", tmp_path / "state"
    append_jsonl(data / "events" / "a.jsonl", FEED.interleaved(0, 5))
    ing = Ingestor(IngestConfig(data, state))
    drain(ing)
    checkpoint(ing, state)
    ing.close()
    ckpt = latest_checkpoint(state)
    assert ckpt is not None
    (state / f"checkpoint-{ckpt.seq:012d}" / "retired.npy").unlink()
    again = Ingestor(IngestConfig(data, state))
    assert again.restored_from == ckpt.seq and len(again.retired) == 0
    assert again.items.height == ing.items.height == 5


def _retirement_stream() -> list[dict[str, str | None]]:
    """Items a week apart (each finishes within days), with late scans of old items mixed
    in: under a 10-day retention, items retire while the stream goes on."""
    feed = Feed(spacing=dt.timedelta(days=7))
    rows = feed.interleaved(0, 8)
    out: list[dict[str, str | None]] = []
    for n, row in enumerate(rows):
        out.append(row)
        if n % 9 == 8:  # a second delivery of an item two weeks older, under a new id
            old = feed.lifecycle(max(0, n // 9 - 2))[-1]
            out.append({**old, "event_id": f"late-{n}", "event": "delivered"})
    return out


def test_retirement_does_not_depend_on_batching_or_restarts(tmp_path: Path) -> None:
    """The same stream arriving in the same parts (a drain after each), read in whole
    micro-batches, a line per micro-batch, and with a restart half-way: the same
    counters, rejects by reason, items and retired ids."""
    rows = _retirement_stream()
    ten_days = dt.timedelta(days=10)
    parts = [rows[i : i + 7] for i in range(0, len(rows), 7)]

    def run(name: str, max_bytes: int, restart_at: int | None = None) -> Ingestor:
        data, state = tmp_path / name / "data", tmp_path / name / "state"
        live = data / "events" / "live.jsonl"
        config = IngestConfig(data, state, max_batch_bytes=max_bytes, retention=ten_days)
        ing = Ingestor(config)
        for n, part in enumerate(parts):
            if n == restart_at:
                checkpoint(ing, state)
                ing.close()
                ing = Ingestor(config)
            append_jsonl(live, part)
            drain(ing)
        return ing

    whole = run("whole", 32 << 20)
    lines = run("lines", 1)
    restarted = run("restarted", 2_000, restart_at=len(parts) // 2)
    retired = whole.counters.value(cat.EXPORTER_EVENTS_REJECTED, ("retired_item",))
    assert retired > 0 and len(whole.retired) > 0  # the stream does retire items
    for other, local in ((lines, True), (restarted, False)):  # a restart resets them
        assert counters(other, local) == counters(whole, local)
        assert other.items.sort("item_id").equals(whole.items.sort("item_id"))
        assert np.array_equal(other.retired.array(), whole.retired.array())


def test_dedup_window_bounds_the_seen_ids_and_never_counts_twice(tmp_path: Path) -> None:
    """Window 2 days: a repeat within it is a `duplicate` (also after a restart); once the
    clock is past the window, the old ids are dropped and a repeat of one is `too_old`,
    never counted again."""
    data, state = tmp_path / "data", tmp_path / "state"
    t0 = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    acc = {"product": "express", "origin": "CN-BJ", "destination": "CN-SH"}
    first = [event("a", "I", "accepted", t0, **acc), event("d", "I", "delivered", t0 + day / 2)]
    config = IngestConfig(data, state, late_grace=day, dedup_window=2 * day)
    append_jsonl(data / "events" / "one.jsonl", first)
    ing = Ingestor(config)
    drain(ing)
    checkpoint(ing, state)
    ing.close()
    append_jsonl(data / "events" / "two.jsonl", first)  # the same scans again
    ing = Ingestor(config)
    drain(ing)
    rejected = cat.EXPORTER_EVENTS_REJECTED
    assert ing.counters.value(rejected, ("duplicate",)) == 2
    assert ing.counters.total(cat.ITEMS_DELIVERED) == 1
    assert len(ing.seen) == 2
    # Four days later: I's ids leave the window (and the memory).
    append_jsonl(data / "events" / "one.jsonl", [event("x", "J", "accepted", t0 + 4 * day, **acc)])
    drain(ing)
    assert len(ing.seen) == 1
    checkpoint(ing, state)
    ing.close()
    append_jsonl(data / "events" / "three.jsonl", first)
    ing = Ingestor(config)
    drain(ing)
    assert ing.counters.value(rejected, ("too_old",)) == 2
    assert ing.counters.total(cat.ITEMS_DELIVERED) == 1
    assert ing.counters.total(cat.ITEMS_ACCEPTED) == 2
    with pytest.raises(ValueError, match="at least the late grace"):
        Ingestor(IngestConfig(data, state, late_grace=2 * day, dedup_window=day))
