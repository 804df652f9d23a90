"""After catch-up the exporter's stage histograms equal the report's all-time stages, series
by series (bucket counts, sums, counts), however the scans arrive within the stage
horizon (the late grace): in one set, in sets that bring departures before their
arrivals, in reverse time order, across a restart, in time order with the default
horizon (older scans summarised per item), in random order within the horizon; a scan
beyond the horizon is counted in ``postal_exporter_stage_late_scans_total``.

The expected values come from the naive per-item reference (``tests.kpi.stage_reference``:
plain Python over the events), bucketed here by hand.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from exporters import catalog as cat
from exporters.ingest import IngestConfig, Ingestor
from exporters.state import write_checkpoint
from kpi.events import RANK_BITS
from kpi.simulate import SimConfig, generate
from tests.exporters.parity import events_frame, item_keys, split_write, write_frame
from tests.kpi.stage_reference import distinct_events, dwells, legs

T0 = dt.datetime(2027, 1, 11, tzinfo=dt.UTC)
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)
Hist = dict[tuple[str, ...], tuple[list[int], int, int]]


@pytest.fixture(scope="module")
def sim() -> tuple[pl.DataFrame, pl.DataFrame]:
    out = generate(SimConfig(items=700, days=5, seed=19, start=T0))
    return out.events.select(out.events.columns), out.facilities


def _bucketed(spec: cat.MetricSpec, values: dict[tuple[str, ...], list[int]]) -> Hist:
    edges = [round(b * 1_000_000) for b in spec.buckets]
    out: Hist = {}
    for key, us in values.items():
        buckets = [0] * (len(edges) + 1)
        for v in us:
            buckets[bisect.bisect_left(edges, v)] += 1  # le is inclusive
        out[key] = (buckets, sum(us), len(us))
    return out


def expected(events: pl.DataFrame, facilities: pl.DataFrame) -> dict[str, Hist]:
    """Every stage histogram as the naive reference says, all time."""
    fac = {f["facility"]: f for f in facilities.to_dicts()}

    def where(f: str) -> tuple[str, str, str]:
        row = fac.get(f, {})
        return (f, str(row.get("type") or "unknown"), str(row.get("region") or "unknown"))

    rows = [{**e, "event": str(e["event"])} for e in events.to_dicts()]
    by_item = distinct_events(rows, FAR)
    dwell: dict[tuple[str, ...], list[int]] = defaultdict(list)
    leg: dict[tuple[str, ...], list[int]] = defaultdict(list)
    first: dict[tuple[str, ...], list[int]] = defaultdict(list)
    last: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for evs in by_item.values():
        for d, w in dwells(evs):
            if w is not None:
                dwell[where(d["facility"])].append(w // US)
        for d, a in legs(evs):
            leg[(where(d["facility"])[2], where(a["facility"])[2])].append(
                (a["ts"] - d["ts"]) // US
            )
        acc = sorted(
            (e for e in evs if e["event"] == "accepted"), key=lambda e: (e["ts"], e["event_id"])
        )
        if acc:
            deps = [e["ts"] for e in evs if e["event"] == "departed" and e["ts"] >= acc[0]["ts"]]
            if deps:
                key = (acc[0]["product"] or "unknown", acc[0]["origin"] or "unknown")
                first[key].append((min(deps) - acc[0]["ts"]) // US)
        delivered = [e["ts"] for e in evs if e["event"] == "delivered"]
        if delivered:
            at = min(delivered)
            arrivals = [e for e in evs if e["event"] == "arrived" and e["ts"] <= at]
            if arrivals:
                lst = max(arrivals, key=lambda e: (e["ts"], e["facility"]))
                last[where(lst["facility"])].append((at - lst["ts"]) // US)
    return {
        cat.STAGE_DWELL.name: _bucketed(cat.STAGE_DWELL, dwell),
        cat.STAGE_LEG.name: _bucketed(cat.STAGE_LEG, leg),
        cat.STAGE_FIRST_MILE.name: _bucketed(cat.STAGE_FIRST_MILE, first),
        cat.STAGE_LAST_MILE.name: _bucketed(cat.STAGE_LAST_MILE, last),
    }


def got(ing: Ingestor) -> dict[str, Hist]:
    return {
        spec.name: {
            k: (list(v.buckets), v.sum_us, v.count) for k, v in ing.counters.histogram_series(spec)
        }
        for spec in cat.STAGE_HISTOGRAMS
    }


def _drain(ing: Ingestor) -> None:
    while ing.step().pending:
        pass
    ing.step()


#: A horizon longer than the scenario (5 days): every order is within it.
LONG = dt.timedelta(days=10)


def _ingestor(data: Path, state: Path, horizon: dt.timedelta | None = LONG) -> Ingestor:
    config = IngestConfig(
        data, state, max_batch_bytes=64 << 10, max_batch_rows=1_500, late_grace=horizon
    )
    return Ingestor(config)


def _rounds(
    tmp_path: Path,
    sim: tuple[pl.DataFrame, pl.DataFrame],
    parts: list[pl.DataFrame],
    restart_after: int | None = None,
    horizon: dt.timedelta | None = LONG,
) -> Ingestor:
    """Write ``parts`` one after the other, each drained as its own set(s)."""
    events, facilities = sim
    data, state = tmp_path / "data", tmp_path / "state"
    write_frame(data / "facilities.csv", facilities)
    ing = _ingestor(data, state, horizon)
    rng = random.Random(7)
    for n, part in enumerate(parts):
        split_write(data / "events", part, pl.col("facility"), rng)
        _drain(ing)
        if restart_after == n:
            write_checkpoint(state, ing.capture())
            ing.close()
            ing = _ingestor(data, state, horizon)
    assert sum(p.height for p in parts) == events.height
    return ing


_WANT: dict[int, dict[str, Hist]] = {}


def _check(ing: Ingestor, sim: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    want = _WANT.setdefault(id(sim), expected(*sim))
    have = got(ing)
    for name, series in want.items():
        assert series, name  # the scenario exercises every stage
        assert have[name] == series, name
    assert dict(ing.counters.series(cat.STAGE_REVISIONS)) == {}
    assert dict(ing.counters.series(cat.EXPORTER_STAGE_LATE_SCANS)) == {}


def test_one_set_equals_the_reference(tmp_path: Path, sim: Any) -> None:
    """The whole history as one set, files cut by facility (scans of an item out of order)."""
    ing = _rounds(tmp_path, sim, [sim[0]])
    _check(ing, sim)
    assert ing.ledger.stages.height > 0


def _split(events: pl.DataFrame, cond: pl.Expr) -> list[pl.DataFrame]:
    return [events.filter(cond), events.filter(~cond)]


ORDERS: dict[str, Callable[[pl.DataFrame], list[pl.DataFrame]]] = {
    # Departures (and acceptances) first, their arrivals and deliveries in a later set.
    "closings_first": lambda e: _split(
        e, pl.col("event").cast(pl.String).is_in(["departed", "accepted"])
    ),
    # The newest scans first: each set older than the one before.
    "reverse_time": lambda e: list(
        reversed(
            e.sort("ts")
            .with_row_index("_n")
            .with_columns((pl.col("_n") * 3 // e.height).alias("_t"))
            .partition_by("_t", maintain_order=True, include_key=False)
        )
    ),
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_out_of_order_sets_equal_the_reference(tmp_path: Path, sim: Any, order: str) -> None:
    parts = [p.drop("_n", strict=False) for p in ORDERS[order](sim[0])]
    assert len(parts) >= 2 and all(p.height for p in parts)
    ing = _rounds(tmp_path, sim, parts)
    _check(ing, sim)


def test_restart_between_sets_equals_the_reference(tmp_path: Path, sim: Any) -> None:
    """A checkpoint after the first set, a new process for the rest."""
    parts = ORDERS["closings_first"](sim[0])
    ing = _rounds(tmp_path, sim, parts, restart_after=0)
    assert ing.restored_from is not None
    _check(ing, sim)


def test_a_retirement_keeps_the_scans_of_held_items(tmp_path: Path, sim: Any) -> None:
    """Item B's delivery waits for its acceptance (held, not in the state) while item A
    retires; B's arrival, read in a later set, still closes B's last mile."""
    _, facilities = sim
    office = facilities.filter(pl.col("type") == "delivery")["facility"][0]
    hub = facilities.filter(pl.col("type") == "processing")["facility"][0]
    h = dt.timedelta(hours=1)

    def ev(n: str, item: str, event: str, at: dt.timedelta, where: str) -> dict[str, Any]:
        accepted = event == "accepted"
        return {
            "event_id": n,
            "item_id": item,
            "event": event,
            "ts": T0 + at,
            "facility": where,
            "product": "express" if accepted else None,
            "origin": "CN-GD" if accepted else None,
            "destination": "CN-GD" if accepted else None,
        }

    first = events_frame(
        [
            ev("a1", "A", "accepted", 0 * h, hub),
            ev("a2", "A", "delivered", 1 * h, office),
            ev("b1", "B", "delivered", 100 * h, office),
        ]
    )
    later = events_frame([ev("b2", "B", "arrived", 97 * h, office)])
    data, state = tmp_path / "data", tmp_path / "state"
    write_frame(data / "facilities.csv", facilities)
    config = IngestConfig(data, state, retention=10 * h)
    ing = Ingestor(config)
    write_frame(data / "events" / "first.parquet", first)
    _drain(ing)
    assert ing.items["item_id"].to_list() == []  # A retired; B held
    assert ing.ledger.held["item_id"].to_list() == item_keys("B")
    write_frame(data / "events" / "later.parquet", later)
    _drain(ing)
    series = dict(ing.counters.histogram_series(cat.STAGE_LAST_MILE))
    assert [(k[0], v.count, v.sum_us) for k, v in series.items()] == [(office, 1, 3 * 3600 * 10**6)]


def _with_day(events: pl.DataFrame) -> pl.DataFrame:
    return events.with_columns(pl.col("ts").dt.truncate("1d").alias("_d"))


def test_sets_in_time_order_with_the_default_horizon(tmp_path: Path, sim: Any) -> None:
    """A day per set, the default one-day horizon: every older scan is summarised per
    item by the time the next day's scans pair with it, across a restart."""
    days = [
        d.drop("_d") for d in _with_day(sim[0]).sort("ts").partition_by("_d", maintain_order=True)
    ]
    assert len(days) >= 5
    ing = _rounds(tmp_path, sim, days, restart_after=2, horizon=dt.timedelta(days=1))
    _check(ing, sim)
    stages = ing.ledger.stages
    assert stages.mark is not None and stages.summary.height > 0
    # Only the last day's scans are kept as they are (plus up to FOLD_STEP, 6 h).
    oldest_kept = int(stages.rows.get_column("key").min()) // RANK_BITS
    newest = int(sim[0].get_column("ts").max().timestamp() * 1e6)
    assert newest - oldest_kept <= 30 * 3600 * 10**6


