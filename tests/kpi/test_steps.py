"""Step values (the backfill's engine) against the report asked once per step.

The reference is the slow, obvious way: a ``Snapshot`` as of every step (gauges) and a
report window ``[beginning, t)`` for every step (counters). The engine computes all
steps in one pass; both must agree at every step, on hand-written edge cases and on a
generated scenario.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest
from conftest import Kit, Row
from reference import utc

from kpi.contract import EVENT_SCHEMA, EVENT_TYPES
from kpi.events import EVENT_RULES, Effect
from kpi.kpis.increments import event_increments
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.kpis.step_values import StepValues, cumulative_buckets
from kpi.kpis.steps import (
    VALUE,
    K,
    StepError,
    step_deltas,
    step_grid,
)
from kpi.lifecycle import empty_state
from kpi.simulate import SimConfig, generate, write_data_folder
from kpi.sources.folder import DataSet, latest_complaints, load_data_dir
from kpi.standards import DEFAULT_STANDARDS

HOUR = dt.timedelta(hours=1)
EDGES = [round(h * 3600e6) for h in (6, 24, 72)]  # small histogram: 6 h, 1 d, 3 d
BEGINNING = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _values(ds: DataSet, steps: pl.Series, window: int) -> dict[str, pl.DataFrame]:
    deltas = step_deltas(
        ds.events,
        ds.complaints,
        ds.facilities,
        ds.standards,
        steps,
        transit_edges_us=EDGES,
        resolution_edges_us=EDGES,
    )
    sv = StepValues(deltas)
    parts: dict[str, list[pl.DataFrame]] = {}
    for k0, k1 in sv.windows(window):
        for name, frame in sv.window(k0, k1).items():
            parts.setdefault(name, []).append(frame)
    return {name: pl.concat(frames) for name, frames in parts.items()}


def _at(values: dict[str, pl.DataFrame], name: str, k: int, by: str | None) -> dict[Any, float]:
    frame = values[name].filter(pl.col(K) == k)
    if by is None:
        total = float(frame[VALUE].sum())
        return {None: total} if total else {}
    grouped = frame.group_by(by).agg(pl.col(VALUE).sum())
    return {r[by]: float(r[VALUE]) for r in grouped.iter_rows(named=True) if r[VALUE]}


def _report(snap: Snapshot, kpis: tuple[str, ...], by: str | None, **kw: Any) -> dict[Any, float]:
    frame = snap.query(KpiQuery(kpis=kpis, by=(by,) if by else (), **kw))
    out: dict[Any, float] = {}
    for row in frame.iter_rows(named=True):
        value = float(sum(row[k] or 0 for k in kpis))
        if value:
            out[row[by] if by else None] = value
    return out


def _compare_every_step(ds: DataSet, steps: pl.Series, window: int = 5) -> int:
    """Asserts engine == report at every step; returns how many non-zero values were compared."""
    values = _values(ds, steps, window)
    whole = Snapshot.from_dataset(ds)
    compared = 0
    for k, us in enumerate(steps.to_list()):
        t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
        before = {"start": BEGINNING, "end": t}
        checks = [
            ("accepted", None, _report(whole, ("accepted_items",), None, **before)),
            ("delivered", "on_time", None),
            ("returned", None, _report(whole, ("returned_items",), None, **before)),
            ("complaints", None, _report(whole, ("complaints",), None, **before)),
        ]
        snap = Snapshot.from_dataset(ds, t)
        checks += [
            ("backlog", "facility", _report(snap, ("backlog_items",), "facility")),
            ("in_network", "destination", _report(snap, ("in_network_items",), "destination")),
            ("overdue", "destination", _report(snap, ("overdue_items",), "destination")),
            ("stalled", "region", _report(snap, ("stalled_items",), "region")),
            ("complaints_open", "region", _report(snap, ("open_complaints",), "region")),
            ("complaints_overdue", "region", _report(snap, ("overdue_complaints",), "region")),
        ]
        for name, by, expected in checks:
            want = expected
            if name == "delivered":
                row = whole.query(
                    KpiQuery(
                        kpis=(
                            "delivered_items",
                            "on_time_items",
                            "late_1d_items",
                            "late_2d_items",
                            "late_3d_plus_items",
                        ),
                        **before,
                    )
                ).row(0, named=True)
                late = row["late_1d_items"] + row["late_2d_items"] + row["late_3d_plus_items"]
                unknown = row["delivered_items"] - row["on_time_items"] - late
                split = {"true": row["on_time_items"], "false": late, "unknown": unknown}
                want = {key: float(v) for key, v in split.items() if v}
            got = _at(values, name, k, by)
            # The report names a missing destination/region null; the metrics say unknown.
            named = {
                ("unknown" if key is None and by else key): v for key, v in (want or {}).items()
            }
            assert got == named, f"{name} at {t.isoformat()}"
            compared += len(named)
    return compared


def _dataset(events: list[Row], complaints: list[Row], facilities: list[Row]) -> DataSet:
    return DataSet(
        events=Kit.events(events),
        complaints=latest_complaints(Kit.complaints(complaints)),
        facilities=Kit.facilities(facilities),
        standards=DEFAULT_STANDARDS,
    )


T0 = "2026-03-02T00:00:00Z"


def _t(hours: float) -> dt.datetime:
    return utc(T0) + dt.timedelta(hours=hours)


EDGE_EVENTS = [
    # on time exactly at the promise; events exactly on steps
    Kit.ev("A", "accepted", _t(1), "F1", promised_by=_t(30)),
    Kit.ev("A", "arrived", _t(2), "F1"),
    Kit.ev("A", "departed", _t(9), "F1"),
    Kit.ev("A", "arrived", _t(10.5), "F2"),
    Kit.ev("A", "delivered", _t(30), "F2"),
    # scanned before its acceptance arrives in event time; a failed attempt; late
    Kit.ev("B", "arrived", _t(0.5), "F1"),
    Kit.ev("B", "accepted", _t(3), "F1", product="economy", destination="CN-GD", promised_by=_t(5)),
    Kit.ev("B", "delivery_failed", _t(4), "F3"),
    Kit.ev("B", "delivery_failed", _t(20), "F3"),
    Kit.ev("B", "delivered", _t(58), "F3"),
    # never accepted: delivered unknown
    Kit.ev("C", "arrived", _t(6), "F2"),
    Kit.ev("C", "delivered", _t(12), "F2"),
    # returned; two scans at one instant (departed wins as the last event)
    Kit.ev("D", "accepted", _t(2), "F2", destination="CN-GD"),
    Kit.ev("D", "arrived", _t(7), "F2"),
    Kit.ev("D", "departed", _t(7), "F2"),
    Kit.ev("D", "returned", _t(40), "F1"),
    # waits for ever at an unlisted facility: every age band, stalled after 48 h
    Kit.ev("E", "accepted", _t(0), "F9", product="standard", promised_by=_t(24)),
    Kit.ev("E", "arrived", _t(1), "F9"),
]
EDGE_COMPLAINTS = [
    Kit.complaint("c1", _t(3), resolved_at=_t(5), updated_at=_t(5)),
    Kit.complaint("c1", _t(3), updated_at=_t(3)),  # older version: the latest wins
    Kit.complaint("c2", _t(4), region="CN-GD", valid=None),
    Kit.complaint("c3", _t(12), category="loss", resolved_at=_t(200), valid=False),
]
EDGE_FACILITIES = [Kit.facility("F1", threshold=5), Kit.facility("F2", region="CN-GD")]


def test_edge_cases_equal_the_report_at_every_step() -> None:
    ds = _dataset(EDGE_EVENTS, EDGE_COMPLAINTS, EDGE_FACILITIES)
    steps = step_grid(_t(-1), _t(8 * 24), HOUR)
    assert _compare_every_step(ds, steps, window=7) > 500


def test_hand_checked_values() -> None:
    ds = _dataset(EDGE_EVENTS, EDGE_COMPLAINTS, EDGE_FACILITIES)
    steps = step_grid(_t(0), _t(60), HOUR)
    values = _values(ds, steps, 24)
    # accepted: E at 0 h, A at 1 h, D at 2 h, B at 3 h; a step counts strictly earlier ones
    assert [_at(values, "accepted", k, None).get(None, 0) for k in range(5)] == [0, 1, 2, 3, 4]
    # backlog at 7 h: A at F1 since 2 h, E at F9 since 1 h, B at F3 since its failed attempt
    # at 4 h, C at F2 since 6 h; D arrived and departed at 7 h (departed is its last event).
    backlog = values["backlog"].filter(pl.col(K) == 7)
    waiting = {(r["facility"], r["age_band"]): r[VALUE] for r in backlog.iter_rows(named=True)}
    assert waiting[("F1", "lt_6h")] == 1  # A, 5 h
    assert waiting[("F9", "6h_12h")] == 1  # E, 6 h: the lower edge is inclusive
    assert waiting[("F3", "lt_6h")] == 1  # B, 3 h
    assert waiting[("F2", "lt_6h")] == 1  # C, 1 h
    assert sum(waiting.values()) == 4

    # listed facilities are present with zeros, unlisted ones only while items wait there
    def present(k: int) -> list[str]:
        return values["backlog"].filter(pl.col(K) == k)["facility"].unique().sort().to_list()

    assert present(0) == ["F1", "F2"]  # nobody waits yet (E's last event is its acceptance)
    assert present(2) == ["F1", "F2", "F9"]  # E waits at F9 from 1 h
    oldest = values["backlog_oldest"].filter(pl.col(K) == 7)
    ages = {r["facility"]: r[VALUE] / 3600e6 for r in oldest.iter_rows(named=True)}
    assert ages == {"F1": 5.0, "F2": 1.0, "F3": 3.0, "F9": 6.0}
    # delivery attempts: B's first attempt is the failed one at 4 h; its delivery a repeat
    attempts = values["attempts"].filter(pl.col(K) == 60)
    got = {
        (r["destination"], r["outcome"], r["attempt"]): r[VALUE]
        for r in attempts.iter_rows(named=True)
        if r[VALUE]
    }
    assert got == {
        ("CN-SH", "delivered", "first"): 1,  # A
        ("CN-GD", "failed", "first"): 1,  # B at 4 h
        ("CN-GD", "failed", "repeat"): 1,  # B at 20 h
        ("CN-GD", "delivered", "repeat"): 1,  # B at 58 h
        ("unknown", "delivered", "first"): 1,  # C, never accepted
    }
    repeat = (pl.col("attempt") == "repeat") & (pl.col("outcome") == "delivered")
    at = {k: values["attempts"].filter((pl.col(K) == k) & repeat)[VALUE].sum() for k in (58, 59)}
    assert at == {58: 0, 59: 1}  # the 58 h delivery counts from the first step after it


def test_histograms_buckets_and_sums() -> None:
    ds = _dataset(EDGE_EVENTS, EDGE_COMPLAINTS, EDGE_FACILITIES)
    steps = step_grid(_t(0), _t(60), HOUR)
    values = _values(ds, steps, 30)
    # transit: A 29 h (bucket le=3d), B 55 h (le=3d); C has no acceptance: not observed
    buckets = cumulative_buckets(values["transit:bucket"], ["product", "destination"], 3)
    at_end = buckets.filter(pl.col(K) == 60).group_by("bucket").agg(pl.col(VALUE).sum())
    assert dict(at_end.sort("bucket").iter_rows()) == {0: 0, 1: 0, 2: 2, 3: 2}
    total_us = values["transit:sum"].filter(pl.col(K) == 60)[VALUE].sum()
    assert total_us == round((29 + 55) * 3600e6)
    # resolution: c1 resolved after 2 h (le=6h) at 5 h; c3 after 188 h is past the grid
    res = cumulative_buckets(values["resolution:bucket"], ["region", "category"], 3)
    assert res.filter((pl.col(K) == 5) & (pl.col("bucket") == 0))[VALUE].sum() == 0
    assert res.filter((pl.col(K) == 6) & (pl.col("bucket") == 0))[VALUE].sum() == 1


def test_generated_scenario_equals_the_report_at_every_step(tmp_path: Any) -> None:
    start = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    write_data_folder(generate(SimConfig(items=300, days=3, seed=4, start=start)), tmp_path)
    ds = load_data_dir(tmp_path)
    steps = step_grid(start + dt.timedelta(hours=5), start + dt.timedelta(days=3), 3 * HOUR)
    assert _compare_every_step(ds, steps, window=4) > 1000


# Scans at one instant: the last event is the later stage, then the facility greater as
# text ("F9" > "F10" > "F1"): the engine codes facilities as integers, in text order.
TIE_EVENTS = [
    Kit.ev("G", "accepted", _t(0), "F10", promised_by=_t(20)),
    Kit.ev("G", "arrived", _t(1), "F10"),
    Kit.ev("G", "arrived", _t(1), "F9"),
    Kit.ev("H", "arrived", _t(1), "F9"),
    Kit.ev("H", "arrived", _t(1), "F10"),
    Kit.ev("H", "arrived", _t(1), "F1"),
    Kit.ev("H", "delivery_failed", _t(3), "F1"),
    Kit.ev("H", "arrived", _t(3), "F10"),  # the failed attempt is the later stage: F1
    Kit.ev("J", "accepted", _t(2), "F10", destination="CN-GD"),
    Kit.ev("J", "arrived", _t(2), "F10"),
    Kit.ev("J", "departed", _t(2), "F10"),
]


def test_ties_at_one_instant_follow_the_facility_text_order() -> None:
    ds = _dataset(TIE_EVENTS, [], [Kit.facility("F10"), Kit.facility("F2")])
    steps = step_grid(_t(0), _t(80), HOUR)
    assert _compare_every_step(ds, steps, window=9) > 100
    values = _values(ds, steps, 9)
    at = {k: _by(values, "backlog", k, "facility") for k in (2, 4)}
    assert at[2] == {("F9",): 2}  # G and H wait at F9; J departed
    assert at[4] == {("F9",): 1, ("F1",): 1}


def test_bad_grids_are_refused() -> None:
    with pytest.raises(StepError, match="before"):
        step_grid(_t(5), _t(1), HOUR)
    with pytest.raises(StepError, match="positive"):
        step_grid(_t(1), _t(5), dt.timedelta(0))
    grid = step_grid(_t(0), _t(2.5), HOUR)
    assert grid.len() == 4  # 0, 1, 2 h and the end itself


_RULES = {rule.name: rule for rule in EVENT_RULES}


def _by(values: dict[str, pl.DataFrame], name: str, k: int, *labels: str) -> dict[Any, float]:
    frame = values[name].filter((pl.col(K) == k) & (pl.col(VALUE) != 0))
    return {tuple(r[lab] for lab in labels): r[VALUE] for r in frame.iter_rows(named=True)}


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_event_type_counts_as_the_rules_table_says(kind: str) -> None:
    """Attempts, failures and backlog of the backfill for each type of the table: what its
    row's effects say (expected from the table, by hand), as the exporter counts them."""
    effects = _RULES[kind].effects
    fields = {"reason": "refused"} if "reason" in _RULES[kind].requires else {}
    events = [
        Kit.ev("A", "accepted", _t(1), "F1"),
        Kit.ev("B", "accepted", _t(1), "F1"),
        Kit.ev("B", "delivery_failed", _t(2), "F1"),  # B's first attempt, failed
        Kit.ev("A", kind, _t(3), "F2", **fields),
        Kit.ev("B", kind, _t(4), "F2", **fields),
    ]
    values = _values(_dataset(events, [], []), step_grid(_t(0), _t(6), HOUR), 24)
    outcome = "delivered" if Effect.DELIVERS in effects else "failed"
    want_attempts = {("failed", "first"): 1.0}
    if Effect.ATTEMPTS in effects:
        want_attempts[(outcome, "first")] = want_attempts.get((outcome, "first"), 0) + 1
        want_attempts[(outcome, "repeat")] = 1.0
    want_failures = {("addressee_absent",): 1.0}
    if Effect.FAILS in effects:
        want_failures[("refused",)] = 2.0
    waiting = {("F2",): 2.0} if Effect.WAITS in effects else {}
    assert _by(values, "attempts", 6, "outcome", "attempt") == want_attempts
    assert _by(values, "failures", 6, "reason") == want_failures
    assert _by(values, "backlog", 5, "facility") == waiting

    # The exporter's counters (one set of every event) say the same.
    inc = event_increments(
        pl.DataFrame(events, schema=EVENT_SCHEMA), empty_state(), DEFAULT_STANDARDS
    )
    exported = {
        (r["outcome"], r["attempt"]): r["count"] for r in inc.attempts.iter_rows(named=True)
    }
    assert exported == want_attempts
    assert {(r["reason"],): r["count"] for r in inc.failures.iter_rows(named=True)} == want_failures
