"""The duty desk over HTTP: webhook auth, malformed payloads, KPI values at opening, roles, metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kpi.api.settings import ApiKey, Role, WebhookToken, hash_key
from tests.api.conftest import api_client, write_hand_folder
from tests.duty.conftest import alert, payload

HOOK = "/api/v1/incidents/alertmanager"
AM = {"Authorization": "Bearer am-token"}
READER = {"X-API-Key": "reader-secret"}
GD_READER = {"X-API-Key": "gd-secret"}
DUTY = {"X-API-Key": "duty-secret"}
GD_DUTY = {"X-API-Key": "gd-duty-secret"}


def keys() -> tuple[ApiKey, ...]:
    return (
        ApiKey(name="analyst", sha256=hash_key("reader-secret")),
        ApiKey(name="gd-analyst", sha256=hash_key("gd-secret"), regions=("CN-GD",)),
        ApiKey(name="night-desk", sha256=hash_key("duty-secret"), role=Role.DUTY),
        ApiKey(
            name="gd-desk", sha256=hash_key("gd-duty-secret"), role=Role.DUTY, regions=("CN-GD",)
        ),
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    data = write_hand_folder(tmp_path / "data")
    with api_client(
        data,
        api_keys=keys(),
        webhook_tokens=(WebhookToken(name="alertmanager-1", sha256=hash_key("am-token")),),
        database=f"sqlite:///{tmp_path / 'duty.db'}",
    ) as c:
        yield c


def total(client: TestClient) -> int:
    r = client.get("/api/v1/incidents", headers=READER)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def test_webhook_needs_the_token(client: TestClient) -> None:
    body = payload(alert("a1", "2026-03-04T18:00:00Z"))
    for headers in (
        {},
        {"Authorization": "Bearer guess"},
        {"Authorization": "Bearer reader-secret"},
    ):
        r = client.post(HOOK, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert total(client) == 0
    assert client.post(HOOK, json=body, headers=AM).json()["opened"] == [1]
    # A duty key may post too (a person replaying a notification by hand).
    assert client.post(HOOK, json=body, headers={"Authorization": "Bearer duty-secret"}).json() == {
        "opened": [], "resolved": [], "unchanged": [1],
    }  # fmt: skip


def _broken() -> list[tuple[str, Any]]:
    good = payload(alert("a1", "2026-03-04T18:00:00Z"), alert("a2", "2026-03-04T18:00:00Z"))

    def variant(**changes: Any) -> dict[str, Any]:
        body = {**good, "alerts": [dict(a) for a in good["alerts"]]}
        for key, value in changes.items():
            if key.startswith("alert1_"):
                body["alerts"][1][key.removeprefix("alert1_")] = value
            else:
                body[key] = value
        return body

    no_alerts = dict(good)
    del no_alerts["alerts"]
    return [
        ("version", variant(version="3")),
        ("alerts", no_alerts),
        ("alerts", variant(alerts=[])),
        ("startsAt", variant(alert1_startsAt="yesterday")),
        ("startsAt", variant(alert1_startsAt="2026-03-04T18:00:00")),  # no offset
        ("zero time", variant(alert1_startsAt="0001-01-01T00:00:00Z")),
        ("endsAt", variant(alert1_status="resolved")),  # resolved without an end
        (
            "before startsAt",
            variant(alert1_status="resolved", alert1_endsAt="2026-03-04T17:00:00Z"),
        ),
        ("alertname", variant(alert1_labels={"severity": "critical"})),
        ("fingerprint", variant(alert1_fingerprint="not-hex!")),
        ("status", variant(alert1_status="pending")),
    ]


@pytest.mark.parametrize(("reason", "body"), _broken(), ids=[r for r, _ in _broken()])
def test_malformed_payload_is_422_with_reason_and_changes_nothing(
    client: TestClient, reason: str, body: Any
) -> None:
    r = client.post(HOOK, json=body, headers=AM)
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"], r.json()["detail"]
    # The good first alert of the same payload is not recorded either: all or nothing.
    assert total(client) == 0


def test_not_json_is_rejected(client: TestClient) -> None:
    r = client.post(HOOK, content=b"{not json", headers={**AM, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]
    assert total(client) == 0


def test_kpi_values_at_opening_come_from_the_engine(client: TestClient) -> None:
    """Hand data: GD4 arrived at PC-GD (threshold 1) at 4 March 12:00, still waiting."""
    client.post(HOOK, json=payload(alert("a1", "2026-03-04T18:00:00Z")), headers=AM)
    client.post(HOOK, json=payload(alert("b2", "2026-03-04T06:00:00Z")), headers=AM)
    at_18h = client.get("/api/v1/incidents/1", headers=READER).json()["kpis"]
    assert at_18h["facility"] == "PC-GD" and at_18h["as_of"].startswith("2026-03-04T18:00:00")
    assert (at_18h["backlog_items"], at_18h["backlog_threshold"]) == (1, 1)
    assert at_18h["backlog_oldest_hours"] == pytest.approx(6.0)
    assert at_18h["data_version"]
    # Before GD4 arrived the hub was empty.
    at_6h = client.get("/api/v1/incidents/2", headers=READER).json()["kpis"]
    assert (at_6h["backlog_items"], at_6h["backlog_oldest_hours"]) == (0, None)


def test_roles_and_region_scopes(client: TestClient) -> None:
    client.post(
        HOOK,
        json=payload(
            alert("a1", "2026-03-04T18:00:00Z"),
            alert("b2", "2026-03-04T19:00:00Z", facility="DO-SH", region="CN-SH"),
        ),
        headers=AM,
    )
    ids = {
        r["region"]: r["id"] for r in client.get("/api/v1/incidents", headers=READER).json()["rows"]
    }
    gd, sh = ids["CN-GD"], ids["CN-SH"]
    # Readers see but do not act.
    r = client.post(f"/api/v1/incidents/{gd}/acknowledge", headers=READER)
    assert r.status_code == 403 and "duty" in r.json()["detail"]
    assert (
        client.post("/api/v1/incidents/handover", json={"note": "x"}, headers=READER).status_code
        == 403
    )
    # A region-scoped reader sees its region only.
    seen = client.get("/api/v1/incidents", headers=GD_READER).json()
    assert [r["id"] for r in seen["rows"]] == [gd] and seen["total"] == 1
    assert client.get(f"/api/v1/incidents/{sh}", headers=GD_READER).status_code == 404
    assert (
        client.get("/api/v1/incidents", params={"region": "CN-SH"}, headers=GD_READER).status_code
        == 403
    )
    # The scoped duty key acts in its region only.
    assert client.post(f"/api/v1/incidents/{sh}/acknowledge", headers=GD_DUTY).status_code == 404
    acked = client.post(
        f"/api/v1/incidents/{gd}/acknowledge", json={"note": "on it"}, headers=GD_DUTY
    )
    assert acked.status_code == 200, acked.text
    assert (acked.json()["status"], acked.json()["acknowledged_by"]) == ("acknowledged", "gd-desk")
    again = client.post(f"/api/v1/incidents/{gd}/acknowledge", headers=DUTY)
    assert again.status_code == 409 and "gd-desk" in again.json()["detail"]
    note = client.post(f"/api/v1/incidents/{sh}/notes", json={"text": "trucks late"}, headers=DUTY)
    assert note.json()["timeline"][-1] == {
        **note.json()["timeline"][-1],
        "kind": "note",
        "by": "night-desk",
    }
    hand = client.post(
        "/api/v1/incidents/handover", json={"note": "SH trucks"}, headers=DUTY
    ).json()
    assert [i["id"] for i in hand["open"]] == [gd, sh] and hand["by"] == "night-desk"
    bad = client.post(f"/api/v1/incidents/{sh}/close", json={"cause": "gremlins"}, headers=DUTY)
    assert bad.status_code == 422 and "cause" in bad.json()["detail"]
    closed = client.post(f"/api/v1/incidents/{sh}/close", json={"cause": "transport"}, headers=DUTY)
    assert closed.json()["status"] == "closed"
    assert [
        r["id"] for r in client.get("/api/v1/incidents?status=open", headers=READER).json()["rows"]
    ] == [gd]
    assert client.get("/api/v1/incidents?status=bogus", headers=READER).status_code == 400
    assert client.get("/api/v1/incidents/999", headers=READER).status_code == 404


def test_metrics_count_incidents_by_severity(client: TestClient) -> None:
    client.post(
        HOOK,
        json=payload(
            alert("a1", "2026-03-04T18:00:00Z"),
            alert(
                "b2", "2026-03-04T18:00:00Z", severity="warning", facility="DO-SH", region="CN-SH"
            ),
            alert("c3", "2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z"),
        ),
        headers=AM,
    )
    text = client.get("/metrics").text
    assert 'postal_incidents_open{severity="critical"} 1.0' in text
    assert 'postal_incidents_open{severity="warning"} 1.0' in text
    assert 'postal_incidents_open{severity="info"} 0.0' in text
    assert 'postal_incidents_opened_total{severity="critical"} 2.0' in text


def test_requests_are_audited_by_key_name(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kpi.api.audit"):
        client.post(HOOK, json=payload(alert("a1", "2026-03-04T18:00:00Z")), headers=AM)
        client.get("/api/v1/incidents", headers=DUTY)
        client.get("/api/v1/backlog", headers=READER)
        client.get("/api/v1/backlog")
    lines = [r.getMessage() for r in caplog.records if r.name == "kpi.api.audit"]
    assert any(
        "key=alertmanager-1" in x and "POST /api/v1/incidents/alertmanager" in x for x in lines
    )
    assert any("key=night-desk" in x and "GET /api/v1/incidents" in x for x in lines)
    assert any("key=analyst" in x and "/api/v1/backlog" in x and "status=200" in x for x in lines)
    assert any("key=-" in x and "status=401" in x for x in lines)
    assert not any(s in x for x in lines for s in ("am-token", "duty-secret", "reader-secret"))


def test_without_a_database_the_desk_answers_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        api_client(write_hand_folder(tmp_path / "data")) as c,
        caplog.at_level(logging.INFO, logger="kpi.api.audit"),
    ):
        r = c.get("/api/v1/incidents")
        assert r.status_code == 503 and "--database" in r.json()["detail"]
    # No keys configured: the audit log says so instead of a blank name.
    assert any("key=anonymous" in x.getMessage() for x in caplog.records)
