"""Item lifecycle: hand-computed cases and the incremental-merge property."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reference import utc

from kpi.contract import EVENT_TYPES
from kpi.lifecycle import (
    LIFECYCLE_SCHEMA,
    STATE_SCHEMA,
    build_lifecycle,
    build_state,
    collect_state,
    collect_state_counted,
    empty_state,
    event_partials,
    lifecycle,
    merge_events,
    reduce_states,
)
from kpi.standards import DEFAULT_STANDARDS

Row = dict[str, Any]


def check(kit: Any, rows: list[Row], as_of: str | None = None) -> dict[str, Row]:
    """The engine's lifecycle, asserted equal to the reference's."""
    got = kit.lifecycle(rows, as_of)
    assert got == reference.lifecycle(rows, DEFAULT_STANDARDS, utc(as_of) if as_of else None)
    return got


def route(kit: Any, item: str = "A") -> list[Row]:
    return [
        kit.ev(item, "accepted", "2027-01-11T02:00", "C1"),
        kit.ev(item, "arrived", "2027-01-11T06:00", "P1"),
        kit.ev(item, "departed", "2027-01-11T08:00", "P1"),
        kit.ev(item, "arrived", "2027-01-12T03:00", "D1"),
        kit.ev(item, "out_for_delivery", "2027-01-12T04:00", "D1"),
        kit.ev(item, "delivered", "2027-01-12T05:00", "D1"),
    ]


def test_schema_and_full_route(kit: Any) -> None:
    table = build_lifecycle(kit.events(route(kit)), DEFAULT_STANDARDS).collect()
    assert table.schema == pl.Schema(LIFECYCLE_SCHEMA)
    (a,) = check(kit, route(kit)).values()
    assert a == {
        "item_id": "A",
        "accepted_at": utc("2027-01-11T02:00"),
        "product": "express",
        "origin": "CN-BJ",
        "destination": "CN-SH",
        "promised_by": utc("2027-01-13T15:59:59.999999"),  # end of the 13th in Shanghai
        "first_attempt_at": utc("2027-01-12T05:00"),
        "first_attempt_outcome": "delivered",
        "delivered_at": utc("2027-01-12T05:00"),
        "returned_at": None,
        "last_event": "delivered",
        "last_event_at": utc("2027-01-12T05:00"),
        "last_facility": "D1",
        "finished": True,
    }
    assert build_state(kit.events(route(kit))).collect().schema == pl.Schema(STATE_SCHEMA)


def test_duplicates_and_out_of_order_events(kit: Any) -> None:
    rows = route(kit)
    once = check(kit, rows)
    assert check(kit, rows[::-1] + rows[2:4] + rows) == once


def test_events_after_as_of_are_ignored(kit: Any) -> None:
    rows = [*route(kit, "A"), kit.ev("B", "accepted", "2027-01-12T05:00:00.000001")]
    items = check(kit, rows, as_of="2027-01-12T04:59:59.999999")
    assert set(items) == {"A"}  # B has no event yet
    a = items["A"]
    assert a["delivered_at"] is None and a["first_attempt_at"] is None
    assert a["last_event"] == "out_for_delivery" and a["last_facility"] == "D1"
    assert a["finished"] is False
    # An event exactly at as-of counts.
    items = check(kit, rows, as_of="2027-01-12T05:00")
    assert items["A"]["delivered_at"] == utc("2027-01-12T05:00")
    assert items["A"]["finished"] is True


def test_item_never_accepted(kit: Any) -> None:
    rows = [
        kit.ev("N", "arrived", "2027-01-11T06:00", "P1"),
        kit.ev("N", "delivered", "2027-01-11T09:00", "D1"),
    ]
    (n,) = check(kit, rows).values()
    assert n["accepted_at"] is None and n["promised_by"] is None
    assert n["product"] is None and n["origin"] is None and n["destination"] is None
    assert n["delivered_at"] == utc("2027-01-11T09:00") and n["finished"] is True


def test_earliest_acceptance_wins_and_gives_product_and_regions(kit: Any) -> None:
    rows = [
        kit.ev("A", "accepted", "2027-01-11T05:00", product="standard", destination="CN-GD"),
        kit.ev("A", "accepted", "2027-01-11T03:00", product="economy", origin="CN-SH"),
    ]
    (a,) = check(kit, rows).values()
    assert a["accepted_at"] == utc("2027-01-11T03:00")
    assert (a["product"], a["origin"], a["destination"]) == ("economy", "CN-SH", "CN-SH")


def test_acceptance_tie_smallest_event_id_wins(kit: Any) -> None:
    rows = [
        kit.ev("A", "accepted", "2027-01-11T03:00", product="standard", event_id="z9"),
        kit.ev(
            "A",
            "accepted",
            "2027-01-11T03:00",
            product="economy",
            event_id="a1",
            promised_by="2027-02-01T00:00",
        ),
    ]
    (a,) = check(kit, rows).values()
    assert a["product"] == "economy" and a["promised_by"] == utc("2027-02-01T00:00")
    assert check(kit, rows[::-1]) == {"A": a}


def test_last_event_tie_later_stage_then_greatest_facility(kit: Any) -> None:
    rows = [
        kit.ev("A", "accepted", "2027-01-11T03:00", "C1"),
        kit.ev("A", "departed", "2027-01-11T06:00", "P1"),
        kit.ev("A", "arrived", "2027-01-11T06:00", "P2"),
    ]
    (a,) = check(kit, rows).values()
    assert (a["last_event"], a["last_facility"]) == ("departed", "P1")
    rows = [
        kit.ev("B", "arrived", "2027-01-11T06:00", "P1"),
        kit.ev("B", "arrived", "2027-01-11T06:00", "P3"),
        kit.ev("B", "arrived", "2027-01-11T06:00", "P2"),
    ]
    (b,) = check(kit, rows).values()
    assert (b["last_event"], b["last_facility"]) == ("arrived", "P3")


def test_first_attempt_failed_then_delivered(kit: Any) -> None:
    rows = [
        kit.ev("A", "accepted", "2027-01-11T03:00"),
        kit.ev("A", "delivered", "2027-01-13T10:00", "D1"),
        kit.ev("A", "delivery_failed", "2027-01-12T10:00", "D1"),
        kit.ev("A", "delivered", "2027-01-13T12:00", "D2"),  # a second delivery scan
    ]
    (a,) = check(kit, rows).values()
    assert a["first_attempt_at"] == utc("2027-01-12T10:00")
    assert a["first_attempt_outcome"] == "delivery_failed"
    assert a["delivered_at"] == utc("2027-01-13T10:00")
    assert (a["last_event"], a["last_facility"]) == ("delivered", "D2")


def test_attempt_tie_failed_wins_first_attempt_delivered_wins_last(kit: Any) -> None:
    rows = [
        kit.ev("A", "delivered", "2027-01-12T10:00", "D1"),
        kit.ev("A", "delivery_failed", "2027-01-12T10:00", "D1"),
    ]
    (a,) = check(kit, rows).values()
    assert a["first_attempt_outcome"] == "delivery_failed"
    assert a["last_event"] == "delivered"


def test_returned_item(kit: Any) -> None:
    rows = [
        kit.ev("A", "accepted", "2027-01-11T03:00"),
        kit.ev("A", "delivery_failed", "2027-01-12T10:00", "D1"),
        kit.ev("A", "returned", "2027-01-15T10:00", "C1"),
        kit.ev("A", "returned", "2027-01-16T10:00", "C1"),
    ]
    (a,) = check(kit, rows).values()
    assert a["returned_at"] == utc("2027-01-15T10:00") and a["delivered_at"] is None
    assert a["finished"] is True and a["last_event"] == "returned"
    assert a["first_attempt_outcome"] == "delivery_failed"


def test_late_out_of_order_batch_changes_first_scans(kit: Any) -> None:
    first = [
        kit.ev("A", "accepted", "2027-01-11T05:00"),
        kit.ev("A", "delivered", "2027-01-13T05:00"),
    ]
    late = [
        kit.ev("A", "accepted", "2027-01-11T04:00", product="standard"),
        kit.ev("A", "delivery_failed", "2027-01-12T05:00", "D9"),
    ]
    state = merge_events(empty_state(), kit.events(first))
    state = merge_events(state, kit.events(late))
    state = merge_events(state, kit.events(first))  # replayed batch
    state = merge_events(state, kit.events([]))  # empty batch
    assert_frame_equal(
        state.sort("item_id"), build_state(kit.events(first + late)).collect().sort("item_id")
    )
    (a,) = lifecycle(state.lazy(), DEFAULT_STANDARDS).collect().to_dicts()
    assert a["product"] == "standard" and a["first_attempt_outcome"] == "delivery_failed"
    assert a["last_event"] == "delivered"


def test_acceptance_without_an_event_id_loses_a_tie_and_two_of_them_have_no_winner(
    kit: Any,
) -> None:
    # Unvalidated frames (the contract requires ids): the tie rule still decides.
    named = kit.ev("A", "accepted", "2027-01-11T03:00", product="economy", event_id="z9")
    unnamed = dict(kit.ev("A", "accepted", "2027-01-11T03:00", product="standard"), event_id=None)
    for rows in ([named, unnamed], [unnamed, named]):
        (a,) = build_state(kit.events(rows)).collect().to_dicts()
        assert (a["accepted_event_id"], a["product"]) == ("z9", "economy")
    other = dict(unnamed, product="express")
    (a,) = build_state(kit.events([unnamed, other])).collect().to_dicts()
    assert a["accepted_at"] == utc("2027-01-11T03:00") and a["accepted_event_id"] is None
    assert (a["product"], a["origin"], a["destination"]) == (None, None, None)


def test_events_without_an_item_id_are_one_item_of_their_own(kit: Any) -> None:
    rows = [
        dict(kit.ev("A", "accepted", "2027-01-11T03:00", product="economy"), item_id=None),
        dict(kit.ev("A", "delivered", "2027-01-12T03:00"), item_id=None),
        kit.ev("B", "accepted", "2027-01-11T04:00"),
    ]
    state = build_state(kit.events(rows)).collect()
    (n,) = state.filter(pl.col("item_id").is_null()).to_dicts()
    assert (n["accepted_at"], n["product"]) == (utc("2027-01-11T03:00"), "economy")
    assert n["delivered_at"] == utc("2027-01-12T03:00")
    # batch by batch a null id joins nothing: the earlier row stays as it was, B is merged
    first = merge_events(empty_state(), kit.events(rows[:1]))
    merged = merge_events(first, kit.events(rows[1:]))
    assert first.row(0) in merged.rows()
    assert_frame_equal(
        merged.filter(pl.col("item_id") == "B"), state.filter(pl.col("item_id") == "B")
    )


def test_reduce_states_adds_the_extra_aggregations_as_trailing_columns(kit: Any) -> None:
    rows = [*route(kit, "A"), kit.ev("B", "arrived", "2027-01-11T06:00", "P1")]
    partials = event_partials(kit.events(rows))
    got = reduce_states(
        partials, pl.len().alias("n"), pl.col("last_facility").n_unique().alias("places")
    ).collect()
    assert got.columns == [*STATE_SCHEMA, "n", "places"]
    assert sorted(got.select("item_id", "n", "places").rows()) == [("A", 6, 3), ("B", 1, 1)]
    assert_frame_equal(
        got.select(STATE_SCHEMA.keys()).sort("item_id"),
        build_state(kit.events(rows)).collect().sort("item_id"),
    )


# --- property: merging batches == building from all -------------------------------

BASE = dt.datetime(2027, 1, 11, tzinfo=dt.UTC)
# Few distinct instants, so ties (same ts, other event/facility) are common.
instants = st.one_of(
    st.integers(0, 12).map(lambda h: BASE + dt.timedelta(hours=6 * h)),
    st.integers(0, 10**11).map(lambda us: BASE + dt.timedelta(microseconds=us)),
)
raw_event = st.fixed_dictionaries(
    {
        "item_id": st.sampled_from(["I0", "I1", "I2", "I3", "I4"]),
        "event": st.sampled_from(EVENT_TYPES),
        "ts": instants,
        "facility": st.sampled_from(["F1", "F2", "F3"]),
        "product": st.sampled_from(["express", "standard", "economy", "mystery"]),
        "origin": st.sampled_from(["CN-BJ", "CN-SH", "CN-XZ"]),
        "destination": st.sampled_from(["CN-BJ", "CN-SH", "CN-XZ"]),
        "promised_by": st.none() | instants,
    }
)


def finish(raw: list[Row]) -> list[Row]:
    """Unique event ids; product/regions/promise only on acceptances, reason on failures."""
    out = []
    for i, r in enumerate(raw):
        row = dict(r, event_id=f"e{(i * 7919) % 1000:03d}", reason=None)
        if row["event"] != "accepted":
            row.update(product=None, origin=None, destination=None, promised_by=None)
        if row["event"] == "delivery_failed":
            row["reason"] = "addressee_absent"
        out.append(row)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.lists(raw_event, max_size=30), data=st.data())
def test_merging_batches_in_any_order_equals_building_from_all(
    kit: Any, raw: list[Row], data: st.DataObject
) -> None:
    events = finish(raw)
    n_batches = data.draw(st.integers(1, 6), label="batches")
    # Every event lands in some batch; some are replayed in other batches too.
    home = data.draw(
        st.lists(st.integers(0, n_batches - 1), min_size=len(events), max_size=len(events)),
        label="home",
    )
    extra = data.draw(
        st.lists(
            st.tuples(st.integers(0, max(len(events) - 1, 0)), st.integers(0, n_batches - 1)),
            max_size=10,
        ),
        label="duplicates",
    )
    batches: list[list[Row]] = [[] for _ in range(n_batches)]
    for ev, b in zip(events, home, strict=True):
        batches[b].append(ev)
    for i, b in extra:
        if events:
            batches[b].append(events[i])
    batches = data.draw(st.permutations(batches), label="order")
    batches = [data.draw(st.permutations(b)) for b in batches]

    state = empty_state()
    for batch in batches:
        state = merge_events(state, kit.events(list(batch)))
    whole = build_state(kit.events(events)).collect()
    assert_frame_equal(state.sort("item_id"), whole.sort("item_id"))

    got = lifecycle(state.lazy(), DEFAULT_STANDARDS).collect()
    assert {r["item_id"]: r for r in got.to_dicts()} == reference.lifecycle(
        events, DEFAULT_STANDARDS
    )


@settings(max_examples=50, deadline=None)
@given(raw=st.lists(raw_event, max_size=25), cut=st.integers(0, 13))
def test_as_of_equals_building_from_events_up_to_as_of(kit: Any, raw: list[Row], cut: int) -> None:
    events = finish(raw)
    as_of = BASE + dt.timedelta(hours=6 * cut)
    early = [e for e in events if e["ts"] <= as_of]
    assert_frame_equal(
        build_state(kit.events(events), as_of).collect().sort("item_id"),
        build_state(kit.events(early)).collect().sort("item_id"),
    )
    assert kit.lifecycle(events, as_of) == reference.lifecycle(events, DEFAULT_STANDARDS, as_of)
    # the report's one-pass path: the same state, plus the span and number of events used
    state, first, last, n = collect_state_counted(kit.events(events), as_of)
    assert_frame_equal(
        state.sort("item_id"), build_state(kit.events(early)).collect().sort("item_id")
    )
    spans = [e["ts"] for e in early]
    assert (first, last, n) == (min(spans, default=None), max(spans, default=None), len(early))
    assert collect_state(kit.events(events), as_of)[1:] == (first, last)


# --- the report's one-pass state: ``collect_state_counted`` ---------------------------


def test_counted_state_span_and_rows_by_hand(kit: Any) -> None:
    rows = [
        kit.ev("A", "accepted", "2027-01-11T02:00", "C1"),
        kit.ev("A", "delivered", "2027-01-12T05:00", "D1"),
        kit.ev("B", "arrived", "2027-01-10T23:00:00.000001", "P1"),  # the earliest: not A's
        kit.ev("B", "departed", "2027-01-11T04:00", "P1"),
        kit.ev("C", "arrived", None, "P2"),  # no time: not used, not counted
        kit.ev("B", "delivered", "2027-01-12T07:30", "D2"),  # the latest: B's
    ]
    state, first, last, n = collect_state_counted(kit.events(rows))
    assert state.schema == pl.Schema(STATE_SCHEMA)
    assert (first, last, n) == (utc("2027-01-10T23:00:00.000001"), utc("2027-01-12T07:30"), 5)
    assert sorted(state["item_id"].to_list()) == ["A", "B"]
    timed = [r for r in rows if r["ts"] is not None]
    got = lifecycle(state.lazy(), DEFAULT_STANDARDS).collect()
    assert {r["item_id"]: r for r in got.to_dicts()} == reference.lifecycle(
        timed, DEFAULT_STANDARDS
    )
    # as of the morning of the 11th: A's acceptance and B's first two events
    state, first, last, n = collect_state_counted(kit.events(rows), utc("2027-01-11T04:00"))
    assert (first, last, n) == (utc("2027-01-10T23:00:00.000001"), utc("2027-01-11T04:00"), 3)
    b = state.filter(pl.col("item_id") == "B").row(0, named=True)
    assert (b["delivered_at"], b["last_facility"]) == (None, "P1")
    # nothing used: an empty state in its schema, no span
    for events, as_of in ((rows[4:5], None), (rows, utc("2027-01-10T22:00"))):
        state, first, last, n = collect_state_counted(kit.events(events), as_of)
        assert state.is_empty() and state.schema == pl.Schema(STATE_SCHEMA)
        assert (first, last, n) == (None, None, 0)