@pytest.mark.parametrize("seed", [1])
def test_random_order_within_the_horizon_equals_the_whole_history(
    tmp_path: Path, sim: Any, seed: int
) -> None:
    """Property: the scans cut into sets, each a random draw from the scans of the 20 hours
    after the oldest one left (so no scan comes more than a day after a later one), read
    with a one-day horizon (older scans summarised) and with the whole history kept:
    the same histograms and revisions, nothing beyond the horizon; and the report's
    answers wherever no interval was revised."""
    rng = random.Random(seed)
    events = sim[0].sort("ts")
    all_ts = events.get_column("ts").to_list()
    ts = list(all_ts)
    pending = list(range(events.height))
    parts: list[list[int]] = []
    while pending:
        window = pending[: bisect.bisect_right(ts, ts[0] + dt.timedelta(hours=20))]
        take = set(rng.sample(window, max(1, int(len(window) * rng.uniform(0.5, 0.95)))))
        take.add(window[0])
        parts.append(sorted(take, key=lambda _: rng.random()))
        pending = [p for p in pending if p not in take]
        ts = [all_ts[p] for p in pending]
    frames = [events[rows] for rows in parts]
    day = _rounds(tmp_path / "day", sim, frames, horizon=dt.timedelta(days=1))
    whole = _rounds(tmp_path / "whole", sim, frames)
    assert day.ledger.stages.summary.height > 0 and whole.ledger.stages.summary.is_empty()
    assert got(day) == got(whole)
    revised = dict(day.counters.series(cat.STAGE_REVISIONS))
    assert revised == dict(whole.counters.series(cat.STAGE_REVISIONS))
    assert dict(day.counters.series(cat.EXPORTER_STAGE_LATE_SCANS)) == {}
    want = _WANT.setdefault(id(sim), expected(*sim))
    stage_of = {
        cat.STAGE_DWELL.name: "dwell",
        cat.STAGE_LEG.name: "leg",
        cat.STAGE_FIRST_MILE.name: "first_mile",
        cat.STAGE_LAST_MILE.name: "last_mile",
    }
    for name, series in got(day).items():
        if (stage_of[name],) not in revised:
            assert series == want[name], name


