"""Counter increments: hand-computed cases for every rule in ``kpi.kpis.increments``."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import Any

import polars as pl
import pytest
import reference

from kpi.contract import COMPLAINT_SCHEMA, EVENT_SCHEMA, EVENT_TYPES
from kpi.events import EVENT_RULES, RANK_BITS, Effect, events_with
from kpi.kpis.increments import (
    COMPLAINT_STATE_SCHEMA,
    LABEL_KEY,
    N_DELIVERED,
    N_FAILED,
    SET_SCHEMA,
    EventIncrements,
    Settlement,
    add_counts,
    complaint_increments,
    empty_complaint_state,
    empty_set,
    event_increments,
    failure_counts,
    late_count,
    merge_complaints,
    merge_set,
    merge_sets,
    reduce_complaints,
    reduce_set,
    set_rows,
    settle,
    split_events,
    sum_counts,
)
from kpi.lifecycle import STATE_SCHEMA, empty_state, merge_events
from kpi.standards import DEFAULT_STANDARDS

T0 = dt.datetime(2027, 3, 1, 0, 0, tzinfo=dt.UTC)  # a Monday, outside the holidays
H = dt.timedelta(hours=1)
US = dt.timedelta(microseconds=1)


def ev(
    eid: str,
    item: str,
    kind: str,
    ts: dt.datetime,
    product: str | None = None,
    origin: str | None = None,
    destination: str | None = None,
    promised_by: dt.datetime | None = None,
    reason: str | None = None,
    facility: str = "F1",
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "item_id": item,
        "event": kind,
        "ts": ts,
        "facility": facility,
        "product": product,
        "origin": origin,
        "destination": destination,
        "promised_by": promised_by,
        "reason": reason,
    }


def acc(
    eid: str, item: str, ts: dt.datetime, promise: dt.datetime | None = None, **kw: Any
) -> dict[str, Any]:
    kw.setdefault("product", "express")
    kw.setdefault("origin", "CN-BJ")
    kw.setdefault("destination", "CN-SH")
    return ev(eid, item, "accepted", ts, promised_by=promise, **kw)


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVENT_SCHEMA)


def counts(df: pl.DataFrame) -> dict[tuple[str, ...], int]:
    labels = [c for c in df.columns if c != "count"]
    return {tuple(r[:-1]): r[-1] for r in df.select(*labels, "count").iter_rows()}


def run(batches: list[list[dict[str, Any]]]) -> list[EventIncrements]:
    """Apply batches in order from an empty state; the increments of each."""
    state = empty_state()
    out = []
    for rows in batches:
        events = frame(rows)
        out.append(event_increments(events, state, DEFAULT_STANDARDS))
        state = merge_events(state, events.lazy())
    return out


def summed(incs: list[EventIncrements]) -> dict[str, Any]:
    def add(frames: list[pl.DataFrame]) -> dict[tuple[str, ...], int]:
        total: dict[tuple[str, ...], int] = {}
        for f in frames:
            for k, v in counts(f).items():
                total[k] = total.get(k, 0) + v
        return total

    return {
        "accepted": add([i.accepted for i in incs]),
        "delivered": add([i.delivered for i in incs]),
        "returned": add([i.returned for i in incs]),
        "attempts": add([i.attempts for i in incs]),
        "failures": add([i.failures for i in incs]),
        "transit": sorted((r[0], r[1], r[2]) for i in incs for r in i.transit.iter_rows()),
        "late": sum(i.late_events for i in incs),
    }


def test_accepted_counts_each_item_once_with_the_earliest_acceptances_labels() -> None:
    (inc,) = run(
        [
            [
                acc(
                    "a1", "I1", T0 + 2 * H, product="standard", origin="CN-GD", destination="CN-GD"
                ),
                acc("a2", "I1", T0, product="express"),  # earlier ts, read second: it wins
                acc("b1", "I2", T0),
            ]
        ]
    )
    assert counts(inc.accepted) == {("express", "CN-BJ", "CN-SH"): 2}


def test_acceptance_tie_at_one_instant_goes_to_the_smallest_event_id() -> None:
    (inc,) = run(
        [
            [
                acc("a9", "I", T0, product="standard"),
                acc("a1", "I", T0, product="economy"),
                ev("d", "I", "delivered", T0 + H),
            ]
        ]
    )
    assert counts(inc.accepted) == {("economy", "CN-BJ", "CN-SH"): 1}
    assert counts(inc.delivered) == {("economy", "CN-SH", "true"): 1}


def test_on_time_is_inclusive_at_the_deadline_and_unknown_without_acceptance() -> None:
    deadline = T0 + 24 * H
    (inc,) = run(
        [
            [
                acc("a1", "ON", T0, promise=deadline),
                ev("d1", "ON", "delivered", deadline),  # exactly at the deadline: on time
                acc("a2", "LATE", T0, promise=deadline),
                ev("d2", "LATE", "delivered", deadline + US),
                ev("d3", "NOACC", "delivered", T0 + 5 * H),  # no acceptance known
            ]
        ]
    )
    assert counts(inc.delivered) == {
        ("express", "CN-SH", "true"): 1,
        ("express", "CN-SH", "false"): 1,
        ("unknown", "unknown", "unknown"): 1,
    }
    # transit observed only where the acceptance is known, in exact seconds
    assert sorted(inc.transit["seconds"].to_list()) == [86400.0, 86400.000001]


def test_promise_from_the_standard_when_the_event_carries_none() -> None:
    # express CN-BJ -> CN-SH (other region): 2 calendar days; accepted Monday 08:00
    # Shanghai time (before the 17:00 cut-off), so the deadline is Wednesday 23:59:59.999999
    # Shanghai = Wednesday 15:59:59.999999 UTC.
    accepted = dt.datetime(2027, 3, 1, 0, 0, tzinfo=dt.UTC)
    deadline = dt.datetime(2027, 3, 3, 15, 59, 59, 999999, tzinfo=dt.UTC)
    (inc,) = run(
        [
            [
                acc("a1", "A", accepted),
                ev("d1", "A", "delivered", deadline),
                acc("a2", "B", accepted),
                ev("d2", "B", "delivered", deadline + US),
                acc("a3", "C", accepted, product="no-such-product"),  # no standard: no promise
                ev("d3", "C", "delivered", accepted + H),
            ]
        ]
    )
    assert counts(inc.delivered) == {
        ("express", "CN-SH", "true"): 1,
        ("express", "CN-SH", "false"): 1,
        ("no-such-product", "CN-SH", "unknown"): 1,
    }


def test_a_set_has_no_read_order_but_sets_do() -> None:
    deliver = ev("d1", "I", "delivered", T0 + 10 * H)
    accept = acc("a1", "I", T0, promise=T0 + 24 * H)
    # One set, whatever the read order: judged, nothing late.
    for rows in ([deliver, accept], [accept, deliver]):
        (inc,) = run([rows])
        assert counts(inc.delivered) == {("express", "CN-SH", "true"): 1}
        assert counts(inc.accepted) == {("express", "CN-BJ", "CN-SH"): 1}
        assert inc.late_events == 0
    # Two sets, nothing held (no grace): the delivery is decided without its acceptance.
    first, second = run([[deliver], [accept]])
    assert counts(first.delivered) == {("unknown", "unknown", "unknown"): 1}
    assert second.delivered.is_empty() and second.late_events == 1


def test_delivered_and_returned_count_once_per_item_across_sets() -> None:
    incs = run(
        [
            [acc("a", "I", T0), ev("d1", "I", "delivered", T0 + 5 * H)],
            [ev("d2", "I", "delivered", T0 + 6 * H)],  # a second delivery scan: not a new item
            [ev("r1", "J", "returned", T0 + 7 * H), ev("r2", "J", "returned", T0 + 8 * H)],
        ]
    )
    s = summed(incs)
    assert s["delivered"] == {("express", "CN-SH", "true"): 1}
    assert s["returned"] == {("unknown", "unknown"): 1}
    # but both delivery scans are attempts: the second one a repeat
    assert s["attempts"] == {
        ("express", "CN-SH", "delivered", "first"): 1,
        ("express", "CN-SH", "delivered", "repeat"): 1,
    }


def test_returns_and_attempts_of_different_items_in_one_set_each_count() -> None:
    (inc,) = run(
        [
            [
                acc("a", "I", T0),
                acc("b", "J", T0),
                ev("r1", "I", "returned", T0 + 5 * H),
                ev("f1", "J", "delivery_failed", T0 + 4 * H, reason="refused"),
                ev("r2", "J", "returned", T0 + 6 * H),
                ev("d1", "K", "delivered", T0 + 7 * H),
                ev("d2", "L", "delivered", T0 + 7 * H),
            ]
        ]
    )
    assert counts(inc.returned) == {("express", "CN-SH"): 2}
    assert counts(inc.delivered) == {("unknown", "unknown", "unknown"): 2}
    assert counts(inc.attempts) == {
        ("express", "CN-SH", "failed", "first"): 1,
        ("unknown", "unknown", "delivered", "first"): 2,
    }


def test_a_return_before_the_first_attempt_leaves_it_first() -> None:
    (inc,) = run(
        [
            [
                acc("a", "I", T0),
                ev("r", "I", "returned", T0 + H),
                ev("f", "I", "delivery_failed", T0 + 2 * H, reason="refused"),
            ]
        ]
    )
    assert counts(inc.attempts) == {("express", "CN-SH", "failed", "first"): 1}


def test_attempts_first_and_repeat_and_failures_by_reason() -> None:
    incs = run(
        [
            [
                acc("a", "I", T0),
                ev("f1", "I", "delivery_failed", T0 + 5 * H, reason="addressee_absent"),
            ],
            [
                ev("f2", "I", "delivery_failed", T0 + 29 * H, reason="wrong_address"),
                ev("d", "I", "delivered", T0 + 53 * H),
                ev("f3", "K", "delivery_failed", T0 + 5 * H, reason=None),
            ],
        ]
    )
    s = summed(incs)
    assert s["attempts"] == {
        ("express", "CN-SH", "failed", "first"): 1,
        ("express", "CN-SH", "failed", "repeat"): 1,
        ("express", "CN-SH", "delivered", "repeat"): 1,
        ("unknown", "unknown", "failed", "first"): 1,
    }
    assert s["failures"] == {("addressee_absent",): 1, ("wrong_address",): 1, ("unknown",): 1}
    assert s["transit"] == [("express", "CN-SH", 53 * 3600.0)]


def test_late_events_against_the_items_newest_known_event_before_the_set() -> None:
    incs = run(
        [
            [acc("a", "I", T0), ev("x", "I", "arrived", T0 + 10 * H)],
            [
                ev("y", "I", "departed", T0 + 5 * H),  # older than 10h seen before: late
                ev("z", "I", "arrived", T0 + 10 * H),  # same instant as the newest: not late
                ev("w", "J", "arrived", T0 + 3 * H),
                acc("v", "J", T0 + H, destination="CN-BJ"),  # same set: in time order, not late
            ],
        ]
    )
    assert [i.late_events for i in incs] == [0, 1]


def test_empty_increments_keep_their_schemas() -> None:
    (inc,) = run([[acc("a", "I", T0)]])
    assert inc.transit.schema == pl.Schema(
        {"product": pl.String, "destination": pl.String, "seconds": pl.Float64}
    )
    for frame in (inc.delivered, inc.returned, inc.attempts, inc.failures):
        assert frame.is_empty() and frame.schema["count"] == pl.Int64
    none = complaint_increments(cframe([cp("C", T0, T0)]), empty_complaint_state())
    assert none.resolutions.schema == pl.Schema(
        {"region": pl.String, "category": pl.String, "seconds": pl.Float64}
    )


def test_observations_come_sorted_by_labels_then_value() -> None:
    (inc,) = run(
        [
            [
                acc("a1", "I1", T0, product="standard"),
                ev("d1", "I1", "delivered", T0 + 9 * H),
                acc("a2", "I2", T0, product="economy"),
                ev("d2", "I2", "delivered", T0 + 7 * H),
                acc("a3", "I3", T0, product="economy"),
                ev("d3", "I3", "delivered", T0 + 3 * H),
                acc("a4", "I4", T0, product="standard", destination="CN-BJ"),
                ev("d4", "I4", "delivered", T0 + 2 * H),  # the shortest: sorted by labels first
            ]
        ]
    )
    assert inc.transit.rows() == [
        ("economy", "CN-SH", 3 * 3600.0),
        ("economy", "CN-SH", 7 * 3600.0),
        ("standard", "CN-BJ", 2 * 3600.0),
        ("standard", "CN-SH", 9 * 3600.0),
    ]


def test_sum_counts_adds_per_label_set_and_keeps_the_schema_when_empty() -> None:
    labels = ("reason",)
    schema = pl.Schema({"reason": pl.String, "count": pl.Int64})
    assert sum_counts([], labels).schema == schema
    empty = pl.DataFrame(schema=schema)
    assert sum_counts([empty, empty], labels).schema == schema
    a = pl.DataFrame({"reason": ["refused", "absent"], "count": [2, 1]}, schema=schema)
    b = pl.DataFrame({"reason": ["refused", "damaged"], "count": [5, 4]}, schema=schema)
    assert sum_counts([a, empty, b], labels).rows() == [
        ("absent", 1),
        ("damaged", 4),
        ("refused", 7),
    ]


def _scenario() -> list[dict[str, Any]]:
    deadline = T0 + 30 * H
    return [
        acc("a1", "I1", T0, promise=deadline),
        ev("d1", "I2", "delivered", T0 + 3 * H),
        acc("a2", "I2", T0 + H, product="economy", destination="CN-GD"),
        ev("f1", "I1", "delivery_failed", T0 + 20 * H, reason="refused"),
        ev("r1", "I3", "returned", T0 + 2 * H),
        ev("d2", "I1", "delivered", T0 + 31 * H),
        acc("a3", "I3", T0),
        ev("e1", "I1", "arrived", T0 + 10 * H),
        ev("d3", "I2", "delivered", T0 + 4 * H),
    ]


def test_scenario_totals_by_hand() -> None:
    s = summed(run([_scenario()]))
    assert s["accepted"] == {
        ("express", "CN-BJ", "CN-SH"): 2,  # I1, I3
        ("economy", "CN-BJ", "CN-GD"): 1,  # I2
    }
    # One set: I2's delivery (read first) gets its acceptance.
    assert s["delivered"] == {
        ("economy", "CN-GD", "true"): 1,
        ("express", "CN-SH", "false"): 1,  # I1: 31 h > 30 h promise
    }
    assert s["returned"] == {("express", "CN-SH"): 1}
    assert s["attempts"] == {
        ("economy", "CN-GD", "delivered", "first"): 1,  # d1
        ("economy", "CN-GD", "delivered", "repeat"): 1,  # d3
        ("express", "CN-SH", "failed", "first"): 1,  # f1
        ("express", "CN-SH", "delivered", "repeat"): 1,  # d2
    }
    assert s["failures"] == {("refused",): 1}
    assert sorted(s["transit"]) == [
        ("economy", "CN-GD", 2 * 3600.0),
        ("express", "CN-SH", 31 * 3600.0),
    ]
    assert s["late"] == 0


# --- an independent model: one record at a time, in event-time order ------------------

# The model reads the rules table as data (what each row declares), never the code that
# reads it: a new event type or effect is modelled here without an edit.
_RANK = {rule.name: rank for rank, rule in enumerate(EVENT_RULES)}
_EFFECTS = {rule.name: rule.effects for rule in EVENT_RULES}


def naive(sets: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The set rules applied record by record (explicit promises only, nothing held)."""
    out: dict[str, Any] = {
        k: {} for k in ("accepted", "delivered", "returned", "attempts", "failures")
    }
    out["transit"], out["late"] = [], 0
    items: dict[str, dict[str, Any]] = {}

    def bump(kind: str, key: tuple[str, ...]) -> None:
        out[kind][key] = out[kind].get(key, 0) + 1

    for rows in sets:
        newest = {i: s["newest"] for i, s in items.items()}
        # labels: the acceptance winner once the whole set is known
        for r in rows:
            if Effect.ACCEPTS in _EFFECTS[r["event"]]:
                s = items.setdefault(r["item_id"], {"newest": None})
                best = s.get("acc")
                if best is None or (r["ts"], r["event_id"]) < (best["ts"], best["event_id"]):
                    s["acc"] = r
        for r in sorted(rows, key=lambda r: (r["ts"], _RANK[r["event"]], r["event_id"])):
            s = items.setdefault(r["item_id"], {"newest": None})
            if newest.get(r["item_id"]) is not None and r["ts"] < newest[r["item_id"]]:
                out["late"] += 1
            s["newest"] = r["ts"] if s["newest"] is None else max(s["newest"], r["ts"])
            a = s.get("acc")
            prod = a["product"] if a else "unknown"
            dest = a["destination"] if a else "unknown"
            does = _EFFECTS[r["event"]]
            if Effect.ACCEPTS in does and not s.get("counted_acc"):
                s["counted_acc"] = True
                bump("accepted", (a["product"], a["origin"], a["destination"]))
            if Effect.ATTEMPTS in does:
                outcome = "delivered" if Effect.DELIVERS in does else "failed"
                bump("attempts", (prod, dest, outcome, "repeat" if s.get("att") else "first"))
                s["att"] = True
            if Effect.FAILS in does:
                bump("failures", (r["reason"] or "unknown",))
            if Effect.DELIVERS in does and not s.get("dlv"):
                s["dlv"] = True
                promise = a["promised_by"] if a else None
                on_time = "unknown" if promise is None else str(r["ts"] <= promise).lower()
                bump("delivered", (prod, dest, on_time))
                if a:
                    out["transit"].append((prod, dest, (r["ts"] - a["ts"]).total_seconds()))
            if Effect.RETURNS in does and not s.get("ret"):
                s["ret"] = True
                bump("returned", (prod, dest))
    out["transit"] = sorted(out["transit"])
    return out


