"""The values a dimension is known to take, from the events: which events carry them is
the rules table's ``ACCEPTS`` (every event's facility)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from kpi.api.store import event_values
from kpi.contract import EVENT_SCHEMA
from kpi.events import EVENT_RULES, Effect, EventRule

T = dt.datetime(2027, 1, 11, 2, tzinfo=dt.UTC)


@pytest.mark.parametrize("rule", EVENT_RULES, ids=lambda r: r.name)
def test_only_accepting_events_carry_the_items_dimensions(rule: EventRule) -> None:
    name = rule.name
    accepts = Effect.ACCEPTS in rule.effects
    row = {
        "event_id": "e1",
        "item_id": "I1",
        "event": name,
        "ts": T,
        "facility": "F1",
        "product": "express",
        "origin": "CN-BJ",
        "destination": "CN-SH",
        "reason": "refused",
    }
    other = {**row, "event_id": "e0", "event": "arrived", "facility": "F0", "product": "economy"}
    events = pl.DataFrame([other, row], schema=EVENT_SCHEMA)
    got = event_values(events)
    carried = {"product": {"express"}, "origin": {"CN-BJ"}, "destination": {"CN-SH"}}
    for dim, values in carried.items():
        assert got[dim] == (frozenset(values) if accepts else frozenset()), dim
    assert got["facility"] == {"F0", "F1"}
