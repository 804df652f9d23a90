"""Answers known by hand on a tiny folder (see ``conftest.HAND_EVENTS``)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

AS_OF = "2026-03-05T00:00:00+00:00"


def rows(client: TestClient, name: str, **params: Any) -> list[dict[str, Any]]:
    """The data rows of GET /kpis/{name}."""
    r = client.get(f"/api/v1/kpis/{name}", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["as_of"] == AS_OF
    data: list[dict[str, Any]] = body["data"]
    return data


def test_on_time_ratio_per_region(hand_client: TestClient) -> None:
    """CN-GD: 2 of 3 on time (one exactly at the promise); CN-SH: 1 of 1; all: 3 of 4."""
    by_region = {
        r["region"]: r["on_time_ratio"] for r in rows(hand_client, "on_time_ratio", by="region")
    }
    assert by_region == {"CN-GD": 2 / 3, "CN-SH": 1.0}
    assert rows(hand_client, "on_time_ratio") == [{"on_time_ratio": 0.75}]
    assert rows(hand_client, "on_time_ratio", region="CN-GD") == [{"on_time_ratio": 2 / 3}]


def test_late_buckets_and_daily_buckets(hand_client: TestClient) -> None:
    """GD2 is 25 h late (late_2d); deliveries per Shanghai day land in the right buckets."""
    assert rows(hand_client, "late_2d_items", region="CN-GD") == [{"late_2d_items": 1}]
    daily = rows(hand_client, "delivered_items", granularity="day", tz="Asia/Shanghai")
    # Days with acceptances but no delivery are there with 0 (the flow family's periods).
    assert {r["period"]: r["delivered_items"] for r in daily if r["delivered_items"]} == {
        "2026-03-02T00:00:00+08:00": 2,  # SH1 08:00Z, GD1 10:00Z (16:00 and 18:00 local)
        "2026-03-03T00:00:00+08:00": 1,  # GD3 00:00Z
        "2026-03-04T00:00:00+08:00": 1,  # GD2 01:00Z
    }
    assert daily[0]["period"] == "2026-03-01T00:00:00+08:00"


def test_backlog_and_overdue(hand_client: TestClient) -> None:
    """GD4 waits at PC-GD (threshold 1: not over), SH2 waits at DO-SH and is overdue."""
    backlog = rows(hand_client, "backlog_items", by="facility")
    assert {r["facility"]: r["backlog_items"] for r in backlog} == {
        "CO-BJ": 0,
        "DO-GD": 0,
        "DO-SH": 1,
        "PC-GD": 1,
    }
    page = hand_client.get("/api/v1/backlog").json()
    assert [r["item_id"] for r in page["data"]] == ["SH2", "GD4"]  # oldest first
    assert page["data"][0]["age_hours"] == 66.0 and page["data"][0]["overdue"] is True
    assert rows(hand_client, "overdue_items") == [{"overdue_items": 1}]
    late = hand_client.get("/api/v1/late-items").json()["data"]
    assert [(r["item_id"], r["kind"], r["late_hours"]) for r in late] == [
        ("SH2", "overdue", 72.0),
        ("GD2", "delivered_late", 25.0),
    ]


def test_item_timeline(hand_client: TestClient) -> None:
    """GD2: failed attempt then late delivery; lifecycle fields and ordered timeline."""
    item = hand_client.get("/api/v1/items/GD2").json()
    assert item["status"] == "delivered" and item["late"] is True and item["late_hours"] == 25.0
    assert item["first_attempt_outcome"] == "delivery_failed"
    assert [e["event"] for e in item["events"]] == ["accepted", "delivery_failed", "delivered"]
    assert item["events"][1] == {
        "event_id": "GD2-1",
        "event": "delivery_failed",
        "ts": "2026-03-02T09:00:00+00:00",
        "facility": "DO-GD",
        "facility_region": "CN-GD",
        "reason": "addressee_absent",
    }
    gd3 = hand_client.get("/api/v1/items/GD3").json()
    assert gd3["late"] is False and gd3["late_hours"] == 0.0  # delivered exactly at the promise
    sh2 = hand_client.get("/api/v1/items/SH2").json()
    assert sh2["status"] == "in_network" and sh2["overdue"] is True and sh2["late"] is None
    assert hand_client.get("/api/v1/items/NOPE").status_code == 404


def test_item_as_of_earlier(hand_client: TestClient) -> None:
    """As of 2026-03-02T10:00Z GD2 had only its failed attempt; later items do not exist yet."""
    item = hand_client.get("/api/v1/items/GD2", params={"as_of": "2026-03-02T10:00:00Z"}).json()
    assert item["status"] == "in_network" and item["delivered_at"] is None
    assert len(item["events"]) == 2
    r = hand_client.get("/api/v1/items/SH3", params={"as_of": "2026-03-02T10:00:00Z"})
    assert r.status_code == 404


def test_complaints(hand_client: TestClient) -> None:
    """C1 (CN-GD) is open at as-of; C2 (CN-SH) was resolved."""
    page = hand_client.get("/api/v1/complaints").json()
    assert [(c["complaint_id"], c["open"]) for c in page["data"]] == [("C1", True), ("C2", False)]
    assert hand_client.get("/api/v1/complaints", params={"open": "true"}).json()["total"] == 1
    assert rows(hand_client, "open_complaints", by="region") == [
        {"region": "CN-GD", "open_complaints": 1}
    ]
