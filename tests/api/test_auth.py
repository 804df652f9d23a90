"""Access control: no key, wrong key, reader, region-scoped reader, admin."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

READER = {"X-API-Key": "reader-secret"}
GD = {"X-API-Key": "gd-secret"}
ADMIN = {"Authorization": "Bearer admin-secret"}

DATA_URLS = [
    "/api/v1/kpis",
    "/api/v1/kpis/on_time_ratio",
    "/api/v1/backlog",
    "/api/v1/late-items",
    "/api/v1/complaints",
    "/api/v1/items/GD1",
    "/openapi.json",
    "/docs",
]


@pytest.mark.parametrize("url", DATA_URLS)
def test_no_key_or_wrong_key_is_401(auth_client: TestClient, url: str) -> None:
    """Without a key, or with an unknown one, every data endpoint (and the docs here) is 401."""
    for headers in ({}, {"X-API-Key": "guess"}, {"Authorization": "Bearer guess"}):
        r = auth_client.get(url, headers=headers)
        assert r.status_code == 401, (url, headers, r.text)
        assert "key" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("url", DATA_URLS)
def test_reader_key_reads(auth_client: TestClient, url: str) -> None:
    """A reader key (header or bearer) reads everything."""
    assert auth_client.get(url, headers=READER).status_code == 200
    assert (
        auth_client.get(url, headers={"Authorization": "Bearer reader-secret"}).status_code == 200
    )


def test_probes_need_no_key(auth_client: TestClient) -> None:
    """Liveness, readiness and /metrics stay open for probes and Prometheus."""
    for url in ("/healthz", "/readyz", "/metrics", "/api/v1/healthz"):
        assert auth_client.get(url).status_code == 200, url


def test_admin_only_reload(auth_client: TestClient) -> None:
    """POST /admin/reload is 403 for readers, 200 for admins."""
    r = auth_client.post("/api/v1/admin/reload", headers=READER)
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    r = auth_client.post("/api/v1/admin/reload", headers=ADMIN)
    assert r.status_code == 200 and r.json()["changed"] is False


def _data(client: TestClient, url: str, headers: dict[str, str], **params: Any) -> Any:
    r = client.get(url, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_region_key_sees_only_its_region(auth_client: TestClient) -> None:
    """Unfiltered answers are computed on CN-GD only, grouped or not."""
    by_region = _data(auth_client, "/api/v1/kpis/on_time_ratio", GD, by="region")
    assert by_region == [{"region": "CN-GD", "on_time_ratio": 2 / 3}]
    assert _data(auth_client, "/api/v1/kpis/on_time_ratio", GD) == [{"on_time_ratio": 2 / 3}]
    assert _data(auth_client, "/api/v1/kpis/on_time_ratio", READER) == [{"on_time_ratio": 0.75}]
    assert _data(auth_client, "/api/v1/kpis/backlog_items", GD) == [{"backlog_items": 1}]
    facilities = _data(auth_client, "/api/v1/kpis/backlog_items", GD, by="facility")
    assert {r["facility"] for r in facilities} == {"PC-GD", "DO-GD"}
    assert [r["item_id"] for r in _data(auth_client, "/api/v1/backlog", GD)] == ["GD4"]
    assert [r["item_id"] for r in _data(auth_client, "/api/v1/late-items", GD)] == ["GD2"]
    assert [r["complaint_id"] for r in _data(auth_client, "/api/v1/complaints", GD)] == ["C1"]
    assert _data(auth_client, "/api/v1/kpis/open_complaints", GD) == [{"open_complaints": 1}]
    body = {"measures": ["complaints"], "dimensions": ["category"]}
    r = auth_client.post("/api/v1/query", json=body, headers=GD)
    assert r.json()["data"] == [{"category": "delay", "complaints": 1}]


@pytest.mark.parametrize(
    ("method", "url", "params"),
    [
        ("GET", "/api/v1/kpis/on_time_ratio", {"region": "CN-SH"}),
        ("GET", "/api/v1/kpis/on_time_ratio", {"region": "CN-GD,CN-SH"}),
        ("GET", "/api/v1/kpis/on_time_ratio", {"destination": "CN-SH"}),
        ("GET", "/api/v1/kpis/backlog_items", {"facility": "DO-SH"}),
        ("GET", "/api/v1/items/SH1", {}),
        ("GET", "/api/v1/backlog", {"facility": "DO-SH"}),
        ("GET", "/api/v1/backlog", {"region": "CN-SH"}),
        ("GET", "/api/v1/late-items", {"region": "CN-SH"}),
        ("GET", "/api/v1/late-items", {"destination": "CN-SH"}),
        ("GET", "/api/v1/complaints", {"region": "CN-SH"}),
    ],
)
def test_region_key_asking_for_other_regions_is_403(
    auth_client: TestClient, method: str, url: str, params: dict[str, str]
) -> None:
    """Any way of reaching another region's rows or items is refused, with the reason."""
    r = auth_client.request(method, url, params=params, headers=GD)
    assert r.status_code == 403, r.text
    assert "CN-GD" in r.json()["detail"]
    assert auth_client.request(method, url, params=params, headers=READER).status_code == 200


def test_region_key_filters_through_post_query(auth_client: TestClient) -> None:
    """POST /query filters are checked too; not_in never widens the scope."""
    base = {"measures": ["on_time_ratio"], "dimensions": ["region"]}
    other = base | {"filters": [{"dimension": "region", "op": "equals", "values": ["CN-SH"]}]}
    assert auth_client.post("/api/v1/query", json=other, headers=GD).status_code == 403
    exclude = base | {"filters": [{"dimension": "region", "op": "not_in", "values": ["CN-BJ"]}]}
    r = auth_client.post("/api/v1/query", json=exclude, headers=GD)
    assert r.json()["data"] == [{"region": "CN-GD", "on_time_ratio": 2 / 3}]
    assert auth_client.get("/api/v1/items/GD1", headers=GD).status_code == 200


def test_keys_are_stored_hashed(auth_client: TestClient) -> None:
    """The settings hold digests only: no secret is in the app's state."""
    settings = auth_client.app.state.settings  # type: ignore[attr-defined]
    dumped = settings.model_dump_json()
    assert "reader-secret" not in dumped and "gd-secret" not in dumped
