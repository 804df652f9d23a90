"""Property: on random small data sets every KPI equals the naive reference.

Random items travel random routes (out of order, duplicated scans, ties at the same
instant, scans at unknown facilities, items never accepted, unknown products);
complaints come in several versions; facilities have random thresholds; a few
hand-placed cases sit exactly on (or 1 us around) every time boundary. Each data
set is asked several questions: every KPI ungrouped, each family by random
dimensions, mixed families, and window KPIs by hour/day/week/month in several zones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
import reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi.contract import COMPLAINT_CATEGORIES, FACILITY_TYPES
from kpi.kpis.catalog import FAMILY_DIMS, GRANULARITIES, KPI_BY_NAME, KPIS, Family, KpiError
from kpi.kpis.query import Snapshot
from kpi.standards import DEFAULT_STANDARDS

Row = dict[str, Any]
BASE = dt.datetime(2027, 1, 28, tzinfo=dt.UTC)  # spans the end of January and the holidays
REGIONS = ("CN-BJ", "CN-SH", "CN-XZ", "CN-GD")
FACILITIES = ("F1", "F2", "F3", "F4")
ZONES = ("UTC", "Asia/Shanghai", "Asia/Kolkata")
STEPS = (
    "arrived",
    "arrived",
    "departed",
    "out_for_delivery",
    "delivery_failed",
    "delivered",
    "delivered",
    "returned",
)

# Instants mostly on an hour grid (ties; exact 6/12/24/48/72 h and 7 d distances), with
# +-1 us jitter, sometimes anywhere.
JITTER = st.sampled_from([0, 0, 0, 1, -1]).map(lambda us: dt.timedelta(microseconds=us))
offsets = st.one_of(
    st.builds(lambda h, j: dt.timedelta(hours=h) + j, st.integers(0, 24 * 20), JITTER),
    st.integers(0, 20 * 86_400 * 10**6).map(lambda us: dt.timedelta(microseconds=us)),
)
instants = offsets.map(lambda d: BASE + d)
# Acceptances exactly at (or 1 us around) the cut-offs: 15:00 and 17:00 in Shanghai.
at_cutoff = st.builds(
    lambda d, h, j: BASE + dt.timedelta(days=d, hours=h) + j,
    st.integers(0, 14),
    st.sampled_from([7, 9]),
    JITTER,
)
EDGE_HOURS = (0, 6, 12, 24, 48, 72)
hours_after = st.sampled_from(EDGE_HOURS) | st.integers(0, 24 * 8)
# A scan time relative to acceptance: some hours later, or the end of a Shanghai day
# (where computed promises fall) some days later, or a given promise plus whole days.
step_time = st.tuples(st.sampled_from(["after", "day_end", "promise"]), hours_after, JITTER)

item_plan = st.fixed_dictionaries(
    {
        "accepted": st.booleans() | st.just(True),
        "product": st.sampled_from(["express", "standard", "economy", "mystery"]),
        "origin": st.sampled_from(REGIONS),
        "destination": st.sampled_from(REGIONS),
        "promised": st.none() | hours_after,
        "accepted_at": instants | at_cutoff,
        "steps": st.lists(
            st.tuples(st.sampled_from(STEPS), step_time, st.sampled_from([*FACILITIES, "X9"])),
            max_size=6,
        ),
        "extra_acceptance": st.none() | st.just("same") | instants,
    }
)
complaint_plan = st.fixed_dictionaries(
    {
        "opened_at": instants,
        "region": st.sampled_from([*REGIONS, "CN-HB"]),
        "product": st.none() | st.sampled_from(["express", "standard", "mystery"]),
        "category": st.sampled_from(COMPLAINT_CATEGORIES),
        "valid": st.none() | st.booleans(),
        "resolved_after": st.none()
        | st.sampled_from([dt.timedelta(days=7), dt.timedelta(days=7, microseconds=1)])
        | st.integers(0, 24 * 12).map(lambda h: dt.timedelta(hours=h)),
        "versions": st.integers(1, 2),
        "updated": st.none() | instants,
    }
)
facility_plan = st.fixed_dictionaries(
    {
        "type": st.sampled_from(FACILITY_TYPES),
        "region": st.sampled_from(REGIONS),
        "threshold": st.none() | st.integers(0, 3),
    }
)


def shanghai_day_end(ts: dt.datetime) -> dt.datetime:
    """The last microsecond of the Shanghai (UTC+8) day holding ``ts``."""
    local = ts + dt.timedelta(hours=8)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), dt.UTC)
    return midnight - dt.timedelta(hours=8, microseconds=1)


def build_events(plans: list[Row], scramble: int) -> list[Row]:
    """Events of every planned item (scans relative to acceptance, in any order)."""
    events: list[Row] = []

    def add(item: str, event: str, ts: dt.datetime, facility: str, **kw: Any) -> None:
        events.append(
            {
                # ids not in insertion order, so the acceptance tie rule is exercised
                "event_id": f"e{(len(events) * scramble) % 997:03d}",
                "item_id": item,
                "event": event,
                "ts": ts,
                "facility": facility,
                "product": kw.get("product"),
                "origin": kw.get("origin"),
                "destination": kw.get("destination"),
                "promised_by": kw.get("promised_by"),
                "reason": "addressee_absent" if event == "delivery_failed" else None,
            }
        )

    for i, p in enumerate(plans):
        item = f"I{i:02d}"
        accepted_at = p["accepted_at"]
        info = {"product": p["product"], "origin": p["origin"], "destination": p["destination"]}
        promised = None
        if p["promised"] is not None:
            promised = accepted_at + dt.timedelta(hours=p["promised"])
        if p["accepted"]:
            add(item, "accepted", accepted_at, "C1", promised_by=promised, **info)
        extra = p["extra_acceptance"]
        if extra is not None:
            at = accepted_at if extra == "same" else extra
            add(item, "accepted", at, "C2", **info | {"product": "standard"})
        for event, (kind, n, jitter), facility in p["steps"]:
            if kind == "day_end":
                ts = shanghai_day_end(accepted_at) + dt.timedelta(days=n % 9)
            elif kind == "promise" and promised is not None:
                ts = promised + dt.timedelta(days=n % 4)
            else:
                ts = accepted_at + dt.timedelta(hours=n)
            add(item, event, ts + jitter, facility)
        if not p["accepted"] and not p["steps"] and extra is None:
            add(item, "arrived", accepted_at, "F1")
    return events


def build_complaints(plans: list[Row]) -> list[Row]:
    out = []
    for i, p in enumerate(plans):
        resolved = None if p["resolved_after"] is None else p["opened_at"] + p["resolved_after"]
        row = {
            "complaint_id": f"C{i:02d}",
            "opened_at": p["opened_at"],
            "category": p["category"],
            "item_id": None,
            "region": p["region"],
            "product": p["product"],
            "valid": p["valid"],
            "resolved_at": resolved,
            "updated_at": p["updated"],
        }
        if p["versions"] == 2:  # an older, unresolved version read after the latest one
            older = dict(row, resolved_at=None, valid=None, updated_at=None)
            out += [row, older] if p["updated"] is not None else [older, row]
        else:
            out.append(row)
    return out


# Hand-placed boundary cases, relative to as-of or to the exact promise (drawn at random):
# delivered k days after the deadline of an acceptance at the cut-off (+-1 us each), a
# last scan 6/12/24/48 h before as-of, a complaint opened 7 days before as-of, two scans
# of one item at the same instant.
edge_plan = st.tuples(
    st.sampled_from(["late", "wait", "complaint", "tie"]),
    st.sampled_from(["express", "standard", "economy"]),
    st.sampled_from(REGIONS),
    st.sampled_from(REGIONS),
    st.integers(0, 14),
    st.integers(0, 3),
    JITTER,
    JITTER,
    st.tuples(st.sampled_from(STEPS), st.sampled_from([*FACILITIES, "X9"])),
    st.tuples(st.sampled_from(STEPS), st.sampled_from([*FACILITIES, "X9"])),
)
CUTOFF_UTC = {"express": 9, "standard": 7, "economy": 7}  # 17:00 / 15:00 in Shanghai


def edge_cases(plans: list[tuple[Any, ...]], as_of: dt.datetime) -> tuple[list[Row], list[Row]]:
    """Events and complaints of the boundary cases, none after ``as_of``."""
    events: list[Row] = []
    complaints: list[Row] = []
    for i, (kind, product, origin, dest, day, k, j1, j2, scan1, scan2) in enumerate(plans):
        item = f"E{i:02d}"
        info = {"product": product, "origin": origin, "destination": dest}
        scans: list[tuple[str, dt.datetime, str, Row]] = []
        if kind == "late":
            at_cutoff = BASE + dt.timedelta(days=day, hours=CUTOFF_UTC[product])
            promise = reference.deadline(at_cutoff, product, origin, dest, DEFAULT_STANDARDS)
            assert promise is not None
            scans.append(("accepted", at_cutoff + j1, "C1", info))
            scans.append(("delivered", promise + dt.timedelta(days=k) + j2, "D1", {}))
        elif kind == "wait":
            scans.append(("accepted", as_of - dt.timedelta(hours=100), "C1", info))
            age = dt.timedelta(hours=(6, 12, 24, 48)[k])
            scans.append((scan1[0], as_of - age + j1, scan1[1], {}))
        elif kind == "tie":
            scans.append(("accepted", as_of - dt.timedelta(hours=60), "C1", info))
            at = as_of - dt.timedelta(hours=(0, 6, 24, 48)[k]) + j1
            scans += [(scan1[0], at, scan1[1], {}), (scan2[0], at, scan2[1], {})]
        else:
            opened = as_of - dt.timedelta(days=7) + j1
            complaints.append(
                {
                    "complaint_id": f"CE{i:02d}",
                    "opened_at": opened,
                    "category": "delay",
                    "item_id": None,
                    "region": dest,
                    "product": product,
                    "valid": bool(k % 2),
                    "resolved_at": opened + dt.timedelta(days=7) + j2 if k < 2 else None,
                    "updated_at": None,
                }
            )
        for n, (event, ts, facility, extra) in enumerate(scans):
            if ts <= as_of:
                events.append(
                    {
                        "event_id": f"x{i:02d}{n}",
                        "item_id": item,
                        "event": event,
                        "ts": ts,
                        "facility": facility,
                        "product": extra.get("product"),
                        "origin": extra.get("origin"),
                        "destination": extra.get("destination"),
                        "promised_by": None,
                        "reason": "addressee_absent" if event == "delivery_failed" else None,
                    }
                )
    return events, complaints


def names_for(by: list[str], granularity: str | None) -> list[str]:
    return [
        k.name for k in KPIS if set(by) <= set(k.dimensions) and (granularity is None or k.windowed)
    ]


#: A KPI of each branch of the flow family (by time column: accepted, delivered, returned,
#: first attempt).
BRANCH_KPIS = ("accepted_items", "on_time_ratio", "returned_items", "first_attempt_ratio")


def assert_same_prepared(
    kit: Any, snap: Snapshot, prepared: Snapshot, names: list[str], **kw: Any
) -> None:
    """The prepared snapshot's answer is the same to the last bit.

    Only flow and network KPIs grouped by a dimension take its Enum path, and not the
    means (grouped on text): the question is cut to those, the rest being the same code.
    """
    coded_families = (Family.FLOW, Family.NETWORK)
    asked = [
        n for n in names if not n.endswith("_mean") and KPI_BY_NAME[n].family in coded_families
    ]
    if not kw.get("by") or not asked:
        return
    same = kit.query(snap, *asked, **kw)
    coded = kit.query(prepared, *asked, **kw)
    assert coded.schema == same.schema and coded.equals(same), (asked, kw)
    # One KPI of each flow branch alone: its counts and the other branches' keys then come
    # from the prepared snapshot's flow counts per hour (the answer must be the same).
    for name in (n for n in BRANCH_KPIS if n in asked):
        same = kit.query(snap, name, **kw)
        coded = kit.query(prepared, name, **kw)
        assert coded.schema == same.schema and coded.equals(same), (name, kw)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    items=st.lists(item_plan, min_size=1, max_size=10),
    complaints=st.lists(complaint_plan, max_size=6),
    facilities=st.lists(facility_plan, max_size=4),
    data=st.data(),
)
def test_every_kpi_matches_reference(
    kit: Any, items: list[Row], complaints: list[Row], facilities: list[Row], data: st.DataObject
) -> None:
    events = build_events(items, data.draw(st.sampled_from([1, 7, 331, 996]), label="ids"))
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=3), label="duplicates")
    events = events + duplicates
    comps = build_complaints(complaints)
    facs = [
        {
            "facility": fid,
            "name": fid,
            "type": f["type"],
            "region": f["region"],
            "backlog_threshold": f["threshold"],
        }
        for fid, f in zip(FACILITIES, facilities, strict=False)
    ]
    # As-of: the latest event, anywhere, or an exact band/stall/7-day distance after a record.
    after_event = st.builds(
        lambda a, h, j: a + dt.timedelta(hours=h) + j,
        st.sampled_from([e["ts"] for e in events]),
        st.sampled_from([0, 6, 12, 24, 48]),
        JITTER,
    )
    choices = [st.none(), instants, after_event, after_event]
    if comps:
        opened = st.sampled_from([c["opened_at"] for c in comps])
        choices.append(st.builds(lambda a, j: a + dt.timedelta(days=7) + j, opened, JITTER))
    as_of = data.draw(st.one_of(choices), label="as_of")
    edge_events, edge_complaints = edge_cases(
        data.draw(st.lists(edge_plan, max_size=4), label="edges"),
        as_of or max(e["ts"] for e in events),
    )
    events += edge_events
    comps += edge_complaints
    snap = kit.snapshot(events, comps, facs, as_of)
    # As the API keeps it: dimensions also as Enums, which flow and network group on.
    prepared = replace(snap)
    prepared.prepare()

    def check(names: list[str] | None, by: list[str], **kw: Any) -> None:
        expected_names = names or names_for(by, kw.get("granularity"))
        frame = kit.query(snap, *(names or ()), by=by, as_of=as_of, **kw)
        assert frame.columns[len(by) + bool(kw.get("granularity")) :] == expected_names
        got = kit.keyed(frame, expected_names)
        want = reference.kpis(
            events, comps, facs, DEFAULT_STANDARDS, expected_names, by=by, as_of=as_of, **kw
        )
        kit.assert_close(got, want)
        assert_same_prepared(kit, snap, prepared, expected_names, by=by, as_of=as_of, **kw)

    window = data.draw(st.sampled_from(["default", "start", "end", "both"]), label="window")
    kw: dict[str, Any] = {}
    if window in ("start", "both"):
        kw["start"] = data.draw(instants, label="start")
    if window in ("end", "both"):
        kw["end"] = (
            (kw.get("start") or BASE)
            + data.draw(offsets, label="length")
            + dt.timedelta(microseconds=1)
        )

    effective_as_of = as_of or max(e["ts"] for e in events)
    end = kw.get("end", effective_as_of + dt.timedelta(microseconds=1))
    if "start" in kw and end <= kw["start"]:
        with pytest.raises(KpiError, match="must be before"):
            kit.query(snap, by=[], as_of=as_of, **kw)
        return

    # 1. every KPI, ungrouped
    check(None, [], **kw)
    # 2. each family by random dimensions (0-2 of them)
    for family in Family:
        dims = data.draw(
            st.lists(st.sampled_from(FAMILY_DIMS[family]), max_size=2, unique=True),
            label=f"{family.value} dims",
        )
        check([k.name for k in KPIS if k.family is family], dims, **kw)
    # ... and the stall limit
    stall = data.draw(st.sampled_from([48.0, 24.0, 6.0, 0.5]), label="stall hours")
    check(["stalled_items", "in_network_items"], [], stall_hours=stall, **kw)
    # 3. every family at once by a shared dimension
    check(None, [data.draw(st.sampled_from(["region", "product"]), label="shared dim")], **kw)
    # 4. window KPIs in time buckets
    granularity = data.draw(st.sampled_from(GRANULARITIES), label="granularity")
    tz = data.draw(st.sampled_from(ZONES), label="tz")
    dims = data.draw(st.lists(st.sampled_from(["region", "product"]), max_size=2, unique=True))
    check(None, dims, granularity=granularity, tz=tz, **kw)
    flow_dims = data.draw(st.lists(st.sampled_from(FAMILY_DIMS[Family.FLOW]), max_size=1))
    flow = [k.name for k in KPIS if k.family is Family.FLOW]
    check(flow, flow_dims, granularity=granularity, tz=tz, **kw)