def test_a_scan_beyond_the_horizon_is_counted_not_paired(tmp_path: Path, sim: Any) -> None:
    """X's departure from B (6 h) is read after the clock reached 50 h with a one-day
    horizon: counted as a late departure; its dwell is not observed, X's earlier stages
    (first mile 1 h, leg A -> B 4 h) and Y's are, and the lifecycle still counts the scan."""
    _, facilities = sim
    a, b = facilities.filter(pl.col("type") == "processing")["facility"][:2]
    h = dt.timedelta(hours=1)

    def ev(n: str, item: str, event: str, at: int, where: str) -> dict[str, Any]:
        accepted = event == "accepted"
        return {
            "event_id": n,
            "item_id": item,
            "event": event,
            "ts": T0 + at * h,
            "facility": where,
            "product": "express" if accepted else None,
            "origin": "CN-GD" if accepted else None,
            "destination": "CN-GD" if accepted else None,
        }

    sets = [
        [
            ev("x1", "X", "accepted", 0, a),
            ev("x2", "X", "departed", 1, a),
            ev("x3", "X", "arrived", 5, b),
        ],
        [ev("y1", "Y", "arrived", 49, b), ev("y2", "Y", "departed", 50, b)],
        [ev("x4", "X", "departed", 6, b)],
    ]
    data, state = tmp_path / "data", tmp_path / "state"
    write_frame(data / "facilities.csv", facilities)
    ing = _ingestor(data, state, dt.timedelta(days=1))
    for n, rows in enumerate(sets):
        write_frame(data / "events" / f"{n}.parquet", events_frame(rows))
        _drain(ing)
    late = dict(ing.counters.series(cat.EXPORTER_STAGE_LATE_SCANS))
    assert late == {("departed",): 1}
    dwell = {k[0]: (v.count, v.sum_us) for k, v in ing.counters.histogram_series(cat.STAGE_DWELL)}
    assert dwell == {b: (1, 3600 * 10**6)}  # Y's hour at B only
    legs = [(v.count, v.sum_us) for _, v in ing.counters.histogram_series(cat.STAGE_LEG)]
    assert legs == [(1, 4 * 3600 * 10**6)]
    first = [(v.count, v.sum_us) for _, v in ing.counters.histogram_series(cat.STAGE_FIRST_MILE)]
    assert first == [(1, 3600 * 10**6)]
    assert int(ing.counters.total(cat.EXPORTER_EVENTS_INGESTED)) == 6