def _random_events(rng: random.Random, n_items: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(n_items):
        item = f"I{i}"
        for k in range(rng.randint(1, 6)):
            # Every type of the table; acceptances twice as often (several per item).
            kind = rng.choice([*EVENT_TYPES, *events_with(Effect.ACCEPTS)])
            ts = T0 + dt.timedelta(minutes=rng.randint(0, 4) * 30)
            eid = f"e{i}-{k}"
            if Effect.ACCEPTS in _EFFECTS[kind]:
                rows.append(
                    acc(
                        eid,
                        item,
                        ts,
                        promise=T0 + rng.choice([1, 2]) * H,
                        product=rng.choice(["express", "standard"]),
                    )
                )
            else:
                rows.append(ev(eid, item, kind, ts, reason=rng.choice(["refused", None])))
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_sets_match_the_record_by_record_model(seed: int) -> None:
    rng = random.Random(seed)
    rows = _random_events(rng, 6)
    cuts = sorted(rng.sample(range(1, len(rows)), k=min(len(rows) - 1, rng.randint(0, 3))))
    sets = [rows[a:b] for a, b in itertools.pairwise([0, *cuts, len(rows)])]
    got = summed(run(sets))
    got["transit"] = sorted(got["transit"])
    assert got == naive(sets)


# --- summarising a set: ``set_rows``, ``reduce_set``, ``merge_set`` ----------------------

_LABELS = {n for n, e in _EFFECTS.items() if e & {Effect.ATTEMPTS, Effect.DELIVERS, Effect.RETURNS}}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def us(ts: dt.datetime) -> int:
    return (ts - EPOCH) // US


def summary(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return reduce_set(set_rows(frame(rows)).lazy()).collect()


def by_item(df: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {r["item_id"]: r for r in df.to_dicts()}


def test_a_set_summary_counts_attempts_and_keeps_the_newest_label_key() -> None:
    rows = [
        ev("f1", "I", "delivery_failed", T0 + 3 * H, reason="refused"),
        ev("d1", "I", "delivered", T0 + 5 * H),
        ev("f2", "I", "delivery_failed", T0 + 4 * H, reason="refused"),
        ev("x", "I", "arrived", T0 + 9 * H),  # newest event, but no label event
        ev("r", "J", "returned", T0 + H),
        acc("a", "K", T0),
    ]
    got = by_item(summary(rows))
    assert summary(rows).schema == pl.Schema(SET_SCHEMA)
    # label key: ts in microseconds, the stage rank below it
    assert (got["I"][N_DELIVERED], got["I"][N_FAILED], got["I"][LABEL_KEY] // RANK_BITS) == (
        1,
        2,
        us(T0 + 5 * H),
    )
    assert (got["J"][N_DELIVERED], got["J"][N_FAILED], got["J"][LABEL_KEY] // RANK_BITS) == (
        0,
        0,
        us(T0 + H),
    )
    assert (got["K"][N_DELIVERED], got["K"][N_FAILED], got["K"][LABEL_KEY]) == (0, 0, None)
    assert got["I"]["last_key"] // RANK_BITS == us(T0 + 9 * H)


def test_merge_set_equals_reducing_everything_at_once() -> None:
    rng = random.Random(7)
    rows = _random_events(rng, 8)
    for cut in (0, 5, len(rows) // 2, len(rows)):
        a, b = rows[:cut], rows[cut:]
        merged = merge_set(summary(a), set_rows(frame(b)))
        assert merged.schema == pl.Schema(SET_SCHEMA)
        assert merged.sort("item_id").to_dicts() == summary(rows).sort("item_id").to_dicts()
    # folding nothing in is the summary itself; into nothing, the rows reduced
    one = summary(rows[:4])
    assert merge_set(one, empty_set()) is one
    assert (
        merge_set(empty_set(), set_rows(frame(rows[:4])))
        .sort("item_id")
        .equals(one.sort("item_id"))
    )


def test_merge_set_keeps_items_the_rows_do_not_touch_and_a_null_item() -> None:
    before = summary(
        [ev("d1", "I", "delivered", T0 + H), ev("d0", None, "delivered", T0)]  # type: ignore[arg-type]
    )
    after = merge_set(before, set_rows(frame([ev("d2", "J", "delivered", T0 + 2 * H)])))
    assert sorted(after["item_id"].to_list(), key=str) == sorted(["I", "J", None], key=str)
    assert after.filter(pl.col("item_id").is_null())[N_DELIVERED].to_list() == [1]
    # as in ``merge_events``, a null id joins nothing: the earlier row stays as it was
    again = set_rows(frame([ev("d3", None, "delivered", T0 + 3 * H)]))  # type: ignore[arg-type]
    null_row = before.filter(pl.col("item_id").is_null()).row(0)
    assert null_row in merge_set(before, again).rows()


def test_a_late_event_is_counted_once_against_its_items_newest_key() -> None:
    # Item I is known twice before the set (counted at 3 h, held at 2 h): its event at
    # 1 h is one late event, not one per known row; at 5 h it is not late; J is new.
    def key(at: dt.datetime) -> int:
        return us(at) * RANK_BITS

    events = pl.DataFrame(
        {"item_id": ["I", "I", "J"], "ts": [T0 + H, T0 + 5 * H, T0]},
        schema={"item_id": pl.String, "ts": pl.Datetime("us", "UTC")},
    )
    newest = pl.DataFrame(
        {"item_id": ["I", "I", "K"], "last_key": [key(T0 + 3 * H), key(T0 + 2 * H), key(T0)]}
    )
    assert late_count(events, newest) == 1
    assert late_count(events, newest.filter(pl.col("item_id") == "K")) == 0


def test_empty_set_has_the_set_schema() -> None:
    empty = empty_set()
    assert empty.is_empty() and empty.schema == pl.Schema(SET_SCHEMA)


# --- the grace: label events held until their acceptance or the clock ----------------


class Books:
    """How the exporter applies sets with ``settle``: counted state, held label events, clock."""

    def __init__(self, grace: dt.timedelta | None) -> None:
        self.state = empty_state()
        self.held = empty_set()
        self.clock: int | None = None
        self.grace = None if grace is None else grace // US

    def apply(self, rows: list[dict[str, Any]], clock: dt.datetime | None = None) -> Settlement:
        events = frame(rows)
        rest, labels = split_events(events)
        newest = [us(r["ts"]) for r in rows] + ([us(clock)] if clock else [])
        self.clock = max([*newest, *([self.clock] if self.clock is not None else [])], default=None)
        held = merge_set(self.held, summary_of(labels))
        done = settle(self.state, summary_of(rest), held, DEFAULT_STANDARDS, self.clock, self.grace)
        replaced = self.state.get_column("item_id").is_in(done.touched.implode())
        self.state = pl.concat([self.state.filter(~replaced), done.merged], how="vertical")
        self.held = done.held
        return done


def summary_of(events: pl.DataFrame) -> pl.DataFrame:
    return reduce_set(set_rows(events).lazy()).collect()


def held_ids(books: Books) -> list[str]:
    return sorted(books.held["item_id"].to_list())


def test_a_delivery_waits_for_its_acceptance_and_is_counted_with_its_labels() -> None:
    books = Books(grace=24 * H)
    deliver = ev("d", "I", "delivered", T0 + 10 * H)
    accept = acc("a", "I", T0, promise=T0 + 24 * H, product="economy")
    waiting = books.apply([deliver])
    assert held_ids(books) == ["I"] and waiting.merged.is_empty()
    inc = waiting.increments
    assert inc.delivered.is_empty() and inc.attempts.is_empty() and inc.transit.is_empty()
    arrived = books.apply([accept]).increments
    assert counts(arrived.accepted) == {("economy", "CN-BJ", "CN-SH"): 1}
    assert counts(arrived.delivered) == {("economy", "CN-SH", "true"): 1}
    assert counts(arrived.attempts) == {("economy", "CN-SH", "delivered", "first"): 1}
    assert arrived.transit.rows() == [("economy", "CN-SH", 10 * 3600.0)]
    assert held_ids(books) == []
    # the same answer as reading both in one set
    one = naive([[deliver, accept]])
    assert counts(arrived.delivered) == one["delivered"]
    assert counts(arrived.attempts) == one["attempts"]


def test_held_events_are_released_unknown_only_once_the_clock_passes_delivery_plus_grace() -> None:
    books = Books(grace=24 * H)
    books.apply([ev("d", "I", "delivered", T0 + 10 * H), ev("r", "R", "returned", T0 + 11 * H)])
    # the clock exactly at delivery + grace: not past it, still held
    at = books.apply([ev("x", "J", "arrived", T0 + 34 * H)])
    assert held_ids(books) == ["I", "R"] and at.increments.delivered.is_empty()
    after = books.apply([ev("y", "J", "arrived", T0 + 34 * H + US)])
    assert held_ids(books) == ["R"]  # R's return is an hour newer
    assert counts(after.increments.delivered) == {("unknown", "unknown", "unknown"): 1}
    assert counts(after.increments.attempts) == {("unknown", "unknown", "delivered", "first"): 1}
    assert after.increments.transit.is_empty() and after.increments.returned.is_empty()
    assert sorted(after.touched.to_list()) == ["I", "J"]
    returned = books.apply([], clock=T0 + 35 * H + US).increments
    assert counts(returned.returned) == {("unknown", "unknown"): 1}
    # the acceptance arriving after the release: the item is accepted, not delivered again
    late = books.apply([acc("a", "I", T0)]).increments
    assert counts(late.accepted) == {("express", "CN-BJ", "CN-SH"): 1}
    assert late.delivered.is_empty() and late.attempts.is_empty() and late.transit.is_empty()


def test_the_newest_held_label_event_decides_when_the_wait_ends() -> None:
    books = Books(grace=H)
    books.apply([ev("f", "I", "delivery_failed", T0, reason="refused")])
    books.apply([ev("d", "I", "delivered", T0 + 5 * H)])  # the clock passes f + grace here
    assert held_ids(books) == ["I"]
    row = books.held.row(0, named=True)
    assert (row[N_DELIVERED], row[N_FAILED], row[LABEL_KEY] // RANK_BITS) == (1, 1, us(T0 + 5 * H))
    done = books.apply([], clock=T0 + 6 * H + US).increments
    assert counts(done.attempts) == {
        ("unknown", "unknown", "failed", "first"): 1,
        ("unknown", "unknown", "delivered", "repeat"): 1,
    }
    assert done.failures.is_empty()  # failures are counted when read, not when settled


def test_an_acceptance_in_the_counted_state_releases_label_events_at_once() -> None:
    books = Books(grace=24 * H)
    books.apply([acc("a", "I", T0, promise=T0 + 2 * H)])
    now = books.apply([ev("d", "I", "delivered", T0 + 3 * H)]).increments
    assert held_ids(books) == []
    assert counts(now.delivered) == {("express", "CN-SH", "false"): 1}
    assert now.transit.rows() == [("express", "CN-SH", 3 * 3600.0)]


def test_without_a_clock_a_grace_holds_everything_unaccepted() -> None:
    labels = summary([ev("d", "I", "delivered", T0), ev("r", "J", "returned", T0)])
    rest = summary([acc("a", "J", T0 - H)])
    for grace in (0, 10**12):
        done = settle(empty_state(), rest, labels, DEFAULT_STANDARDS, None, grace)
        assert done.held["item_id"].to_list() == ["I"]
        assert counts(done.increments.returned) == {("express", "CN-SH"): 1}
        assert done.increments.delivered.is_empty()
    # no grace: nothing is held, clock or not
    for clock in (None, us(T0)):
        done = settle(empty_state(), rest, labels, DEFAULT_STANDARDS, clock, None)
        assert done.held.is_empty() and done.held.schema == pl.Schema(SET_SCHEMA)
        assert counts(done.increments.delivered) == {("unknown", "unknown", "unknown"): 1}


def test_a_settlement_replaces_only_the_rows_of_items_it_touches() -> None:
    before = merge_events(
        empty_state(), frame([acc("a", "I", T0), acc("b", "K", T0)]).lazy()
    )  # K is not in the set
    labels = summary([ev("d", "I", "delivered", T0 + H), ev("e", "U", "delivered", T0 + H)])
    rest = summary([ev("x", "W", "arrived", T0 + H)])
    done = settle(before, rest, labels, DEFAULT_STANDARDS, us(T0 + H), (24 * H) // US)
    assert sorted(done.touched.to_list()) == ["I", "W"]  # U only waits: no state yet
    assert done.merged.schema == pl.Schema(STATE_SCHEMA)
    merged = by_item(done.merged)
    assert merged["I"]["delivered_at"] == T0 + H and merged["I"]["accepted_at"] == T0
    assert merged["W"]["accepted_at"] is None and merged["W"]["last_key"] // RANK_BITS == us(T0 + H)
    assert done.held["item_id"].to_list() == ["U"]
    # the acceptance already counted before the set is not counted again
    assert done.increments.accepted.is_empty()
    assert counts(done.increments.delivered) == {("express", "CN-SH", "true"): 1}


def released_sets(
    sets: list[list[dict[str, Any]]], grace: dt.timedelta
) -> list[list[dict[str, Any]]]:
    """The model of the wait: each set as it is applied (held label events join the set
    that releases them), from the records alone."""
    accepted: set[str] = set()
    held: dict[str, list[dict[str, Any]]] = {}
    clock: dt.datetime | None = None
    out = []
    for rows in sets:
        clock = max([r["ts"] for r in rows] + ([clock] if clock else []), default=None)
        accepted |= {r["item_id"] for r in rows if Effect.ACCEPTS in _EFFECTS[r["event"]]}
        now = [r for r in rows if r["event"] not in _LABELS]
        for r in rows:
            if r["event"] in _LABELS:
                held.setdefault(r["item_id"], []).append(r)
        for item in sorted(held):
            newest = max(r["ts"] for r in held[item])
            if item in accepted or (clock is not None and newest + grace < clock):
                now += held.pop(item)
        out.append(now)
    out.append([r for rows in held.values() for r in rows])  # the final tick releases all
    return out


@pytest.mark.parametrize("seed", range(30))
def test_sets_with_a_grace_match_the_model_of_the_wait(seed: int) -> None:
    rng = random.Random(1000 + seed)
    rows = _random_events(rng, 6)
    cuts = sorted(rng.sample(range(1, len(rows)), k=min(len(rows) - 1, rng.randint(1, 4))))
    sets = [rows[a:b] for a, b in itertools.pairwise([0, *cuts, len(rows)])]
    grace = dt.timedelta(minutes=rng.choice([0, 30, 60, 150]))
    books = Books(grace)
    incs = []
    for rows_ in sets:
        done = books.apply(rows_)
        incs.append(add_counts(done.increments, failure_counts(frame(rows_)), 0))
    incs.append(books.apply([], clock=T0 + 1000 * H).increments)
    assert books.held.is_empty()
    got = summed(incs)
    want = naive(released_sets(sets, grace))
    got["transit"] = sorted(got["transit"])
    del got["late"], want["late"]  # late events are counted when read, by the exporter
    assert got == want


@pytest.mark.parametrize("seed", range(20))
def test_merge_sets_folds_parts_as_merge_set_one_after_another(seed: int) -> None:
    rng = random.Random(seed)
    rows = _random_events(rng, 8)
    cuts = sorted(rng.sample(range(1, len(rows)), k=min(len(rows) - 1, rng.randint(1, 4))))
    parts = [
        reduce_set(set_rows(frame(rows[a:b])).lazy()).collect()
        for a, b in itertools.pairwise([0, *cuts, len(rows)])
    ]
    one_by_one = parts[0]
    for part in parts[1:]:
        one_by_one = merge_set(one_by_one, part)
    whole = reduce_set(set_rows(frame(rows)).lazy()).collect()
    got = merge_sets(parts)
    assert got.sort("item_id").equals(one_by_one.sort("item_id"))
    assert got.sort("item_id").equals(whole.sort("item_id"))


# --- complaints ---------------------------------------------------------------------------


def cp(
    cid: str,
    opened: dt.datetime,
    updated: dt.datetime | None,
    resolved: dt.datetime | None = None,
    valid: bool | None = None,
    region: str = "CN-SH",
    category: str = "delay",
) -> dict[str, Any]:
    return {
        "complaint_id": cid,
        "opened_at": opened,
        "category": category,
        "item_id": None,
        "region": region,
        "product": "express",
        "valid": valid,
        "resolved_at": resolved,
        "updated_at": updated,
    }


def cframe(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=COMPLAINT_SCHEMA)


def test_complaints_counted_once_with_the_current_versions_labels() -> None:
    state = empty_complaint_state()
    first = cframe([cp("C1", T0, T0), cp("C2", T0, T0, valid=True, category="loss")])
    inc1 = complaint_increments(first, state)
    state = merge_complaints(state, first)
    second = cframe([cp("C1", T0, T0 + H, valid=True)])  # now decided valid: not a new complaint
    inc2 = complaint_increments(second, state)
    assert counts(inc1.complaints) == {
        ("CN-SH", "delay", "unknown"): 1,
        ("CN-SH", "loss", "true"): 1,
    }
    assert inc2.complaints.is_empty()


def test_resolution_observed_once_when_the_current_version_is_resolved() -> None:
    state = empty_complaint_state()
    batches = [
        [cp("C1", T0, T0)],
        # a stale version (older update) that says resolved: not the current version
        [cp("C1", T0, T0 - H, resolved=T0 + 2 * H)],
        # the current version resolves it after 50 hours
        [cp("C1", T0, T0 + 50 * H, resolved=T0 + 50 * H, region="CN-BJ")],
        # a later correction of the resolution time: already counted
        [cp("C1", T0, T0 + 60 * H, resolved=T0 + 40 * H)],
    ]
    observed = []
    for rows in batches:
        records = cframe(rows)
        inc = complaint_increments(records, state)
        observed += inc.resolutions.rows()
        state = merge_complaints(state, records)
    assert observed == [("CN-BJ", "delay", 50 * 3600.0)]
    final = state.row(0, named=True)
    assert final["updated_at"] == T0 + 60 * H and final["resolution_counted"] is True


def test_complaint_versions_in_one_batch_match_applying_them_one_by_one() -> None:
    rows = [
        cp("C1", T0, T0 + 5 * H, resolved=T0 + 5 * H),
        cp("C1", T0, T0 + H),  # older update: stays behind the resolved version
        cp("C2", T0, None),
        cp("C2", T0, None, resolved=T0 + 3 * H),  # null updates: the later record wins
    ]
    together = complaint_increments(cframe(rows), empty_complaint_state())
    state = empty_complaint_state()
    one_by_one: list[tuple[Any, ...]] = []
    for row in rows:
        records = cframe([row])
        one_by_one += complaint_increments(records, state).resolutions.rows()
        state = merge_complaints(state, records)
    assert sorted(together.resolutions.rows()) == sorted(one_by_one)
    assert sorted(one_by_one) == [("CN-SH", "delay", 3 * 3600.0), ("CN-SH", "delay", 5 * 3600.0)]
    assert merge_complaints(empty_complaint_state(), cframe(rows)).sort("complaint_id")[
        "resolved_at"
    ].to_list() == [T0 + 5 * H, T0 + 3 * H]


def test_reduce_complaints_keeps_the_current_versions_and_changes_no_increment() -> None:
    rows = [
        cp("C1", T0, T0 + 5 * H, resolved=T0 + 5 * H),
        cp("C1", T0, T0 + H, region="CN-GD"),  # older update
        cp("C2", T0, None, category="loss"),
        cp("C2", T0, None, resolved=T0 + 3 * H, category="loss"),  # null updates: later wins
        cp("C3", T0, T0 + H, valid=False),
        cp("C3", T0, T0 + H, valid=True),  # equal updates: the later record wins
    ]
    records = cframe(rows)
    reduced = reduce_complaints(records)
    latest = cframe(reference.latest_versions(rows))
    assert reduced.sort("complaint_id").equals(latest.sort("complaint_id"))
    state = merge_complaints(empty_complaint_state(), cframe([cp("C1", T0, T0)]))
    for before in (empty_complaint_state(), state):
        whole, cut = complaint_increments(records, before), complaint_increments(reduced, before)
        assert counts(whole.complaints) == counts(cut.complaints)
        assert sorted(whole.resolutions.rows()) == sorted(cut.resolutions.rows())
    empty = cframe([])
    assert reduce_complaints(empty) is empty
    assert merge_complaints(state, empty) is state
    assert state.schema == pl.Schema(COMPLAINT_STATE_SCHEMA)
