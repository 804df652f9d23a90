"""Hand-computed cases for every KPI and its edges (each also checked against the reference).

Default standard (Asia/Shanghai): an express item CN-BJ -> CN-SH accepted on Monday
2027-01-11 at 02:00Z (10:00 local) is promised by the end of Wednesday the 13th,
i.e. ``P = 2027-01-13T15:59:59.999999Z``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from reference import utc

from kpi.contract import EVENT_SCHEMA, FACILITY_SCHEMA
from kpi.events import EVENT_RULES, Effect, events_with
from kpi.kpis.catalog import AGE_BANDS, KPIS, KpiError
from kpi.kpis.functions import empty_facilities
from kpi.kpis.increments import event_increments
from kpi.kpis.query import KpiQuery, compute
from kpi.lifecycle import empty_state, merge_events
from kpi.standards import DEFAULT_STANDARDS

Row = dict[str, Any]
P = utc("2027-01-13T15:59:59.999999")
ACCEPT = "2027-01-11T02:00"
US = dt.timedelta(microseconds=1)
H = dt.timedelta(hours=1)


def delivered_item(kit: Any, item: str, delivered: dt.datetime | str, **acc: Any) -> list[Row]:
    return [
        kit.ev(item, "accepted", acc.pop("at", ACCEPT), "C1", **acc),
        kit.ev(item, "delivered", delivered, "D1"),
    ]


# --- flow: volumes and timeliness ----------------------------------------------------

TIMELINESS = (
    "accepted_items",
    "delivered_items",
    "delivered_without_acceptance",
    "on_time_items",
    "on_time_ratio",
    "late_1d_items",
    "late_2d_items",
    "late_3d_plus_items",
)


def test_on_time_and_late_bucket_edges(kit: Any) -> None:
    events = [
        *delivered_item(kit, "A", P),  # exactly at the deadline: on time
        *delivered_item(kit, "B", P + US),  # 1 us late: late_1d
        *delivered_item(kit, "C", P + 24 * H),  # exactly 24 h late: late_1d
        *delivered_item(kit, "D", P + 24 * H + US),  # late_2d
        *delivered_item(kit, "E", P + 48 * H),  # late_2d
        *delivered_item(kit, "F", P + 48 * H + US),  # late_3d_plus
        *delivered_item(kit, "G", "2027-01-12T00:00", product="mystery"),  # no promise
        kit.ev("N", "delivered", "2027-01-12T00:00", "D1"),  # no acceptance
        kit.ev("Q", "accepted", ACCEPT),  # accepted only
    ]
    got = kit.answer(events, TIMELINESS, as_of="2027-01-20T00:00")
    assert got[()] == {
        "accepted_items": 8,
        "delivered_items": 8,
        "delivered_without_acceptance": 1,
        "on_time_items": 1,
        "on_time_ratio": 1 / 6,  # G (no promise) and N (no acceptance) are not judged
        "late_1d_items": 2,
        "late_2d_items": 2,
        "late_3d_plus_items": 1,
    }


def test_explicit_promise_is_used_for_on_time(kit: Any) -> None:
    events = [
        *delivered_item(kit, "A", "2027-01-20T00:00", promised_by="2027-01-20T00:00"),
        *delivered_item(kit, "B", "2027-01-20T00:00", promised_by="2027-01-19T00:00"),
    ]
    got = kit.answer(events, ("on_time_items", "late_1d_items", "on_time_ratio"))
    assert got[()] == {"on_time_items": 1, "late_1d_items": 1, "on_time_ratio": 0.5}


def test_ratios_are_null_not_nan_when_nothing_delivered(kit: Any) -> None:
    events = [kit.ev("A", "accepted", ACCEPT)]
    names = (
        "on_time_ratio",
        "within_72h_ratio",
        "first_attempt_ratio",
        "transit_hours_mean",
        "transit_hours_p50",
        "transit_hours_p90",
        "delivered_items",
    )
    got = kit.answer(events, names)
    assert got[()] == dict.fromkeys(names[:-1]) | {"delivered_items": 0}


def test_window_from_inclusive_to_exclusive(kit: Any) -> None:
    events = [
        kit.ev("A", "accepted", "2027-01-11T00:00"),  # == from: in
        kit.ev("B", "accepted", "2027-01-11T23:59:59.999999"),  # in
        kit.ev("C", "accepted", "2027-01-12T00:00"),  # == to: out
        kit.ev("D", "accepted", "2027-01-10T23:59:59.999999"),  # before from: out
        kit.ev("A", "delivered", "2027-01-12T00:00"),  # delivered at `to`: out
        kit.ev("B", "returned", "2027-01-11T12:00"),
    ]
    got = kit.answer(
        events,
        ("accepted_items", "delivered_items", "returned_items"),
        start="2027-01-11T00:00",
        end="2027-01-12T00:00",
        as_of="2027-01-13T00:00",
    )
    assert got[()] == {"accepted_items": 2, "delivered_items": 0, "returned_items": 1}


def test_default_window_is_first_event_to_as_of_inclusive(kit: Any) -> None:
    events = [
        kit.ev("A", "accepted", "2027-01-11T00:00"),
        kit.ev("B", "accepted", "2027-01-12T00:00"),  # exactly at as-of: counted
        kit.ev("C", "accepted", "2027-01-12T00:00:00.000001"),  # after as-of: not seen
    ]
    got = kit.answer(events, ("accepted_items",), as_of="2027-01-12T00:00")
    assert got[()] == {"accepted_items": 2}
    # Without an as-of the snapshot is as of the latest event.
    assert kit.answer(events, ("accepted_items",))[()] == {"accepted_items": 3}


def test_as_of_before_the_first_event_is_an_empty_answer_not_an_error(kit: Any) -> None:
    events = [kit.ev("A", "accepted", "2027-01-11T00:00")]
    complaints = [kit.complaint("c1", "2027-01-09T00:00")]
    names = ("accepted_items", "complaints", "in_network_items", "open_complaints")
    got = kit.answer(events, names, complaints=complaints, as_of="2027-01-10T00:00")
    # The default window starts at the first event: empty; snapshots still count.
    assert got[()] == {
        "accepted_items": 0,
        "complaints": 0,
        "in_network_items": 0,
        "open_complaints": 1,
    }
    # An explicit `from` after `to` is still an error.
    snap = kit.snapshot(events, as_of="2027-01-10T00:00")
    with pytest.raises(KpiError, match="must be before"):
        kit.query(snap, "accepted_items", start="2027-01-10T00:00:00.000001")


def test_an_explicit_window_cannot_see_past_as_of(kit: Any) -> None:
    events = [
        kit.ev("A", "accepted", "2027-01-11T00:00"),
        kit.ev("B", "accepted", "2027-01-15T00:00"),
    ]
    got = kit.answer(
        events,
        ("accepted_items",),
        start="2027-01-01T00:00",
        end="2027-02-01T00:00",
        as_of="2027-01-12T00:00",
    )
    assert got[()] == {"accepted_items": 1}


def test_returned_items_counts_earliest_return(kit: Any) -> None:
    events = [
        kit.ev("A", "accepted", ACCEPT),
        kit.ev("A", "returned", "2027-01-11T10:00", "C1"),
        kit.ev("A", "returned", "2027-01-12T10:00", "C1"),  # second scan: not a second return
        kit.ev("B", "returned", "2027-01-12T11:00", "C1"),
    ]
    got = kit.answer(events, ("returned_items",), start="2027-01-12T00:00", end="2027-01-13T00:00")
    assert got[()] == {"returned_items": 1}


# --- flow: transit time and first attempt ---------------------------------------------


def test_transit_hours_mean_percentiles_and_72h(kit: Any) -> None:
    t0 = utc("2027-01-11T00:00")
    events: list[Row] = []
    for i, hours in enumerate([30, 10, 100, 72, 20]):
        events += delivered_item(kit, f"T{i}", t0 + hours * H, at=t0)
    events.append(kit.ev("N", "delivered", t0 + 500 * H, "D1"))  # no acceptance: excluded
    names = ("transit_hours_mean", "transit_hours_p50", "transit_hours_p90", "within_72h_ratio")
    got = kit.answer(events, names)
    assert got[()] == pytest.approx(
        {
            "transit_hours_mean": 46.4,  # (10+20+30+72+100) / 5
            "transit_hours_p50": 30.0,
            "transit_hours_p90": 88.8,  # 72 + 0.6 * (100 - 72)
            "within_72h_ratio": 0.8,  # exactly 72 h is within
        },
        abs=1e-9,
    )


def test_transit_percentiles_interpolate_between_two_items(kit: Any) -> None:
    t0 = utc("2027-01-11T00:00")
    events = [
        *delivered_item(kit, "A", t0 + 10 * H, at=t0),
        *delivered_item(kit, "B", t0 + 20 * H + US, at=t0),  # 72 h + 1 us would be outside
        *delivered_item(kit, "C", t0 + 72 * H + US, at=t0 + 0 * H),
    ]
    got = kit.answer(events, ("transit_hours_p50", "transit_hours_p90", "within_72h_ratio"))
    p50 = 20 + 1 / 3_600_000_000
    assert got[()]["transit_hours_p50"] == pytest.approx(p50, abs=1e-9)
    assert got[()]["transit_hours_p90"] == pytest.approx(p50 + 0.8 * (72 - 20), abs=1e-9)
    assert got[()]["within_72h_ratio"] == pytest.approx(2 / 3)


def test_first_attempt_ratio(kit: Any) -> None:
    events = [
        *delivered_item(kit, "K1", "2027-01-12T10:00"),  # first attempt delivered
        kit.ev("K2", "delivery_failed", "2027-01-12T09:00", "D1"),
        kit.ev("K2", "delivered", "2027-01-12T15:00", "D1"),  # delivered at 2nd attempt
        kit.ev("K3", "delivery_failed", "2027-01-12T09:00", "D1"),  # failed only
        kit.ev("K4", "delivered", "2027-01-12T09:00", "D1"),  # same instant: failed first
        kit.ev("K4", "delivery_failed", "2027-01-12T09:00", "D1"),
        kit.ev("K5", "delivery_failed", "2027-01-11T23:00", "D1"),  # first attempt before window
        kit.ev("K5", "delivered", "2027-01-12T09:00", "D1"),
    ]
    got = kit.answer(
        events,
        ("first_attempt_ratio", "delivered_items"),
        start="2027-01-12T00:00",
        end="2027-01-13T00:00",
    )
    assert got[()] == {"first_attempt_ratio": 0.25, "delivered_items": 4}


_RULE = {rule.name: rule for rule in EVENT_RULES}
_FIELD = {"reason": "addressee_absent", "product": "express", "origin": "CN-BJ"}


def _exporter_attempts(events: list[Row], one_by_one: bool) -> dict[tuple[str, str], int]:
    """The exporter's attempt counters, ``(attempt, outcome) -> count``, after the events
    are applied as one set or one event per set (in time order)."""
    sets = [[e] for e in sorted(events, key=lambda e: e["ts"])] if one_by_one else [events]
    state, out = empty_state(), {}
    for rows in sets:
        frame = pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row")
        inc = event_increments(frame, state, DEFAULT_STANDARDS)
        for r in inc.attempts.iter_rows(named=True):
            key = (r["attempt"], r["outcome"])
            out[key] = out.get(key, 0) + r["count"]
        state = merge_events(state, frame.lazy())
    return out


@pytest.mark.parametrize("kind", events_with(Effect.ATTEMPTS))
@pytest.mark.parametrize("one_by_one", [False, True])
def test_first_attempt_ratio_agrees_with_the_exporters_counters(
    kit: Any, kind: str, one_by_one: bool
) -> None:
    """For every attempting type of the table: the report counts a first attempt of that
    type a success exactly when the table says it delivers, and so do the exporter's
    counters (``outcome="delivered"``): a new delivering type cannot make them disagree."""
    fields = {f: _FIELD.get(f, "CN-SH") for f in _RULE[kind].requires}
    delivers = Effect.DELIVERS in _RULE[kind].effects
    events = [
        kit.ev("A", "accepted", ACCEPT, "C1"),
        kit.ev("A", kind, "2027-01-12T09:00", "D1", **fields),  # A's first attempt
        kit.ev("B", "accepted", ACCEPT, "C1"),
        kit.ev("B", "delivery_failed", "2027-01-12T09:00", "D1"),  # B's first attempt fails
        kit.ev("B", kind, "2027-01-12T15:00", "D1", **fields),  # a repeat
    ]
    outcome = "delivered" if delivers else "failed"
    want = {("first", "failed"): 1}
    for key in (("first", outcome), ("repeat", outcome)):
        want[key] = want.get(key, 0) + 1
    assert _exporter_attempts(events, one_by_one) == want

    snap = kit.snapshot(events)
    got = kit.one(snap, "first_attempt_ratio", end="2027-01-13T00:00")
    assert got["first_attempt_ratio"] == (0.5 if delivers else 0.0)
    firsts = sum(n for (attempt, _), n in want.items() if attempt == "first")
    assert got["first_attempt_ratio"] * firsts == want.get(("first", "delivered"), 0)


# --- dimensions and time buckets -------------------------------------------------------


def test_by_product_origin_destination_and_region(kit: Any) -> None:
    events = [
        *delivered_item(kit, "A", "2027-01-12T00:00", product="express", destination="CN-GD"),
        *delivered_item(kit, "B", "2027-01-12T00:00", product="standard", destination="CN-GD"),
        *delivered_item(kit, "C", "2027-01-12T00:00", product="express", origin="CN-SH"),
        kit.ev("N", "delivered", "2027-01-12T00:00", "D1"),
    ]
    by_region = kit.answer(events, ("delivered_items", "accepted_items"), by=["region"])
    assert by_region == {
        ("CN-GD",): {"delivered_items": 2, "accepted_items": 2},
        ("CN-SH",): {"delivered_items": 1, "accepted_items": 1},
        (None,): {"delivered_items": 1, "accepted_items": 0},  # never accepted: unknown region
    }
    got = kit.answer(events, ("delivered_items",), by=["product", "origin", "destination"])
    assert got == {
        ("express", "CN-BJ", "CN-GD"): {"delivered_items": 1},
        ("standard", "CN-BJ", "CN-GD"): {"delivered_items": 1},
        ("express", "CN-SH", "CN-SH"): {"delivered_items": 1},
        (None, None, None): {"delivered_items": 1},
    }


def test_day_bucket_in_time_zone(kit: Any) -> None:
    events = [kit.ev("A", "delivered", "2027-01-11T17:00", "D1")]
    sh = kit.answer(events, ("delivered_items",), granularity="day", tz="Asia/Shanghai")
    assert list(sh) == [(dt.datetime(2027, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=8))),)]
    snap = kit.snapshot(events)
    (period,) = kit.query(snap, "delivered_items", granularity="day", tz="Asia/Shanghai")["period"]
    assert period == dt.datetime(2027, 1, 12, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert period.date() == dt.date(2027, 1, 12)  # the period is in the asked time zone
    in_utc = kit.answer(events, ("delivered_items",), granularity="day")
    assert list(in_utc) == [(utc("2027-01-11T00:00"),)]


def test_hour_bucket_in_half_hour_zone(kit: Any) -> None:
    # 17:10Z is 22:40 in Kolkata (UTC+5:30): the local hour starts at 22:00 = 16:30Z.
    events = [kit.ev("A", "delivered", "2027-01-11T17:10", "D1")]
    got = kit.answer(events, ("delivered_items",), granularity="hour", tz="Asia/Kolkata")
    assert list(got) == [(utc("2027-01-11T16:30"),)]


def test_hour_and_day_buckets_across_dst_changes(kit: Any) -> None:
    events = [
        kit.ev("A", "delivered", "2027-03-14T06:30", "D1"),  # 01:30 EST, before the jump
        kit.ev("B", "delivered", "2027-03-14T07:30", "D1"),  # 03:30 EDT, after it
        kit.ev("C", "delivered", "2027-11-07T05:30", "D1"),  # 01:30 EDT (first pass)
        kit.ev("D", "delivered", "2027-11-07T06:30", "D1"),  # 01:30 EST (second pass)
    ]
    ny = "America/New_York"
    hours = kit.answer(events, ("delivered_items",), granularity="hour", tz=ny)
    assert sorted(k[0].astimezone(dt.UTC) for k in hours) == [
        utc("2027-03-14T06:00"),
        utc("2027-03-14T07:00"),
        utc("2027-11-07T05:00"),
        utc("2027-11-07T06:00"),  # the repeated hour is its own bucket
    ]
    days = kit.answer(events, ("delivered_items",), granularity="day", tz=ny)
    assert {k[0].astimezone(dt.UTC): v["delivered_items"] for k, v in days.items()} == {
        utc("2027-03-14T05:00"): 2,  # local midnight before the change is EST
        utc("2027-11-07T04:00"): 2,  # local midnight before the change is EDT
    }


def test_week_buckets_start_on_local_monday(kit: Any) -> None:
    events = [
        kit.ev("A", "delivered", "2027-01-17T15:59:59.999999", "D1"),  # Sun 23:59 Shanghai
        kit.ev("B", "delivered", "2027-01-17T16:00", "D1"),  # Mon 00:00 Shanghai
        kit.ev("C", "delivered", "2027-01-10T16:00", "D1"),  # Mon 11th 00:00 Shanghai
    ]
    got = kit.answer(events, ("delivered_items",), granularity="week", tz="Asia/Shanghai")
    assert {k[0].astimezone(dt.UTC): v["delivered_items"] for k, v in got.items()} == {
        utc("2027-01-10T16:00"): 2,  # week of Monday 11th
        utc("2027-01-17T16:00"): 1,  # week of Monday 18th
    }


def test_month_buckets(kit: Any) -> None:
    events = [
        kit.ev("A", "delivered", "2027-01-31T16:00", "D1"),  # 1 Feb in Shanghai
        kit.ev("B", "delivered", "2027-01-31T15:00", "D1"),
        kit.ev("C", "delivered", "2027-02-28T23:00", "D1"),
    ]
    sh = kit.answer(events, ("delivered_items",), granularity="month", tz="Asia/Shanghai")
    sh_date = {k[0].astimezone(ZoneInfo("Asia/Shanghai")).date() for k in sh}
    assert sh_date == {dt.date(2027, 1, 1), dt.date(2027, 2, 1), dt.date(2027, 3, 1)}
    assert {k[0]: v["delivered_items"] for k, v in sh.items()} == {
        utc("2026-12-31T16:00"): 1,
        utc("2027-01-31T16:00"): 1,
        utc("2027-02-28T16:00"): 1,
    }
    in_utc = kit.answer(events, ("delivered_items",), granularity="month")
    assert {k[0].date(): v["delivered_items"] for k, v in in_utc.items()} == {
        dt.date(2027, 1, 1): 2,
        dt.date(2027, 2, 1): 1,
    }


def test_buckets_with_dimensions(kit: Any) -> None:
    events = [
        *delivered_item(kit, "A", "2027-01-12T01:00", destination="CN-GD"),
        *delivered_item(kit, "B", "2027-01-13T01:00", destination="CN-GD"),
    ]
    got = kit.answer(
        events, ("accepted_items", "delivered_items"), by=["region"], granularity="day"
    )
    assert got == {
        ("CN-GD", utc("2027-01-11T00:00")): {"accepted_items": 2, "delivered_items": 0},
        ("CN-GD", utc("2027-01-12T00:00")): {"accepted_items": 0, "delivered_items": 1},
        ("CN-GD", utc("2027-01-13T00:00")): {"accepted_items": 0, "delivered_items": 1},
    }


# --- complaints ----------------------------------------------------------------------


def test_complaint_counts_and_per_million(kit: Any) -> None:
    events = [kit.ev(f"I{i}", "accepted", ACCEPT, destination="CN-SH") for i in range(4)]
    events.append(kit.ev("J", "accepted", ACCEPT, destination="CN-BJ"))
    complaints = [
        kit.complaint("c1", "2027-01-11T05:00", region="CN-SH", valid=True),
        kit.complaint("c2", "2027-01-11T06:00", region="CN-SH", valid=False),
        kit.complaint("c3", "2027-01-11T06:00", region="CN-GD", valid=None),
        kit.complaint(
            "c4", "2027-01-11T06:00", region="CN-SH", valid=True, updated_at="2027-01-11T07:00"
        ),
        # An older version of c4 (read later): the latest updated_at wins.
        kit.complaint(
            "c4", "2027-01-11T06:00", region="CN-SH", valid=False, updated_at="2027-01-11T06:30"
        ),
        kit.complaint("c5", "2027-01-11T06:00", region="CN-SH"),  # opened after as-of
    ]
    complaints[-1]["opened_at"] = utc("2027-01-20T00:00")
    names = ("complaints", "valid_complaints", "complaints_per_million")
    got = kit.answer(events, names, complaints=complaints, as_of="2027-01-12T00:00", by=["region"])
    assert got == {
        ("CN-SH",): {"complaints": 3, "valid_complaints": 2, "complaints_per_million": 750_000.0},
        ("CN-GD",): {"complaints": 1, "valid_complaints": 0, "complaints_per_million": None},
    }
    total = kit.answer(events, names, complaints=complaints, as_of="2027-01-12T00:00")
    assert total[()] == {
        "complaints": 4,
        "valid_complaints": 2,
        "complaints_per_million": 800_000.0,
    }


def test_latest_complaint_version_wins(kit: Any) -> None:
    events = [kit.ev("A", "accepted", ACCEPT)]
    complaints = [
        # latest updated_at wins, whatever the reading order
        kit.complaint("c1", "2027-01-11T05:00", valid=False, updated_at="2027-01-11T06:00"),
        kit.complaint("c1", "2027-01-11T05:00", valid=True, updated_at="2027-01-11T07:00"),
        kit.complaint("c1", "2027-01-11T05:00", valid=False, updated_at="2027-01-11T06:30"),
        # without updated_at: the last one read wins; a dated version beats an undated one
        kit.complaint("c2", "2027-01-11T05:00", valid=False),
        kit.complaint("c2", "2027-01-11T05:00", valid=True),
        kit.complaint("c3", "2027-01-11T05:00", valid=True, updated_at="2027-01-11T05:00"),
        kit.complaint("c3", "2027-01-11T05:00", valid=False),
    ]
    got = kit.answer(
        events,
        ("complaints", "valid_complaints"),
        complaints=complaints,
        as_of="2027-01-12T00:00",
    )
    assert got[()] == {"complaints": 3, "valid_complaints": 3}


def test_complaints_per_million_null_when_nothing_accepted(kit: Any) -> None:
    events = [kit.ev("N", "arrived", "2027-01-11T00:00", "P1")]
    complaints = [kit.complaint("c1", "2027-01-11T00:00")]
    got = kit.answer(events, ("complaints", "complaints_per_million"), complaints=complaints)
    assert got[()] == {"complaints": 1, "complaints_per_million": None}


def test_complaints_per_million_by_category_uses_all_accepted(kit: Any) -> None:
    events = [kit.ev(f"I{i}", "accepted", ACCEPT) for i in range(4)]
    complaints = [
        kit.complaint("c1", "2027-01-11T05:00", category="delay"),
        kit.complaint("c2", "2027-01-11T05:00", category="loss"),
        kit.complaint("c3", "2027-01-11T05:00", category="delay"),
    ]
    got = kit.answer(
        events,
        ("complaints", "complaints_per_million"),
        complaints=complaints,
        by=["category"],
        as_of="2027-01-12T00:00",
    )
    assert got == {
        ("delay",): {"complaints": 2, "complaints_per_million": 500_000.0},
        ("loss",): {"complaints": 1, "complaints_per_million": 250_000.0},
    }


def test_complaints_per_million_by_product_and_day(kit: Any) -> None:
    events = [
        kit.ev("A", "accepted", "2027-01-11T02:00", product="express"),
        kit.ev("B", "accepted", "2027-01-11T03:00", product="standard"),
        kit.ev("C", "accepted", "2027-01-12T03:00", product="express"),
    ]
    complaints = [
        kit.complaint("c1", "2027-01-11T05:00", product="express"),
        kit.complaint("c2", "2027-01-12T05:00", product="standard"),  # nothing accepted that day
    ]
    got = kit.answer(
        events,
        ("complaints_per_million",),
        complaints=complaints,
        by=["product"],
        granularity="day",
        as_of="2027-01-13T00:00",
    )
    assert got == {
        ("express", utc("2027-01-11T00:00")): {"complaints_per_million": 1_000_000.0},
        ("standard", utc("2027-01-12T00:00")): {"complaints_per_million": None},
    }


def test_resolved_within_7d_counts_only_due_complaints(kit: Any) -> None:
    events = [kit.ev("A", "accepted", "2027-01-10T00:00")]
    complaints = [
        # resolved exactly 7 x 24 h after opening: within
        kit.complaint("c1", "2027-01-11T00:00", resolved_at="2027-01-18T00:00"),
        # 1 us later: not within
        kit.complaint("c2", "2027-01-11T00:00", resolved_at="2027-01-18T00:00:00.000001"),
        # due, still open
        kit.complaint("c3", "2027-01-12T12:00"),
        # due exactly at as-of, resolved in time
        kit.complaint("c4", "2027-01-13T00:00", resolved_at="2027-01-14T00:00"),
        # not due yet (even though resolved): excluded from numerator and denominator
        kit.complaint("c5", "2027-01-13T00:00:00.000001", resolved_at="2027-01-13T01:00"),
        kit.complaint("c6", "2027-01-15T00:00"),
    ]
    got = kit.answer(
        events,
        ("complaints", "resolved_within_7d_ratio"),
        complaints=complaints,
        as_of="2027-01-20T00:00",
    )
    assert got[()] == {"complaints": 6, "resolved_within_7d_ratio": 0.5}
    # Nothing due: null.
    got = kit.answer(
        events, ("resolved_within_7d_ratio",), complaints=complaints[4:], as_of="2027-01-20T00:00"
    )
    assert got[()] == {"resolved_within_7d_ratio": None}


def test_open_and_overdue_complaints(kit: Any) -> None:
    events = [kit.ev("A", "accepted", "2027-01-01T00:00")]
    complaints = [
        kit.complaint("o1", "2027-01-12T23:59:59.999999"),  # open, > 7 days: overdue
        kit.complaint("o2", "2027-01-13T00:00"),  # open exactly 7 days: not overdue
        kit.complaint("o3", "2027-01-10T00:00", resolved_at="2027-01-19T00:00"),  # resolved
        kit.complaint("o4", "2027-01-10T00:00", resolved_at="2027-01-21T00:00"),  # open at as-of
        kit.complaint("o5", "2027-01-20T00:00"),  # opened at as-of: open
        kit.complaint("o6", "2027-01-20T00:00:00.000001"),  # not yet opened
        # resolved exactly at as-of: no longer open
        kit.complaint("o7", "2027-01-10T00:00", resolved_at="2027-01-20T00:00"),
        kit.complaint("o8", "2027-01-10T00:00", region="CN-GD", category="loss"),
    ]
    names = ("open_complaints", "overdue_complaints")
    got = kit.answer(events, names, complaints=complaints, as_of="2027-01-20T00:00")
    assert got[()] == {"open_complaints": 5, "overdue_complaints": 3}
    by = kit.answer(
        events, names, complaints=complaints, as_of="2027-01-20T00:00", by=["region", "category"]
    )
    assert by == {
        ("CN-SH", "delay"): {"open_complaints": 4, "overdue_complaints": 2},
        ("CN-GD", "loss"): {"open_complaints": 1, "overdue_complaints": 1},
    }


# --- backlog -------------------------------------------------------------------------

AS_OF = utc("2027-01-20T00:00")
BACKLOG = (
    "backlog_items",
    "backlog_oldest_hours",
    *(f"backlog_items_{b}" for b in AGE_BANDS),
    "backlog_threshold_items",
    "backlog_over_threshold",
)


def backlog_data(kit: Any) -> tuple[list[Row], list[Row]]:
    facilities = [
        kit.facility("P1", type="processing", region="CN-SH", threshold=2),
        kit.facility("P2", type="processing", region="CN-BJ", threshold=2),
        kit.facility("D1", type="delivery", region="CN-SH", threshold=None),
        kit.facility("D2", type="delivery", region="CN-BJ", threshold=5),  # idle
    ]
    waiting = [  # (item, event, facility, age)
        ("w1", "arrived", "P1", dt.timedelta(0)),
        ("w2", "arrived", "P1", 6 * H),  # lower edge of 6h_12h
        ("w3", "arrived", "P1", 48 * H),  # lower edge of ge_48h
        ("w4", "arrived", "P2", 6 * H - US),  # lt_6h
        ("w5", "arrived", "P2", 12 * H),
        ("w6", "delivery_failed", "D1", 24 * H),
        ("w7", "arrived", "D1", 48 * H - US),
        ("w8", "arrived", "X9", 1 * H),  # facility missing from facilities.csv
    ]
    events = []
    for item, event, fac, age in waiting:
        product = "standard" if item in ("w2", "w5") else "express"
        events += [
            kit.ev(item, "accepted", "2027-01-10T00:00", "C1", product=product),
            kit.ev(item, event, AS_OF - age, fac),
        ]
    events += [
        kit.ev("x1", "departed", AS_OF - H, "P1"),  # moving, not waiting
        kit.ev("x2", "arrived", AS_OF - 2 * H, "D1"),
        kit.ev("x2", "delivered", AS_OF - H, "D1"),  # finished
        kit.ev("x3", "out_for_delivery", AS_OF - H, "D1"),
        kit.ev("x4", "arrived", AS_OF - H, "D1"),
        kit.ev("x4", "returned", AS_OF - H, "D1"),  # finished (and the later stage)
        kit.ev("x5", "arrived", AS_OF + H, "D1"),  # after as-of
    ]
    return events, facilities


def test_backlog_totals_bands_and_thresholds(kit: Any) -> None:
    events, facilities = backlog_data(kit)
    got = kit.answer(events, BACKLOG, facilities=facilities, as_of=AS_OF)
    assert got[()] == {
        "backlog_items": 8,
        "backlog_oldest_hours": 48.0,
        "backlog_items_lt_6h": 3,
        "backlog_items_6h_12h": 1,
        "backlog_items_12h_24h": 1,
        "backlog_items_24h_48h": 2,
        "backlog_items_ge_48h": 1,
        "backlog_threshold_items": 9,
        "backlog_over_threshold": 1,  # P1 (3 > 2); P2 has exactly its threshold
    }


def test_backlog_by_facility_includes_idle_facilities(kit: Any) -> None:
    events, facilities = backlog_data(kit)
    got = kit.answer(events, BACKLOG, facilities=facilities, as_of=AS_OF, by=["facility"])
    zero_bands = {f"backlog_items_{b}": 0 for b in AGE_BANDS}
    assert got[("D2",)] == {
        "backlog_items": 0,
        "backlog_oldest_hours": None,
        **zero_bands,
        "backlog_threshold_items": 5,
        "backlog_over_threshold": 0,
    }
    summary = {
        k[0]: (
            v["backlog_items"],
            v["backlog_oldest_hours"],
            v["backlog_threshold_items"],
            v["backlog_over_threshold"],
        )
        for k, v in got.items()
    }
    assert summary == {
        "P1": (3, 48.0, 2, 1),
        "P2": (2, 12.0, 2, 0),
        "D1": (2, pytest.approx(48 - 1 / 3_600_000_000, abs=1e-9), None, 0),
        "D2": (0, None, 5, 0),
        "X9": (1, 1.0, None, 0),
    }
    assert got[("P2",)]["backlog_items_lt_6h"] == 1 and got[("P2",)]["backlog_items_12h_24h"] == 1
    assert got[("D1",)]["backlog_items_24h_48h"] == 2


def test_backlog_by_facility_type_and_region(kit: Any) -> None:
    events, facilities = backlog_data(kit)
    names = ("backlog_items", "backlog_threshold_items", "backlog_over_threshold")
    by_type = kit.answer(events, names, facilities=facilities, as_of=AS_OF, by=["facility_type"])
    assert by_type == {
        ("processing",): dict(zip(names, (5, 4, 1), strict=True)),
        ("delivery",): dict(zip(names, (2, 5, 0), strict=True)),
        (None,): dict(zip(names, (1, None, 0), strict=True)),
    }
    by_region = kit.answer(events, names, facilities=facilities, as_of=AS_OF, by=["region"])
    assert by_region == {
        ("CN-SH",): dict(zip(names, (5, 2, 1), strict=True)),  # region of the facility
        ("CN-BJ",): dict(zip(names, (2, 7, 0), strict=True)),
        (None,): dict(zip(names, (1, None, 0), strict=True)),
    }


def test_backlog_by_product_has_no_threshold(kit: Any) -> None:
    events, facilities = backlog_data(kit)
    names = ("backlog_items", "backlog_threshold_items", "backlog_over_threshold")
    got = kit.answer(events, names, facilities=facilities, as_of=AS_OF, by=["product"])
    assert got == {
        ("express",): dict(zip(names, (6, None, None), strict=True)),
        ("standard",): dict(zip(names, (2, None, None), strict=True)),
    }


def test_backlog_without_facilities_file(kit: Any) -> None:
    events, _ = backlog_data(kit)
    got = kit.answer(events, BACKLOG, as_of=AS_OF)
    assert got[()]["backlog_items"] == 8
    assert got[()]["backlog_threshold_items"] is None
    assert got[()]["backlog_over_threshold"] == 0
    nothing = kit.answer([kit.ev("A", "accepted", ACCEPT)], BACKLOG, as_of=AS_OF)
    assert nothing[()]["backlog_items"] == 0 and nothing[()]["backlog_oldest_hours"] is None


def test_empty_facilities_is_the_facility_table_with_no_rows() -> None:
    empty = empty_facilities().collect()
    assert empty.is_empty() and empty.schema == pl.Schema(FACILITY_SCHEMA)


# --- network -------------------------------------------------------------------------


def test_in_network_overdue_and_stalled(kit: Any) -> None:
    events = [
        kit.ev("n1", "accepted", ACCEPT, "C1"),  # promise P, long passed: overdue
        kit.ev("n1", "arrived", AS_OF - 48 * H, "P1"),  # silent exactly 48 h: not stalled
        kit.ev("n2", "accepted", ACCEPT, "C1", destination="CN-GD"),
        kit.ev("n2", "arrived", AS_OF - 48 * H - US, "P1"),  # 48 h + 1 us: stalled
        # promised exactly at as-of: not overdue (yet)
        kit.ev("n3", "accepted", AS_OF - H, "C1", promised_by=AS_OF),
        kit.ev("n4", "accepted", AS_OF - H, "C1", promised_by=AS_OF - US),  # overdue
        *delivered_item(kit, "n5", AS_OF - H),  # finished
        kit.ev("n6", "accepted", ACCEPT, "C1"),
        kit.ev("n6", "returned", AS_OF - H, "C1"),  # finished
        kit.ev("n7", "arrived", AS_OF - 100 * H, "P1"),  # never accepted: no promise, stalled
        kit.ev("n8", "accepted", ACCEPT, "C1", product="mystery"),  # no promise, stalled
        kit.ev("n9", "accepted", AS_OF + H, "C1"),  # after as-of: not in the network yet
    ]
    names = ("in_network_items", "overdue_items", "stalled_items")
    got = kit.answer(events, names, as_of=AS_OF)
    assert got[()] == {"in_network_items": 6, "overdue_items": 3, "stalled_items": 3}
    by = kit.answer(events, names, as_of=AS_OF, by=["product", "region"])
    assert by == {
        ("express", "CN-SH"): {"in_network_items": 3, "overdue_items": 2, "stalled_items": 0},
        ("express", "CN-GD"): {"in_network_items": 1, "overdue_items": 1, "stalled_items": 1},
        ("mystery", "CN-SH"): {"in_network_items": 1, "overdue_items": 0, "stalled_items": 1},
        (None, None): {"in_network_items": 1, "overdue_items": 0, "stalled_items": 1},
    }
    # With a 24 h stall limit, n1 (48 h) stalls too; n3/n4 (1 h) do not.
    stall24 = kit.answer(events, ("stalled_items",), as_of=AS_OF, stall_hours=24)
    assert stall24[()] == {"stalled_items": 4}


# --- several families at once, errors -------------------------------------------------


def test_all_kpis_together_one_row_when_ungrouped(kit: Any) -> None:
    events, facilities = backlog_data(kit)
    complaints = [kit.complaint("c1", "2027-01-11T00:00")]
    names = tuple(k.name for k in KPIS)
    got = kit.answer(events, names, complaints=complaints, facilities=facilities, as_of=AS_OF)
    assert set(got) == {()}
    frame = kit.query(kit.snapshot(events, complaints, facilities, AS_OF))  # no names: all
    assert frame.columns == list(names)


def test_groups_missing_from_a_family_count_zero(kit: Any) -> None:
    events = [
        kit.ev("A", "accepted", ACCEPT, destination="CN-GD"),
        kit.ev("B", "accepted", "2027-01-01T00:00", destination="CN-XZ"),
        kit.ev("B", "delivered", "2027-01-02T00:00", "D1"),
    ]
    complaints = [kit.complaint("c1", "2027-01-11T05:00", region="CN-HB")]
    got = kit.answer(
        events,
        ("accepted_items", "complaints", "complaints_per_million", "in_network_items"),
        complaints=complaints,
        by=["region"],
        start="2027-01-11T00:00",
        as_of="2027-01-12T00:00",
    )
    assert got == {
        ("CN-GD",): {
            "accepted_items": 1,
            "complaints": 0,
            "complaints_per_million": None,
            "in_network_items": 1,
        },
        ("CN-HB",): {
            "accepted_items": 0,
            "complaints": 1,
            "complaints_per_million": None,
            "in_network_items": 0,
        },
    }


@pytest.mark.parametrize(
    ("kpi", "dim", "supported"),
    [
        ("backlog_items", "origin", ["facility", "facility_type", "region", "product"]),
        ("on_time_ratio", "facility", ["product", "origin", "destination", "region"]),
        ("complaints", "destination", ["region", "product", "category"]),
        ("stalled_items", "category", ["product", "origin", "destination", "region"]),
    ],
)
def test_unsupported_dimension_error_lists_supported(
    kit: Any, kpi: str, dim: str, supported: list[str]
) -> None:
    snap = kit.snapshot([kit.ev("A", "accepted", ACCEPT)])
    with pytest.raises(KpiError) as err:
        compute(snap, KpiQuery(kpis=(kpi,), by=(dim,)))
    message = str(err.value)
    assert kpi in message and dim in message
    assert str(supported) in message


def test_unknown_kpi_and_other_bad_questions(kit: Any) -> None:
    snap = kit.snapshot([kit.ev("A", "accepted", ACCEPT)])
    with pytest.raises(KpiError, match="unknown KPI 'on_time_rate'"):
        compute(snap, KpiQuery(kpis=("on_time_rate",)))
    with pytest.raises(KpiError, match="unknown dimension"):
        compute(snap, KpiQuery(kpis=("accepted_items",), by=("province",)))
    with pytest.raises(KpiError, match="unknown granularity"):
        compute(snap, KpiQuery(kpis=("accepted_items",), granularity="quarter"))
    with pytest.raises(KpiError, match="snapshot"):
        compute(snap, KpiQuery(kpis=("backlog_items",), granularity="day"))
    with pytest.raises(KpiError, match="time zone"):
        compute(snap, KpiQuery(kpis=("accepted_items",), granularity="day", tz="Mars/Olympus"))
    with pytest.raises(KpiError, match="before"):
        compute(snap, KpiQuery(start=utc("2027-01-12T00:00"), end=utc("2027-01-12T00:00")))
    with pytest.raises(KpiError, match="twice"):
        compute(snap, KpiQuery(kpis=("accepted_items",), by=("product", "product")))


def test_window_and_snapshot_complaint_kpis_together_by_category(kit: Any) -> None:
    # complaints (window family) and open_complaints (snapshot family) are joined on
    # category: both must carry it as the same type (String), whatever the input's.
    events = [kit.ev(f"I{i}", "accepted", ACCEPT) for i in range(2)]
    complaints = [
        kit.complaint("c1", "2027-01-11T05:00", category="delay"),
        kit.complaint("c2", "2027-01-11T05:00", category="loss", resolved_at="2027-01-11T09:00"),
        kit.complaint("c3", "2027-01-11T06:00", category="delay"),
    ]
    got = kit.answer(
        events,
        ("complaints", "open_complaints", "complaints_per_million"),
        complaints=complaints,
        by=["category"],
        as_of="2027-01-12T00:00",
    )
    assert got == {
        ("delay",): {"complaints": 2, "open_complaints": 2, "complaints_per_million": 1e6},
        ("loss",): {"complaints": 1, "open_complaints": 0, "complaints_per_million": 500_000.0},
    }
