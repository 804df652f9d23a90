"""Stage KPIs (dwell, legs, first and last mile): hand-computed cases, and a property
test through real data folders (UPU aliases, offsets, repeated event ids, rows out of
order, the Parquet fast path) against the naive reference in ``stage_reference.py``.

Hand case, times in hours after ``T0`` = Monday 2027-01-11 02:00Z (10:00 Shanghai):

- A (express): accepted C1 0, departed C1 2, arrived PC1 5, departed PC1 9, arrived PC2
  20, departed PC2 26, arrived DO1 30, delivered DO1 36;
- B (express): accepted C1 8 (18:00 local, after the 17:00 cut-off: deposit day
  Tuesday), departed C1 24, arrived PC1 26, departed PC1 40, arrived PC2 41, arrived
  PC3 42 (a stray scan), departed PC2 50 (its latest arrival is PC3's: the rare path);
- C: accepted C1 0, never departs (its deposit day ended: not dispatched the same day);
- D (never accepted): arrived PC1 1, departed PC1 3, arrived PC1 5 (turned back: no leg).

Dwell (departures): A C1 (none), PC1 4, PC2 6; B C1 (none), PC1 14, PC2 9; D PC1 2 ->
handled 7, without arrival 2, hours [2, 4, 6, 9, 14]: mean 7, p50 6, p90 12.
Legs: A C1->PC1 3, PC1->PC2 11, PC2->DO1 4; B C1->PC1 2, PC1->PC2 1, PC1->PC3 2 ->
[1, 2, 2, 3, 4, 11]: mean 23/6, p50 2.5, p90 7.5.
First mile: A 2, B 16 -> p50 9, p90 14.6; same day: A, B yes, C no -> 2/3.
Last mile: A 6.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest
import reference
import stage_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi.events import RANK_BITS, STAGE
from kpi.kpis.catalog import KPI_BY_NAME, STAGE_KPIS
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.kpis.stage_build import tables_from_rows
from kpi.sources.folder import load_data_dir
from kpi.standards import DEFAULT_STANDARDS, StageTargets
from kpi.state_scan import ScannedState, scan_state
from tests.conftest import write_rows

Row = dict[str, Any]
T0 = dt.datetime(2027, 1, 11, 2, tzinfo=dt.UTC)
STAGE_NAMES = [k.name for k in STAGE_KPIS]


def at(h: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=h)


def hand_events(kit: Any) -> list[Row]:
    ev = kit.ev
    return [
        ev("A", "accepted", at(0), "C1"),
        ev("A", "departed", at(2), "C1"),
        ev("A", "arrived", at(5), "PC1"),
        ev("A", "departed", at(9), "PC1"),
        ev("A", "arrived", at(20), "PC2"),
        ev("A", "departed", at(26), "PC2"),
        ev("A", "arrived", at(30), "DO1"),
        ev("A", "delivered", at(36), "DO1"),
        ev("B", "accepted", at(8), "C1"),
        ev("B", "departed", at(24), "C1"),
        ev("B", "arrived", at(26), "PC1"),
        ev("B", "departed", at(40), "PC1"),
        ev("B", "arrived", at(41), "PC2"),
        ev("B", "arrived", at(42), "PC3"),
        ev("B", "departed", at(50), "PC2"),
        ev("C", "accepted", at(0), "C1"),
        ev("D", "arrived", at(1), "PC1"),
        ev("D", "departed", at(3), "PC1"),
        ev("D", "arrived", at(5), "PC1"),
    ]


def hand_facilities(kit: Any) -> list[Row]:
    return [
        kit.facility("C1", type="collection", region="CN-BJ"),
        kit.facility("PC1", region="CN-BJ"),
        kit.facility("PC2", region="CN-SH"),
        kit.facility("PC3", region="CN-GD"),
        kit.facility("DO1", type="delivery", region="CN-SH"),
    ]


def test_hand_case(kit: Any) -> None:
    got = kit.answer(hand_events(kit), STAGE_NAMES, facilities=hand_facilities(kit))[()]
    want = {
        "handled_items": 7,
        "departures_without_arrival": 2,
        "dwell_hours_mean": 7.0,
        "dwell_hours_p50": 6.0,
        "dwell_hours_p90": 12.0,
        "dwell_within_target_ratio": None,
        "leg_items": 6,
        "leg_hours_mean": 23 / 6,
        "leg_hours_p50": 2.5,
        "leg_hours_p90": 7.5,
        "leg_within_target_ratio": None,
        "first_mile_hours_p50": 9.0,
        "first_mile_hours_p90": 14.6,
        "dispatched_same_day_ratio": 2 / 3,
        "last_mile_hours_p50": 6.0,
        "last_mile_hours_p90": 6.0,
    }
    kit.assert_close({(): got}, {(): want})


def test_hand_case_grouped(kit: Any) -> None:
    events, facs = hand_events(kit), hand_facilities(kit)
    dwell = ["handled_items", "dwell_hours_p90"]
    by_fac = kit.answer(events, dwell, facilities=facs, by=["facility"])
    assert by_fac[("PC1",)] == {"handled_items": 3, "dwell_hours_p90": pytest.approx(12.0)}
    assert by_fac[("C1",)] == {"handled_items": 2, "dwell_hours_p90": None}
    routes = kit.answer(events, ["leg_items"], facilities=facs, by=["from_facility", "to_facility"])
    assert routes[("PC1", "PC2")] == {"leg_items": 2}
    assert routes[("PC1", "PC3")] == {"leg_items": 1}
    assert ("PC1", "PC1") not in routes  # D turned back: no leg
    regions = kit.answer(events, ["leg_items"], facilities=facs, by=["from_region", "to_region"])
    assert regions[("CN-BJ", "CN-BJ")] == {"leg_items": 2}  # C1->PC1 twice
    last = kit.answer(events, ["last_mile_hours_p50"], facilities=facs, by=["facility"])
    assert last == {("DO1",): {"last_mile_hours_p50": 6.0}}


def test_targets(kit: Any) -> None:
    standards = DEFAULT_STANDARDS.model_copy(
        update={
            "stages": StageTargets.model_validate(
                {"dwell_hours": {"processing": 8, "default": 24}, "leg_hours": {"default": 3}}
            )
        }
    )
    got = kit.answer(
        hand_events(kit),
        ["dwell_within_target_ratio", "leg_within_target_ratio"],
        facilities=hand_facilities(kit),
        standards=standards,
    )[()]
    # dwell: PC1 4, PC2 6, PC1 2 within 8 h; 14 and 9 not -> 3/5; legs <= 3 h: 4 of 6.
    assert got == {
        "dwell_within_target_ratio": pytest.approx(0.6),
        "leg_within_target_ratio": pytest.approx(4 / 6),
    }


def test_facility_missing_from_the_table(kit: Any) -> None:
    # PC2 is not in facilities.csv: its dwells (A 6, B 9) have no type or region and are
    # judged by the default target (24 h); legs into or out of it have no region.
    standards = DEFAULT_STANDARDS.model_copy(
        update={
            "stages": StageTargets.model_validate(
                {"dwell_hours": {"processing": 8, "default": 24}, "leg_hours": {"default": 3}}
            )
        }
    )
    facs = [f for f in hand_facilities(kit) if f["facility"] != "PC2"]
    events = hand_events(kit)
    got = kit.answer(events, ["dwell_within_target_ratio"], facilities=facs, standards=standards)
    assert got[()] == {"dwell_within_target_ratio": pytest.approx(4 / 5)}  # all but PC1 14
    by_type = kit.answer(events, ["handled_items"], facilities=facs, by=["facility_type", "region"])
    assert by_type[(None, None)] == {"handled_items": 2}
    assert by_type[("processing", "CN-BJ")] == {"handled_items": 3}
    regions = kit.answer(events, ["leg_items"], facilities=facs, by=["from_region", "to_region"])
    # PC1->PC2 (A, B) and PC2->DO1 (A) lose a region; PC1->PC3 (B) keeps both.
    assert regions[("CN-BJ", None)] == {"leg_items": 2}
    assert regions[(None, "CN-SH")] == {"leg_items": 1}
    assert regions[("CN-BJ", "CN-GD")] == {"leg_items": 1}


def test_as_of_cut(kit: Any) -> None:
    # At 25 h: departures A C1 2, A PC1 9, D PC1 3, B C1 24 (A PC2 at 26 is cut);
    # legs A C1->PC1, PC1->PC2 (B's arrival at PC1, 26 h, is cut).
    got = kit.answer(
        hand_events(kit),
        ["handled_items", "leg_items"],
        facilities=hand_facilities(kit),
        as_of=at(25),
    )[()]
    assert got == {"handled_items": 4, "leg_items": 2}


def test_stage_targets_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError):
        StageTargets.model_validate({"dwell_hours": {"hub": 6}})
    with pytest.raises(ValueError):
        StageTargets.model_validate({"leg_hours": {"default": -1}})


# --- property: data folders (aliases, offsets, repeats, order, fast path) vs the reference --

ALIASES = {
    "accepted": ["accepted", "EMA", "ema"],
    "arrived": ["arrived", "EMB", "EMD", "emg", "EMJ"],
    "departed": ["departed", "EMC", "EMF", "EMK"],
    "delivered": ["delivered", "EMI"],
    "out_for_delivery": ["out_for_delivery"],
}
FACS = ("F1", "F2", "F3", "F4")
scan = st.tuples(
    st.sampled_from(list(ALIASES)),
    st.integers(0, 72),  # hours: many ties
    st.sampled_from(FACS),
    st.sampled_from([0, 0, 1]),  # +1 us jitter
)
itinerary = st.tuples(
    st.sampled_from(["express", "standard", "mystery"]),
    st.lists(scan, min_size=1, max_size=8),
)


def _iso(ts: dt.datetime, offset_hours: int) -> str:
    return ts.astimezone(dt.timezone(dt.timedelta(hours=offset_hours))).isoformat()


def _answers(snap: Snapshot, by: list[str], as_of: dt.datetime | None) -> dict[Any, Row]:
    names = [n for n in STAGE_NAMES if set(by) <= set(KPI_BY_NAME[n].dimensions)]
    frame = snap.query(KpiQuery(kpis=tuple(names), by=tuple(by), as_of=as_of))
    keys = [c for c in frame.columns if c not in names]
    return {tuple(r.pop(k) for k in keys): r for r in frame.to_dicts()}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(items=st.lists(itinerary, min_size=1, max_size=6), data=st.data())
def test_folders_match_reference(
    kit: Any, tmp_path_factory: Any, items: list[Any], data: st.DataObject
) -> None:
    canonical: list[Row] = []
    for n, (product, scans) in enumerate(items):
        for event, h, fac, us in scans:
            canonical.append(
                kit.ev(
                    f"I{n}",
                    event,
                    at(h) + dt.timedelta(microseconds=us),
                    fac,
                    product=product if event == "accepted" else None,
                    event_id=f"e{len(canonical):03d}",
                )
            )
    rnd = data.draw(st.randoms(use_true_random=False), label="random")
    # The text feed: aliases, offsets, some scans twice (same id), shuffled.
    text = [
        {
            **{k: (None if v is None else str(v)) for k, v in e.items()},
            "event": rnd.choice(ALIASES[e["event"]]),
            "ts": _iso(e["ts"], rnd.choice([0, 8, -5])),
        }
        for e in canonical
    ]
    text += [dict(r) for r in rnd.sample(text, k=min(len(text), rnd.randint(0, 3)))]
    rnd.shuffle(text)
    root = tmp_path_factory.mktemp("stages")
    write_rows(root / "text" / "events" / "a.csv", text)
    parquet = [{k: (None if v is None else str(v)) for k, v in e.items()} for e in canonical]
    write_rows(root / "typed" / "events" / "a.parquet", parquet, typed=True)
    facs = [
        kit.facility(f, type=t, region=r)
        for f, t, r in (
            ("F1", "collection", "CN-BJ"),
            ("F2", "processing", "CN-SH"),
            ("F3", "delivery", "CN-SH"),
        )
    ]
    for sub in ("text", "typed"):
        pl.DataFrame(facs).write_csv(root / sub / "facilities.csv")
    latest = max(e["ts"] for e in canonical)
    as_of = data.draw(st.none() | st.sampled_from([e["ts"] for e in canonical]), label="as_of")
    effective = as_of or latest
    start = min(e["ts"] for e in canonical)
    q = reference.Question(
        [], effective, start, effective + dt.timedelta(microseconds=1), None, "UTC", 48.0
    )
    # The typed folder takes the report's fast path; the text one the validated rows.
    assert isinstance(scan_state(load_data_dir(root / "typed").event_files, as_of), ScannedState)
    assert isinstance(scan_state(load_data_dir(root / "text").event_files, as_of), str)
    # With ``stages`` the typed folder's stage rows come from the fast path's pass and
    # its state (first acceptance and delivery): the report's own build.
    for sub, stages in (("text", False), ("typed", False), ("typed", True)):
        snap = Snapshot.from_dataset(load_data_dir(root / sub), as_of, stages=stages)
        for by in (
            [],
            ["facility"],
            ["facility_type", "region"],
            ["from_facility", "to_facility"],
            ["from_region", "to_region"],
            ["origin", "product"],
            ["destination", "facility", "product"],
        ):
            got = _answers(snap, by, as_of)
            q.by = by
            items_by_id = reference.lifecycle(canonical, DEFAULT_STANDARDS, effective)
            fams = {
                KPI_BY_NAME[n].family.value
                for n in STAGE_NAMES
                if set(by) <= set(KPI_BY_NAME[n].dimensions)
            }
            want: dict[Any, Row] = {}
            for res in stage_reference.families(
                canonical, items_by_id, facs, DEFAULT_STANDARDS, q, fams
            ):
                for k, row in res.items():
                    want.setdefault(k, {}).update(row)
            names = [n for n in STAGE_NAMES if set(by) <= set(KPI_BY_NAME[n].dimensions)]
            for row in want.values():
                for n in names:
                    row.setdefault(n, None if n in stage_reference.FLOAT_KPIS else 0)
            kit.assert_close(got, want)


# --- the stage rows kept in the lifecycle's pass equal the ones read again ---------------


def _table_rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    """A stage table as sorted rows (facilities as text: comparable across builds)."""
    cats = [c for c, t in frame.schema.items() if t == pl.Categorical]
    frame = frame.with_columns(pl.col(cats).cast(pl.String))
    return sorted(frame.rows(), key=repr)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    items=st.lists(itinerary, min_size=1, max_size=6),
    rejects=st.lists(st.sampled_from(["null_id", "unknown", "null_ts", "null_facility"])),
    data=st.data(),
)
def test_stage_rows_of_the_scan_equal_a_second_read(
    kit: Any, tmp_path_factory: Any, items: list[Any], rejects: list[str], data: st.DataObject
) -> None:
    """``Snapshot.from_dataset(..., stages=True)`` keeps the stage scans in the fast
    path's pass (``scan_state(stage_rows=True)``); the tables must equal those built from
    a second read of the files: rows out of order across items and files, ties, rows the
    validation rejects (either branch of the pass), the as-of cut."""
    rows: list[Row] = []
    for n, (product, scans) in enumerate(items):
        for event, h, fac, us in scans:
            at_ = at(h) + dt.timedelta(microseconds=us)
            rows.append(
                kit.ev(f"I{n}", event, at_, fac, product=product if event == "accepted" else None)
            )
    rnd = data.draw(st.randoms(use_true_random=False), label="random")
    for i, kind in enumerate(rejects):
        bad = dict(rows[rnd.randrange(len(rows))])
        bad["event_id"] = None if kind == "null_id" else f"bad{i}"
        bad["event"] = "teleported" if kind == "unknown" else bad["event"]
        bad["ts"] = None if kind == "null_ts" else bad["ts"]
        bad["facility"] = None if kind == "null_facility" else bad["facility"]
        rows.append(bad)
    for i, r in enumerate(rows):
        r["event_id"] = r["event_id"] and f"e{i:03d}"
    rnd.shuffle(rows)
    text = [{k: (None if v is None else str(v)) for k, v in r.items()} for r in rows]
    root = tmp_path_factory.mktemp("fused")
    cut = rnd.randint(0, len(text))
    write_rows(root / "events" / "a.parquet", text[:cut] or text, typed=True)
    if cut and cut < len(text):
        write_rows(root / "events" / "b.parquet", text[cut:], typed=True)
    as_of = data.draw(
        st.none() | st.sampled_from([r["ts"] for r in rows if r["ts"] is not None]), label="as_of"
    )
    ds = load_data_dir(root)
    scanned = scan_state(ds.event_files, as_of, stage_rows=True)
    assert isinstance(scanned, ScannedState) and scanned.stage_rows is not None
    kept = tables_from_rows(scanned.stage_rows)
    assert kept is not None  # no two ids share a hash here: the kept rows are used
    fused = Snapshot.from_dataset(ds, as_of, stages=True).stages
    assert _table_rows(kept.scans) == _table_rows(fused.scans)
    again = Snapshot.from_dataset(ds, as_of).stages
    for part in ("scans", "items", "ids"):
        got, want = getattr(fused, part), getattr(again, part)
        assert _table_rows(got) == _table_rows(want), part


def test_items_of_the_pass_at_ties_and_out_of_order(kit: Any, tmp_path: Any) -> None:
    """The report's build takes an item's first acceptance and delivery from the fast
    path's state: a departure at the acceptance's instant is after it, an arrival at
    the delivery's instant before it; a departure before the acceptance and an arrival
    after the delivery are passed over; the first of two acceptances and deliveries
    counts. Hand-computed, and equal to the build from a second read of the events."""
    ev = kit.ev
    events = [
        ev("T", "accepted", at(1), "C1"),
        ev("T", "departed", at(1), "C1"),  # same instant: after the acceptance
        ev("T", "arrived", at(4), "DO1"),
        ev("T", "delivered", at(4), "DO1"),  # same instant: the arrival counts
        ev("E", "departed", at(0), "C1"),  # before the acceptance: not the first
        ev("E", "accepted", at(2), "C1"),
        ev("E", "accepted", at(3), "C1"),  # a second acceptance: the first counts
        ev("E", "departed", at(5), "C1"),
        ev("E", "arrived", at(7), "DO1"),
        ev("E", "delivered", at(9), "DO1"),
        ev("E", "arrived", at(10), "DO2"),  # after the delivery: not the last
        ev("E", "delivered", at(11), "DO2"),  # a second delivery: the first counts
        ev("N", "arrived", at(6), "PC1"),  # neither accepted nor delivered: no item row
    ]
    rows = [{k: (None if v is None else str(v)) for k, v in e.items()} for e in events]
    for i, r in enumerate(rows):
        r["event_id"] = f"t{i:02d}"
    write_rows(tmp_path / "events" / "a.parquet", rows[::-1], typed=True)
    ds = load_data_dir(tmp_path)
    fused = Snapshot.from_dataset(ds, stages=True).stages
    cols = ["accepted_at", "first_departed_at", "delivered_at", "last_arrived_at"]
    items = fused.items.join(fused.ids, on="h").sort("item_id")
    assert items["item_id"].to_list() == ["E", "T"]
    assert items.select(cols).rows() == [(at(2), at(5), at(9), at(7)), (at(1), at(1), at(4), at(4))]
    assert items["last_arrival_facility"].cast(pl.String).to_list() == ["DO1", "DO1"]
    again = Snapshot.from_dataset(ds).stages
    for part in ("scans", "items", "ids"):
        assert _table_rows(getattr(fused, part)) == _table_rows(getattr(again, part)), part


def _rows_of(*scans: tuple[int, int, str, str, int]) -> pl.DataFrame:
    """Stage rows (h, key, facility, h2) of (h, h2, event, facility, hour) scans."""
    return pl.DataFrame(
        {
            "h": [s[0] for s in scans],
            "key": [int(at(s[4]).timestamp()) * 10**6 * RANK_BITS + STAGE[s[2]] for s in scans],
            "facility": [s[3] for s in scans],
            "h2": [s[1] for s in scans],
        },
        schema={"h": pl.UInt64, "key": pl.Int64, "facility": pl.Categorical, "h2": pl.UInt64},
    )


@pytest.mark.parametrize(
    ("other", "clash"),
    [
        ((1, 20, "arrived", "PC2", 3), True),  # both items have moves
        ((1, 20, "accepted", "C2", 0), True),  # the other has an acceptance alone
        ((1, 20, "delivered", "DO1", 9), True),  # ... or a delivery alone
        ((2, 20, "arrived", "PC2", 3), False),  # another h: no clash
    ],
)
def test_two_ids_sharing_a_hash_are_told(
    other: tuple[int, int, str, str, int], clash: bool
) -> None:
    # Item X (h 1, h2 10): accepted, departed C1, arrived PC1; the other id shares h or not.
    x = [(1, 10, "accepted", "C1", 0), (1, 10, "departed", "C1", 1), (1, 10, "arrived", "PC1", 2)]
    built = tables_from_rows(_rows_of(*x, other))
    assert (built is None) == clash
    if built is not None:
        assert built.scans.filter(pl.col("kind") == "leg").height == 1
        assert built.items.filter(pl.col("h") == 1)["first_departed_at"].to_list() == [at(1)]
