"""Cached answers, data versions, and invalidation when a new batch of events arrives."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from tests.api.conftest import EVENT_HEADER, api_client

NEW_BATCH = "\n".join(
    [
        EVENT_HEADER,
        "SH2-2,SH2,delivered,2026-03-05T06:00:00Z,DO-SH,,,,,",
        "GD4-2,GD4,arrived,2026-03-05T07:00:00Z,DO-GD,,,,,",
    ]
)


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_for_new_version(client: TestClient, old: str) -> dict[str, object]:
    """Poll (bounded) until an answer comes from a data version other than ``old``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body: dict[str, object] = client.get(
            "/api/v1/kpis/on_time_ratio", params={"by": "region"}
        ).json()
        if body["data_version"] != old:
            return body
        time.sleep(0.05)
    raise AssertionError("the data version did not change")


def test_repeated_question_is_served_from_cache(hand_client: TestClient) -> None:
    """The second identical question is a cache hit with the same answer."""
    params = {"by": "region", "granularity": "day"}
    first = hand_client.get("/api/v1/kpis/delivered_items", params=params).json()
    hits = _metric(hand_client, 'postal_api_cache_requests_total{result="hit"}')
    second = hand_client.get("/api/v1/kpis/delivered_items", params=params).json()
    assert second == first
    assert _metric(hand_client, 'postal_api_cache_requests_total{result="hit"}') == hits + 1


def test_new_event_file_changes_version_and_answer(hand_dir: Path) -> None:
    """Appending an events file is noticed by the watcher: new data_version, new answer."""
    with api_client(hand_dir, watch_interval_seconds=0) as client:
        before = client.get("/api/v1/kpis/on_time_ratio", params={"by": "region"}).json()
        assert {r["region"]: r["on_time_ratio"] for r in before["data"]}["CN-SH"] == 1.0
        (hand_dir / "events" / "day2.csv").write_text(NEW_BATCH + "\n")
        after = _wait_for_new_version(client, str(before["data_version"]))
        # SH2 was delivered 54 h after its promise: CN-SH is now 1 of 2 on time.
        assert {r["region"]: r["on_time_ratio"] for r in after["data"]}["CN-SH"] == 0.5  # type: ignore[union-attr, index]
        assert after["as_of"] == "2026-03-05T07:00:00+00:00"
        backlog = client.get("/api/v1/backlog").json()
        assert [r["item_id"] for r in backlog["data"]] == ["GD4"]
        assert backlog["data"][0]["facility"] == "DO-GD"
        ready = client.get("/readyz").json()
        assert ready["data_version"] == after["data_version"]


def test_admin_reload_picks_up_changes_at_once(hand_dir: Path) -> None:
    """With a long watch interval, POST /admin/reload loads the new batch immediately."""
    with api_client(hand_dir, watch_interval_seconds=3600) as client:
        v1 = client.get("/readyz").json()["data_version"]
        (hand_dir / "events" / "day2.csv").write_text(NEW_BATCH + "\n")
        # Within the interval the folder is not re-checked: still the old version.
        assert client.get("/api/v1/kpis/on_time_ratio").json()["data_version"] == v1
        r = client.post("/api/v1/admin/reload").json()
        assert r["changed"] is True and r["data_version"] != v1
        assert client.get("/api/v1/kpis/on_time_ratio").json()["data"] == [{"on_time_ratio": 0.6}]


def test_broken_reload_keeps_serving_old_version(hand_dir: Path) -> None:
    """A folder that fails to load leaves the previous version answering; /readyz says why."""
    with api_client(hand_dir, watch_interval_seconds=3600) as client:
        v1 = client.get("/readyz").json()["data_version"]
        (hand_dir / "service-standards.yaml").write_text("products: 12\n")
        r = client.post("/api/v1/admin/reload")
        assert r.status_code == 503 and "failed" in r.json()["detail"]
        ready = client.get("/readyz").json()
        assert (
            ready["status"] == "ready"
            and ready["data_version"] == v1
            and "failed" in ready["detail"]
        )
        assert client.get("/api/v1/kpis/on_time_ratio").status_code == 200


def test_admin_can_drop_the_cache(hand_dir: Path) -> None:
    """DELETE /admin/cache empties the answer cache: the next identical question is a miss."""
    with api_client(hand_dir) as client:
        client.get("/api/v1/kpis/on_time_ratio")
        misses = _metric(client, 'postal_api_cache_requests_total{result="miss"}')
        assert client.delete("/api/v1/admin/cache").status_code == 200
        client.get("/api/v1/kpis/on_time_ratio")
        assert _metric(client, 'postal_api_cache_requests_total{result="miss"}') == misses + 1
