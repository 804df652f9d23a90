"""A partition's polls gathered into one set (``OpenSets``) count as the polls applied one by one."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from exporters import catalog as cat
from exporters.kafka.partition import OpenSets, PartitionState, validate_poll
from kpi.contract import Kind
from kpi.streams.messages import Messages, parse_messages, source_name
from tests.exporterkit import Feed, facilities_csv
from tests.exporters.kafka.pollkit import FACILITIES, TOPIC, partition_states, polls_of

N_ITEMS = 60


def _rows() -> list[dict[str, object]]:
    return Feed().interleaved(0, N_ITEMS)


def _polls(per_poll: int) -> list[Messages]:
    """Two partitions' messages (row number mod 2) in polls of ``per_poll``, a duplicate and
    a bad message among them."""
    rows = _rows()
    values = [orjson.dumps(r) for r in rows]
    parts = [i % 2 for i in range(len(rows))]
    values[7] = values[3]  # a duplicate event id
    values[11] = b"{not json"
    return polls_of(values, parts, per_poll)


def _states(root: Path, data: Path) -> dict[int, PartitionState]:
    return partition_states(root, data, range(2))


def _ends(batch: Messages) -> dict[str, int]:
    return {s: o + 1 for s, o in zip(batch.sources, batch.rows, strict=True)}


def test_gathered_polls_count_as_the_polls_one_by_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    facilities_csv(data / "facilities.csv", FACILITIES)
    polls = _polls(37)
    one_by_one, gathered = _states(tmp_path / "a", data), _states(tmp_path / "b", data)
    sets = OpenSets(max_seconds=3600, max_events=10**9)
    for batch in polls:
        ends = _ends(batch)
        for source, share in validate_poll(parse_messages(batch, Kind.EVENTS), Kind.EVENTS).items():
            p = int(source.rsplit("/", 1)[1])
            one_by_one[p].apply(share, next_offset=ends[source])
            sets.add((TOPIC, p), share, ends[source])
        assert not sets.due(short_poll=False)  # young and small: kept open
    assert sets.due(short_poll=True)
    taken = sets.take()
    assert sorted(k for k, _, _ in taken) == [(TOPIC, 0), (TOPIC, 1)]
    for (_, p), share, end in taken:
        gathered[p].apply(share, next_offset=end)
    assert not sets.due(short_poll=True)  # nothing left open
    for p in (0, 1):
        a, b = one_by_one[p], gathered[p]
        assert a.next_offset == b.next_offset
        assert a.counters.counters == b.counters.counters
        assert a.counters.histograms == b.counters.histograms
        assert a.items.sort("item_id").equals(b.items.sort("item_id"))
        assert a.books.ledger.held.sort("item_id").equals(b.books.ledger.held.sort("item_id"))
    # Independent count: the acceptances among the messages left as they were.
    expected = sum(
        1 for i, r in enumerate(_rows()) if r["event"] == "accepted" and i not in (7, 11)
    )
    assert sum(s.counters.total(cat.ITEMS_ACCEPTED) for s in gathered.values()) == expected
    for s in (*one_by_one.values(), *gathered.values()):
        s.close()


def test_open_sets_are_due_by_age_and_size_and_dropped_on_rewind() -> None:
    share = validate_poll(
        parse_messages(Messages([b'{"event_id": "x"}'], [source_name(TOPIC, 0)], [5]), Kind.EVENTS),
        Kind.EVENTS,
    )[source_name(TOPIC, 0)]
    by_size = OpenSets(max_seconds=3600, max_events=2)
    by_size.add((TOPIC, 0), share, 6)
    assert not by_size.due(short_poll=False)
    by_size.add((TOPIC, 0), share, 7)
    assert by_size.due(short_poll=False)
    [(_, both, end)] = by_size.take()
    assert end == 7 and both.bad.height == 2
    by_age = OpenSets(max_seconds=0.05, max_events=10**9)
    by_age.add((TOPIC, 1), share, 6)
    assert not by_age.due(short_poll=False)
    time.sleep(0.06)
    assert by_age.due(short_poll=False)
    by_age.drop()
    assert by_age.take() == [] and not by_age.due(short_poll=True)
