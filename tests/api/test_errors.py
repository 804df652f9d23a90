"""Bad requests answer 4xx with a message saying what to change; slow ones 504."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import api_client

Q = "/api/v1/kpis/on_time_ratio"


@pytest.mark.parametrize(
    ("url", "params", "status", "hint"),
    [
        ("/api/v1/kpis/no_such_kpi", {}, 404, "catalog"),
        (Q, {"by": "planet"}, 400, "known:"),
        (Q, {"by": "facility"}, 400, "supports"),
        (Q, {"by": "region,region"}, 400, "twice"),
        ("/api/v1/kpis/backlog_items", {"granularity": "day"}, 400, "drop the granularity"),
        (Q, {"from": "2026-03-04T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, 400, "must be before"),
        (Q, {"from": "2026-03-01T00:00:00"}, 422, "no UTC offset"),
        (Q, {"as_of": "2026-03-01"}, 422, "no UTC offset"),
        (Q, {"to": "yesterday"}, 422, "ISO 8601"),
        (Q, {"granularity": "day", "tz": "Mars/Olympus"}, 400, "time zone"),
        (Q, {"granularity": "fortnight"}, 422, "granularity"),
        (Q, {"limit": 10_001}, 400, "page with offset"),
        (Q, {"limit": 0}, 422, "limit"),
        (Q, {"region": "CN-XX"}, 400, "known values"),
        (Q, {"category": "delay"}, 400, "cannot filter on 'category'"),
        (Q, {"order": "nonsense:desc"}, 400, "cannot order by"),
        (Q, {"order": "on_time_ratio:sideways"}, 400, "asc or desc"),
        ("/api/v1/backlog", {"facility": "NOWHERE"}, 400, "known values"),
        (
            "/api/v1/late-items",
            {"from": "2026-03-04T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
            400,
            "before",
        ),
        ("/api/v1/complaints", {"category": "weather"}, 422, "category"),
        ("/api/v1/items/NOPE", {}, 404, "no item"),
        ("/api/v1/nothing-here", {}, 404, "Not Found"),
    ],
)
def test_bad_request_says_what_to_change(
    hand_client: TestClient, url: str, params: dict[str, Any], status: int, hint: str
) -> None:
    """Each mistake gets its status and a message naming the fix."""
    r = hand_client.get(url, params=params)
    assert r.status_code == status, r.text
    assert hint in r.json()["detail"], r.json()


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (
            {"measures": ["on_time_ratio"], "filters": [{"dimension": "x", "values": ["a"]}]},
            "unknown filter dimension",
        ),
        (
            {
                "measures": ["on_time_ratio"],
                "filters": [{"dimension": "region", "op": "equals", "values": ["CN-GD", "CN-SH"]}],
            },
            "exactly one",
        ),
        (
            {
                "measures": ["backlog_items"],
                "filters": [{"dimension": "origin", "values": ["CN-BJ"]}],
            },
            "cannot filter on 'origin'",
        ),
        ({"measures": ["on_time_ratio"], "order": [{"by": "region"}]}, "cannot order by"),
        ({"measures": ["on_time_ratio"], "unexpected": 1}, "Extra inputs"),
        ({"measures": ["on_time_ratio"], "from": "2026-03-01T00:00:00"}, "no UTC offset"),
    ],
)
def test_bad_query_body(hand_client: TestClient, body: dict[str, Any], hint: str) -> None:
    """POST /query errors are 4xx with the fix in the message."""
    r = hand_client.post("/api/v1/query", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert hint in r.json()["detail"], r.json()


def test_plus_decoded_as_space_is_the_offset(hand_client: TestClient) -> None:
    """An unencoded '+' arrives as a space; it can only be the offset's sign, so it is read as one."""
    r = hand_client.get(Q + "?from=2026-03-01T08:00:00 08:00")
    assert r.status_code == 200, r.text


def test_limits_range_and_groups(hand_dir: Path) -> None:
    """Configured limits: range too wide and too many groups are 400 with the limit named."""
    with api_client(hand_dir, limits={"max_range_days": 2, "max_groups": 3}) as client:
        r = client.get(Q, params={"from": "2026-03-01T00:00:00Z", "to": "2026-03-04T00:00:00Z"})
        assert r.status_code == 400 and "limit of 2" in r.json()["detail"]
        ok = client.get(Q, params={"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"})
        assert ok.status_code == 200
        r = client.get(
            "/api/v1/kpis/accepted_items",
            params={
                "from": "2026-03-01T00:00:00Z",
                "to": "2026-03-02T00:00:00Z",
                "granularity": "hour",
            },
        )
        assert r.status_code == 400 and "groups" in r.json()["detail"]
        r = client.get("/api/v1/kpis/backlog_items", params={"by": "facility"})
        assert r.status_code == 400 and "4 groups" in r.json()["detail"]
        # Snapshot KPIs have no window: the range limit does not apply to them.
        assert client.get("/api/v1/kpis/backlog_items").status_code == 200


def test_timeout_is_504_and_the_answer_arrives_later(hand_dir: Path) -> None:
    """A computation longer than the timeout answers 504; it finishes in the background."""
    with api_client(hand_dir, limits={"request_timeout_seconds": 0.001}) as client:
        params = {"as_of": "2026-03-03T12:00:00Z", "by": "region"}
        r = client.get(Q, params=params)
        assert r.status_code == 504 and "retry" in r.json()["detail"]
        for _ in range(200):
            r = client.get(Q, params=params)
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200 and r.json()["as_of"] == "2026-03-03T12:00:00+00:00"
