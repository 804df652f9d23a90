"""The per-event rules table (kpi/events.py) and the code that reads it agree with it.

Properties over the table: each event type, alone and against every other at the same
instant, sets what its row says, in the lifecycle and on the report's fast path.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from reference import utc

from kpi.contract import EVENT_REQUIRED_ON, EVENT_TYPES, UPU_ALIASES, EventType, Kind
from kpi.events import EVENT_RULES, STAGE, Effect, events_with
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
