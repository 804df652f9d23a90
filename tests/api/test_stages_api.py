"""Stage KPIs and the legs drill-down through the API (the hand case of
``tests/kpi/test_stages.py``: dwell p90 at PC1 12 h; legs PC1->PC2 of 11 h (A) and 1 h
(B); PC1->PC3 2 h (B), the only leg touching CN-GD)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import api_client, api_keys
from tests.conftest import write_rows

T0 = dt.datetime(2027, 1, 11, 2, tzinfo=dt.UTC)
GD = {"X-API-Key": "gd-secret"}
READER = {"X-API-Key": "reader-secret"}
SCANS = [
    ("A", "accepted", 0, "C1"),
    ("A", "departed", 2, "C1"),
    ("A", "arrived", 5, "PC1"),
    ("A", "departed", 9, "PC1"),
    ("A", "arrived", 20, "PC2"),
    ("A", "departed", 26, "PC2"),
    ("A", "arrived", 30, "DO1"),
    ("A", "delivered", 36, "DO1"),
    ("B", "accepted", 8, "C1"),
    ("B", "departed", 24, "C1"),
    ("B", "arrived", 26, "PC1"),
    ("B", "departed", 40, "PC1"),
    ("B", "arrived", 41, "PC2"),
    ("B", "arrived", 42, "PC3"),
    ("B", "departed", 50, "PC2"),
    ("C", "accepted", 0, "C1"),
    ("D", "arrived", 1, "PC1"),
    ("D", "departed", 3, "PC1"),
    ("D", "arrived", 5, "PC1"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root: Path = tmp_path_factory.mktemp("stages") / "data"
    rows = []
    for n, (item, event, h, fac) in enumerate(SCANS):
        acc = event == "accepted"
        rows.append(
            {
                "event_id": f"s{n:03d}",
                "item_id": item,
                "event": event,
                "ts": (T0 + dt.timedelta(hours=h)).isoformat(),
                "facility": fac,
                "product": "express" if acc else None,
                "origin": "CN-BJ" if acc else None,
                "destination": "CN-SH" if acc else None,
            }
        )
    write_rows(root / "events" / "a.csv", rows)
    pl.DataFrame(
        {
            "facility": ["C1", "PC1", "PC2", "PC3", "DO1"],
            "name": ["c", "p1", "p2", "p3", "d"],
            "type": ["collection", "processing", "processing", "processing", "delivery"],
            "region": ["CN-BJ", "CN-BJ", "CN-SH", "CN-GD", "CN-SH"],
            "backlog_threshold": [None] * 5,
        }
    ).write_csv(root / "facilities.csv")
    with api_client(root, api_keys=api_keys()) as c:
        yield c


def test_catalog_lists_stage_kpis_and_dimensions(client: TestClient) -> None:
    body = client.get("/api/v1/kpis", headers=READER).json()
    names = {k["name"] for k in body["kpis"]}
    assert {"dwell_hours_p90", "leg_hours_p90", "dispatched_same_day_ratio"} <= names
    dims = {d["name"] for d in body["dimensions"]}
    assert {"from_facility", "to_facility", "from_region", "to_region"} <= dims


def test_kpi_by_facility_and_route(client: TestClient) -> None:
    r = client.get("/api/v1/kpis/dwell_hours_p90", params={"by": "facility"}, headers=READER)
    assert r.status_code == 200, r.text
    by_fac = {row["facility"]: row["dwell_hours_p90"] for row in r.json()["data"]}
    assert by_fac["PC1"] == pytest.approx(12.0)
    r = client.post(
        "/api/v1/query",
        json={
            "measures": ["leg_items", "leg_hours_mean"],
            "dimensions": ["from_facility", "to_facility"],
            "filters": [{"dimension": "from_region", "op": "in", "values": ["CN-BJ"]}],
        },
        headers=READER,
    )
    assert r.status_code == 200, r.text
    routes = {(x["from_facility"], x["to_facility"]): x for x in r.json()["data"]}
    assert set(routes) == {("C1", "PC1"), ("PC1", "PC2"), ("PC1", "PC3")}
    assert routes[("PC1", "PC2")]["leg_items"] == 2
    assert routes[("PC1", "PC2")]["leg_hours_mean"] == pytest.approx(6.0)


def test_legs_drill_down(client: TestClient) -> None:
    r = client.get(
        "/api/v1/legs", params={"from_facility": "PC1", "to_facility": "PC2"}, headers=READER
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(x["item_id"], x["hours"]) for x in body["data"]] == [("A", 11.0), ("B", 1.0)]
    assert body["total"] == 2
    slow = client.get(
        "/api/v1/legs",
        params={"from_facility": "PC1", "to_facility": "PC2", "min_hours": 5},
        headers=READER,
    ).json()
    assert [x["item_id"] for x in slow["data"]] == ["A"]
    assert slow["data"][0]["from_region"] == "CN-BJ" and slow["data"][0]["to_region"] == "CN-SH"
    # Every leg, slowest first; the count matches leg_items.
    everything = client.get("/api/v1/legs", headers=READER).json()
    items = client.get("/api/v1/kpis/leg_items", headers=READER).json()["data"][0]["leg_items"]
    assert everything["total"] == items == 6
    hours = [x["hours"] for x in everything["data"]]
    assert hours == sorted(hours, reverse=True)


def test_region_scope(client: TestClient) -> None:
    legs = client.get("/api/v1/legs", headers=GD).json()
    assert [(x["item_id"], x["to_facility"]) for x in legs["data"]] == [("B", "PC3")]
    assert (
        client.get("/api/v1/legs", params={"from_region": "CN-BJ"}, headers=GD).status_code == 403
    )
    r = client.get("/api/v1/kpis/leg_items", params={"by": "from_region,to_region"}, headers=GD)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [{"from_region": "CN-BJ", "to_region": "CN-GD", "leg_items": 1}]
    r = client.get("/api/v1/kpis/dwell_hours_p90", params={"by": "facility"}, headers=GD)
    assert r.json()["data"] == []  # no departure from a CN-GD facility
