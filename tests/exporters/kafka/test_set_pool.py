"""Partitions' sets applied side by side (``SetPool``) count as applied one after the other."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import orjson
import pytest

from exporters import catalog as cat
from exporters.books import Ledger
from exporters.ingest import IngestConfig
from exporters.kafka.partition import (
    NoStandardsError,
    OpenSets,
    PartitionId,
    PartitionState,
    SetPool,
    apply_threads,
    validate_poll,
)
from kpi.contract import Kind
from kpi.streams.messages import Messages, parse_messages
from tests.exporterkit import Feed, facilities_csv
from tests.exporters.kafka.pollkit import FACILITIES, TOPIC, partition_states, polls_of

PARTS = 4
N_ITEMS = 80


def _polls(per_poll: int) -> list[Messages]:
    """``PARTS`` partitions' messages (by item), with duplicates and bad messages among them."""
    rows = Feed().interleaved(0, N_ITEMS)
    values = [orjson.dumps(r) for r in rows]
    parts = [int(str(r["item_id"])[2:-2]) % PARTS for r in rows]
    for i in range(5, len(values), 41):  # a duplicate event id, in its item's partition
        values[i], parts[i] = values[i - 3], parts[i - 3]
    for i in range(9, len(values), 53):
        values[i] = b"{not json"
    return polls_of(values, parts, per_poll)


def _states(root: Path, data: Path) -> dict[int, PartitionState]:
    return partition_states(root, data, range(PARTS))


def _sets(per_poll: int) -> list[list[tuple[int, object, int]]]:
    """The polls as the shard gathers them: one set per partition per flush (two polls each)."""
    flushes: list[list[tuple[int, object, int]]] = []
    sets = OpenSets(max_seconds=3600, max_events=10**9)
    for n, batch in enumerate(_polls(per_poll)):
        ends = {s: o + 1 for s, o in zip(batch.sources, batch.rows, strict=True)}
        for source, share in validate_poll(parse_messages(batch, Kind.EVENTS), Kind.EVENTS).items():
            sets.add((TOPIC, int(source.rsplit("/", 1)[1])), share, ends[source])
        if n % 2:
            flushes.append([(p, share, end) for (_, p), share, end in sets.take()])
    flushes.append([(p, share, end) for (_, p), share, end in sets.take()])
    return flushes


def _consistent(ledger: Ledger) -> bool:
    """A published cut: every message up to its offset counted once (ingested or rejected)."""
    positions = ledger.positions or {}
    offset = sum(int(pos["offset"]) for pos in positions.values())
    counted = ledger.counters.total(cat.EXPORTER_EVENTS_INGESTED) + ledger.counters.total(
        cat.EXPORTER_EVENTS_REJECTED
    )
    return counted == offset


def test_sets_side_by_side_count_as_one_after_the_other(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    facilities_csv(data / "facilities.csv", FACILITIES)
    serial, parallel = _states(tmp_path / "a", data), _states(tmp_path / "b", data)
    one, pool = SetPool(1), SetPool(PARTS)
    # A reader (as the refresh thread) takes ledgers while the sets are applied.
    stop, torn, reads = threading.Event(), [], [0]

    def read() -> None:
        while not stop.is_set():
            for s in parallel.values():
                with s.lock:
                    ledger = s.books.ledger
                reads[0] += 1
                if not _consistent(ledger):
                    torn.append(ledger.positions)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for flush in _sets(60):
            assert one.apply([(serial[p], share, end) for p, share, end in flush]) == [None] * len(
                flush
            )
            failures = pool.apply([(parallel[p], share, end) for p, share, end in flush])
            assert failures == [None] * len(flush)
    finally:
        stop.set()
        reader.join()
        one.close()
        pool.close()
    assert reads[0] > 0 and torn == []
    for p in range(PARTS):
        a, b = serial[p], parallel[p]
        assert a.next_offset == b.next_offset and b.next_offset
        assert a.counters.counters == b.counters.counters
        assert a.counters.histograms == b.counters.histograms
        assert a.items.sort("item_id").equals(b.items.sort("item_id"))
        assert _consistent(b.books.ledger)
    # Independent count: the distinct acceptances among the messages (duplicates once).
    accepted = {
        orjson.loads(v)["event_id"]
        for batch in _polls(60)
        for v in batch.values
        if v is not None and v.startswith(b'{"') and orjson.loads(v)["event"] == "accepted"
    }
    assert sum(s.counters.total(cat.ITEMS_ACCEPTED) for s in parallel.values()) == len(accepted)
    for s in (*serial.values(), *parallel.values()):
        s.close()


def test_a_failed_set_leaves_the_others_applied(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for d in (good, bad):
        d.mkdir()
        facilities_csv(d / "facilities.csv", FACILITIES)
    (bad / "service-standards.yaml").write_text("not: [a, valid standard\n")
    states = {
        p: PartitionState(
            PartitionId(TOPIC, p, Kind.EVENTS),
            IngestConfig(bad if p == 1 else good, tmp_path / "state" / f"{TOPIC}-{p}"),
        )
        for p in range(PARTS)
    }
    pool = SetPool(PARTS)
    flush = _sets(1000)[0]
    failures = pool.apply([(states[p], share, end) for p, share, end in flush])
    by_part = dict(zip([p for p, _, _ in flush], failures, strict=True))
    assert isinstance(by_part.pop(1), NoStandardsError)
    assert by_part and all(f is None for f in by_part.values())
    assert states[1].next_offset is None
    assert all(states[p].next_offset for p in by_part)
    with pytest.raises(ValueError, match="one set per partition"):
        pool.apply([(states[0], flush[0][1], 1), (states[0], flush[0][1], 2)])
    pool.close()
    for s in states.values():
        s.close()


def test_apply_threads_default_to_the_cores() -> None:
    assert apply_threads(3) == 3
    assert 1 <= apply_threads(0) <= (os.cpu_count() or 1)


def test_sets_under_way_keep_their_partition_in_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    facilities_csv(data / "facilities.csv", FACILITIES)
    states = _states(tmp_path / "s", data)
    first, second = _sets(1000)[0], _sets(1000)[0]
    pool = SetPool(PARTS)
    pool.start([(states[p], share, end) for p, share, end in first])
    # A second set of a partition with one under way would race it: refused.
    p0, share0, end0 = second[0]
    with pytest.raises(ValueError, match="under way"):
        pool.start([(states[p0], share0, end0)])
    done = pool.wait()
    assert sorted(d.state.pid.partition for d in done) == sorted(p for p, _, _ in first)
    assert all(d.failure is None for d in done)
    assert pool.wait() == [] and pool.ready() == []
    assert all(states[p].next_offset == end for p, _, end in first)
    ingested = {p: s.counters.total(cat.EXPORTER_EVENTS_INGESTED) for p, s in states.items()}
    rejected = {p: s.counters.total(cat.EXPORTER_EVENTS_REJECTED) for p, s in states.items()}
    # One thread: the sets are applied when started; ``ready`` hands them over.
    inline = SetPool(1)
    inline.start([(states[p], share, end) for p, share, end in second])
    assert len(inline.ready()) == len(second) and inline.ready() == []
    # The same records again are duplicates: nothing more ingested, all of them rejected.
    for p, share, _ in second:
        s = states[p]
        assert s.counters.total(cat.EXPORTER_EVENTS_INGESTED) == ingested[p]
        again = share.good.height + share.bad.height
        assert s.counters.total(cat.EXPORTER_EVENTS_REJECTED) == rejected[p] + again
    pool.close()
    for s in states.values():
        s.close()
