"""The per-event rules table (kpi/events.py) and the code that reads it agree with it.

Properties over the table: each event type, alone and against every other at the same
instant, sets what its row says, in the lifecycle and on the report's fast path.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from reference import utc

from kpi.contract import EVENT_REQUIRED_ON, EVENT_TYPES, UPU_ALIASES, UTC, EventType, Kind
from kpi.events import (
    EVENT_ENUM,
    EVENT_RULES,
    STAGE,
    Effect,
    EventRule,
    check_rules,
    event_key,
    events_with,
    key_has,
    key_ts,
)
from kpi.kpis.increments import event_increments
from kpi.lifecycle import RANK_BITS, collect_state, event_partials, lifecycle
from kpi.sources.folder import load_data_dir, source_files
from kpi.sources.validate import EVENT_NAMES
from kpi.standards import DEFAULT_STANDARDS
from kpi.state_scan import ScannedState, scan_state
from tests.conftest import write_rows

#: What each effect sets in a one-event state, written out by hand (not read from code).
SETS: dict[Effect, set[str]] = {
    Effect.ACCEPTS: {"accepted_at", "accepted_event_id", "product", "origin", "destination"},
    Effect.ATTEMPTS: {"attempt_key"},
    Effect.DELIVERS: {"delivered_at"},
    Effect.FAILS: set(),
    Effect.RETURNS: {"returned_at"},
    Effect.WAITS: set(),
}
ALWAYS = {"item_id", "last_key", "last_facility"}
RULES = {rule.name: rule for rule in EVENT_RULES}


def test_the_table_is_well_formed() -> None:
    names = [r.name for r in EVENT_RULES]
    aliases = [a for r in EVENT_RULES for a in r.aliases]
    assert len(set(names)) == len(names) and len(set(aliases)) == len(aliases)
    assert not {a.lower() for a in aliases} & set(names)
    # The stage rank is packed below the timestamp in RANK_BITS steps.
    assert len(EVENT_RULES) <= RANK_BITS
    # Exactly one way in, and the two ways out of the network.
    assert len(events_with(Effect.ACCEPTS)) == 1
    assert events_with(Effect.DELIVERS) and events_with(Effect.RETURNS)


def test_the_vocabulary_comes_from_the_table() -> None:
    assert tuple(r.name for r in EVENT_RULES) == EVENT_TYPES
    assert list(EventType.categories) == list(EVENT_TYPES)
    assert {name: i for i, name in enumerate(EVENT_TYPES)} == STAGE
    assert {a: r.name for r in EVENT_RULES for a in r.aliases} == UPU_ALIASES
    assert {a.lower(): r.name for r in EVENT_RULES for a in r.aliases}.items() <= (
        EVENT_NAMES.items()
    )
    assert {r.name: r.requires for r in EVENT_RULES if r.requires} == EVENT_REQUIRED_ON


@pytest.mark.parametrize("rule", EVENT_RULES, ids=lambda r: r.name)
def test_one_event_sets_what_its_row_says(kit: Any, rule: Any) -> None:
    row = kit.ev("A", rule.name, "2027-01-11T08:00", "F1")
    (state,) = event_partials(kit.events([row])).collect().to_dicts()
    expected = ALWAYS.union(*(SETS[e] for e in rule.effects))
    assert {c for c, v in state.items() if v is not None} == expected


@pytest.mark.parametrize(
    ("first", "second"), list(itertools.combinations(EVENT_RULES, 2)), ids=lambda r: r.name
)
def test_ties_at_one_instant_follow_the_stage_rank(kit: Any, first: Any, second: Any) -> None:
    """Two events of one item at the same instant, in both read orders."""
    rows = [
        kit.ev("A", "accepted", "2027-01-11T01:00", "F0"),
        kit.ev("A", first.name, "2027-01-11T08:00", "F1"),
        kit.ev("A", second.name, "2027-01-11T08:00", "F2"),
    ]
    for order in (rows, rows[::-1]):
        state, _, _ = collect_state(kit.events(order))
        (item,) = lifecycle(state.lazy(), DEFAULT_STANDARDS).collect().to_dicts()
        assert item["last_event"] == second.name  # the later stage is the last scan
        assert item["last_facility"] == "F2"
        attempts = [r.name for r in (first, second) if Effect.ATTEMPTS in r.effects]
        if attempts:  # the earlier stage is the first attempt
            assert item["first_attempt_outcome"] == attempts[0]
            assert item["first_attempt_at"] == utc("2027-01-11T08:00")
        assert item["finished"] == any(
            {Effect.DELIVERS, Effect.RETURNS} & r.effects for r in (first, second)
        )


@pytest.mark.parametrize("rule", EVENT_RULES, ids=lambda r: r.name)
def test_the_fast_path_reads_each_event_as_the_lifecycle_does(
    kit: Any, rule: Any, tmp_path: Path
) -> None:
    rows = [
        kit.ev("A", "accepted", "2027-01-11T01:00", "F0"),
        kit.ev("A", rule.name, "2027-01-11T08:00", "F1"),
        kit.ev("B", rule.name, "2027-01-11T09:00", "F2"),
    ]
    text = [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows
    ]
    write_rows(tmp_path / "events" / "e.parquet", text, typed=True)
    fast = scan_state(source_files(tmp_path, Kind.EVENTS))
    assert isinstance(fast, ScannedState), fast
    general, _, _ = collect_state(load_data_dir(tmp_path).events)
    assert fast.state.sort("item_id").equals(general.sort("item_id"))


# --- the table's own checks and the key helpers ------------------------------------

_E = Effect


@pytest.mark.parametrize(
    "bad",
    [
        EventRule("arrived"),  # a name twice
        EventRule("x", aliases=("emb",)),  # an alias twice (any case)
        EventRule("x", aliases=("Arrived",)),  # an alias that is a name
        EventRule("x", frozenset({_E.ATTEMPTS})),  # an attempt that neither delivers nor fails
        EventRule("x", frozenset({_E.FAILS})),  # a failure that is no attempt
        EventRule("x", frozenset({_E.ATTEMPTS, _E.FAILS, _E.DELIVERS})),
    ],
    ids=lambda r: f"{r.name}:{sorted(r.effects)}:{r.aliases}",
)
def test_a_bad_row_fails_the_tables_check(bad: EventRule) -> None:
    with pytest.raises(ValueError, match=r"."):
        check_rules((*EVENT_RULES, bad))


def test_more_types_than_the_key_holds_fail_the_tables_check() -> None:
    extra = tuple(EventRule(f"x{i}") for i in range(RANK_BITS + 1 - len(EVENT_RULES)))
    check_rules((*EVENT_RULES, *extra[:-1]))  # exactly RANK_BITS types: fine
    with pytest.raises(ValueError, match="at most"):
        check_rules((*EVENT_RULES, *extra))


@pytest.mark.parametrize("dtype", [pl.String(), EVENT_ENUM])
def test_keys_pack_the_stage_below_the_instant_and_read_back(dtype: pl.DataType) -> None:
    instants = [
        utc("2027-01-11T08:00"),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ]
    rows = [(rule.name, ts) for rule in EVENT_RULES for ts in instants]
    frame = pl.DataFrame(rows, schema={"event": dtype, "ts": UTC}, orient="row")
    got = frame.select(event_key().alias("k")).with_columns(
        key_ts("k").alias("ts"),
        *(key_has("k", e).alias(e.value) for e in Effect),
    )
    for (name, ts), r in zip(rows, got.to_dicts(), strict=True):
        micros = (ts - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        assert r["k"] == micros * 8 + [x.name for x in EVENT_RULES].index(name)
        assert r["ts"] == ts
        assert {e for e in Effect if r[e.value]} == set(RULES[name].effects)
    unknown = pl.DataFrame(
        {"event": ["teleported", None], "ts": instants}, schema={"event": pl.String(), "ts": UTC}
    )
    assert unknown.select(event_key()).to_series().to_list() == [None, None]


#: What one event of each effect adds to the counters, written out by hand: (counter,
#: labels) for an item accepted before it (express, CN-BJ -> CN-SH, no promise given).
COUNTS: dict[Effect, set[tuple[str, tuple[str, ...]]]] = {
    Effect.ACCEPTS: {("accepted", ("express", "CN-BJ", "CN-SH"))},
    Effect.ATTEMPTS: set(),  # with DELIVERS or FAILS, below
    Effect.DELIVERS: {("delivered", ("express", "CN-SH")), ("transit", ("express", "CN-SH"))},
    Effect.FAILS: {("failures", ("refused",))},
    Effect.RETURNS: {("returned", ("express", "CN-SH"))},
    Effect.WAITS: set(),
}


@pytest.mark.parametrize("rule", EVENT_RULES, ids=lambda r: r.name)
def test_one_event_counts_what_its_row_says(kit: Any, rule: EventRule) -> None:
    before = collect_state(kit.events([kit.ev("A", "accepted", "2027-01-11T01:00", "F0")]))[0]
    row = kit.ev("A", rule.name, "2027-01-11T08:00", "F1", reason="refused")
    if Effect.ACCEPTS in rule.effects:
        before = before.clear()  # the item's first acceptance
    inc = event_increments(kit.events([row]).collect(), before, DEFAULT_STANDARDS)
    got = set()
    for counter in ("accepted", "delivered", "returned", "failures", "attempts", "transit"):
        for r in getattr(inc, counter).iter_rows(named=True):
            labels = tuple(v for k, v in r.items() if k not in ("count", "seconds", "on_time"))
            got.add((counter, labels))
    expected = set().union(*(COUNTS[e] for e in rule.effects))
    if Effect.ATTEMPTS in rule.effects:
        outcome = "delivered" if Effect.DELIVERS in rule.effects else "failed"
        expected.add(("attempts", ("express", "CN-SH", outcome, "first")))
    assert got == expected
