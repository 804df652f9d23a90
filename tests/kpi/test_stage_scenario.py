"""The simulator's scripted incidents stand out in the stage KPIs, in the report and the API.

- The slowed hub (``INCIDENT_SLOW_HUB``) has the worst dwell p90 of all facilities.
- The delayed trunk route (``INCIDENT_ROUTE``) has the worst leg p90 of all region pairs
  over the whole demo, the remote routes (days-long line hauls in any week, a handful of
  legs each) included; and it is the pair whose leg p90 rose the most in its incident
  week over the week before (pairs with at least 5 legs in both weeks).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from kpi.kpis.query import KpiQuery, Snapshot
from kpi.simulate import (
    INCIDENT_ROUTE,
    INCIDENT_SLOW_HUB,
    SimConfig,
    generate,
    incident_schedule,
    write_data_folder,
)
from kpi.sources.folder import load_data_dir
from tests.api.conftest import api_client

DAYS = 30


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Snapshot]:
    out = tmp_path_factory.mktemp("scenario")
    write_data_folder(generate(SimConfig(items=20000, days=DAYS, seed=3)), out)
    return out, Snapshot.from_dataset(load_data_dir(out))


def _weeks(
    snap: Snapshot,
) -> tuple[tuple[dt.datetime, dt.datetime], tuple[dt.datetime, dt.datetime]]:
    assert snap.first_event_at is not None
    inc = incident_schedule(snap.first_event_at, DAYS)
    span = inc.route_until - inc.route_from
    return (inc.route_from - span, inc.route_from), (inc.route_from, inc.route_until)


def _largest_rise(before: list[dict[str, Any]], during: list[dict[str, Any]]) -> tuple[str, str]:
    old = {(r["from_region"], r["to_region"]): r for r in before}
    rises = {
        k: r["leg_hours_p90"] - old[k]["leg_hours_p90"]
        for r in during
        if (k := (r["from_region"], r["to_region"])) in old
        and r["leg_items"] >= 5
        and old[k]["leg_items"] >= 5
    }
    return max(rises, key=lambda k: rises[k])


def _worst_pair(rows: list[dict[str, Any]]) -> tuple[str, str]:
    timed = [r for r in rows if r["leg_hours_p90"] is not None]
    top = max(timed, key=lambda r: r["leg_hours_p90"])
    runner_up = max((r["leg_hours_p90"] for r in timed if r is not top), default=0.0)
    assert top["leg_hours_p90"] > runner_up + 12  # stands out, not by a hair
    return top["from_region"], top["to_region"]


def test_report_names_the_slow_hub_and_the_delayed_route(sim: tuple[Path, Snapshot]) -> None:
    _, snap = sim
    dwell = snap.query(KpiQuery(kpis=("dwell_hours_p90",), by=("facility",)))
    worst = dwell.sort("dwell_hours_p90", descending=True, nulls_last=True).row(0, named=True)
    assert worst["facility"] == INCIDENT_SLOW_HUB
    legs = snap.query(KpiQuery(kpis=("leg_hours_p90",), by=("from_region", "to_region")))
    assert _worst_pair(legs.to_dicts()) == INCIDENT_ROUTE
    weeks = [
        snap.query(
            KpiQuery(
                kpis=("leg_items", "leg_hours_p90"), by=("from_region", "to_region"), start=a, end=b
            )
        ).to_dicts()
        for a, b in _weeks(snap)
    ]
    assert _largest_rise(*weeks) == INCIDENT_ROUTE


def test_api_names_the_slow_hub_and_the_delayed_route(sim: tuple[Path, Snapshot]) -> None:
    folder, snap = sim
    with api_client(folder) as client:
        r = client.get(
            "/api/v1/kpis/dwell_hours_p90",
            params={"by": "facility", "order": "dwell_hours_p90:desc", "limit": 1},
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["facility"] == INCIDENT_SLOW_HUB
        r = client.get(
            "/api/v1/kpis/leg_hours_p90",
            params={"by": "from_region,to_region", "order": "leg_hours_p90:desc", "limit": 2},
        )
        assert r.status_code == 200, r.text
        assert _worst_pair(r.json()["data"]) == INCIDENT_ROUTE
        weeks = []
        for a, b in _weeks(snap):
            r = client.post(
                "/api/v1/query",
                json={
                    "measures": ["leg_items", "leg_hours_p90"],
                    "dimensions": ["from_region", "to_region"],
                    "from": a.isoformat(),
                    "to": b.isoformat(),
                    "limit": 10000,
                },
            )
            assert r.status_code == 200, r.text
            weeks.append(r.json()["data"])
        assert _largest_rise(*weeks) == INCIDENT_ROUTE
        # The drill-down lists the route's slow legs: hub to hub, over a day each.
        ro, rd = INCIDENT_ROUTE
        legs = client.get(
            "/api/v1/legs", params={"from_region": ro, "to_region": rd, "min_hours": 48}
        ).json()
        assert legs["total"] > 0
        assert all(x["from_region"] == ro and x["to_region"] == rd for x in legs["data"])


def test_dims_frame_shape(sim: tuple[Path, Snapshot]) -> None:
    _, snap = sim
    legs = snap.query(KpiQuery(kpis=("leg_items",), by=("from_facility", "to_facility")))
    assert legs.schema["from_facility"] == pl.String
    assert int(legs["leg_items"].sum()) == snap.query(KpiQuery(kpis=("leg_items",))).item(0, 0)
