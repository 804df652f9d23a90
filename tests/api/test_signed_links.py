"""Browser access once keys are on: read-only sessions, signed links, and Grafana's links."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from exporters.mixin.config import MixinConfig
from kpi.api.signed_links import (
    COOKIE,
    SIG,
    BrowserAuth,
    link_name,
    session_name,
    session_token,
    sign_link,
)
from tests.api.conftest import KEYS, api_client, api_keys

REPO = Path(__file__).resolve().parents[2]
AUTH = BrowserAuth(secret="s" * 32)
READER = {"X-API-Key": "reader-secret"}
HTML = {"Accept": "text/html,application/xhtml+xml"}
NOW = 1_800_000_000.0


def _as(client: TestClient, cookie: str | None) -> TestClient:
    """The client carrying only ``cookie`` as its session."""
    client.cookies.clear()
    if cookie is not None:
        client.cookies.set(COOKIE, cookie)
    return client


def _sign_in(client: TestClient, secret: str) -> str:
    r = client.post(
        "/session",
        content=f"key={secret}&next=/api/v1/backlog",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/api/v1/backlog"
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert secret not in cookie
    token = str(r.cookies[COOKIE])
    client.cookies.clear()
    return token


@pytest.fixture
def client(hand_dir_shared: Path) -> Iterator[TestClient]:
    with api_client(hand_dir_shared, api_keys=api_keys(), browser=AUTH) as c:
        yield c


# --- tokens, checked by hand ---------------------------------------------------------------


def test_session_token_round_trip_expiry_and_tampering() -> None:
    token = session_token(AUTH, "analyst", now=NOW)
    assert session_name(AUTH, token, now=NOW + 60) == "analyst"
    assert session_name(AUTH, token, now=NOW + AUTH.session_ttl_seconds + 1) is None
    encoded, expires, sig = token.split(".")
    later = f"{encoded}.{int(expires) + 3600}.{sig}"  # a longer life, same signature
    assert session_name(AUTH, later, now=NOW) is None
    other = session_token(AUTH, "ops-admin", now=NOW).split(".")[0]
    assert session_name(AUTH, f"{other}.{expires}.{sig}", now=NOW) is None
    assert session_name(BrowserAuth(secret="t" * 32), token, now=NOW) is None
    assert session_name(AUTH, "garbage", now=NOW) is None


def test_signed_link_covers_path_and_query_and_expires() -> None:
    url = sign_link(AUTH, "analyst", "/api/v1/backlog", "facility=PC-GD&region=CN-GD", 2_000)
    path, _, query = url.partition("?")
    assert link_name(AUTH, path, query, now=1_000) == "analyst"
    # Parameter order does not matter, every value does.
    params = dict(parse_qsl(query))
    reordered = "&".join(f"{k}={v}" for k, v in reversed(list(params.items())))
    assert link_name(AUTH, path, reordered, now=1_000) == "analyst"
    assert link_name(AUTH, path, query.replace("PC-GD", "DO-GD"), now=1_000) is None
    assert link_name(AUTH, path, query + "&product=express", now=1_000) is None
    assert link_name(AUTH, "/api/v1/late-items", query, now=1_000) is None
    assert link_name(AUTH, path, query, now=2_001) is None


# --- sessions through the app --------------------------------------------------------------


def test_browser_without_credentials_is_sent_to_the_form_and_back(client: TestClient) -> None:
    r = client.get("/api/v1/backlog?facility=PC-GD", headers=HTML, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/session?next=%2Fapi%2Fv1%2Fbacklog%3Ffacility%3DPC-GD"
    form = client.get(r.headers["location"])
    assert form.status_code == 200 and "type='password'" in form.text
    assert "value='/api/v1/backlog?facility=PC-GD'" in form.text
    # A program (no text/html) still gets the plain 401.
    assert client.get("/api/v1/backlog").status_code == 401


def test_session_reads_but_cannot_write_and_keeps_the_region_scope(client: TestClient) -> None:
    cookie = _sign_in(client, "gd-secret")
    client.cookies.clear()
    r = _as(client, cookie).get("/api/v1/kpis/on_time_ratio", params={"by": "region"})
    assert r.status_code == 200
    assert r.json()["data"] == [{"region": "CN-GD", "on_time_ratio": 2 / 3}]
    admin = _sign_in(client, "admin-secret")
    client.cookies.clear()
    # Sessions are read-only: no POST (admin or not) goes through with a cookie alone.
    r = _as(client, admin).post("/api/v1/admin/reload")
    assert r.status_code == 401
    assert _as(client, admin).get("/api/v1/backlog").status_code == 200


def test_wrong_key_in_the_form_is_refused(client: TestClient) -> None:
    r = client.post(
        "/session",
        content="key=guess&next=//evil.example.org/",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert r.status_code == 401 and COOKIE not in r.cookies
    # The open-redirect attempt was neutralised in the re-shown form.
    assert "evil" not in r.text


def test_removing_the_key_ends_its_sessions(hand_dir_shared: Path, client: TestClient) -> None:
    cookie = _sign_in(client, "reader-secret")
    kept = tuple(k for k in api_keys() if k.name != "analyst")
    with api_client(hand_dir_shared, api_keys=kept, browser=AUTH) as other:
        assert _as(other, cookie).get("/api/v1/backlog").status_code == 401
    with api_client(hand_dir_shared, api_keys=api_keys(), browser=AUTH) as same:
        assert _as(same, cookie).get("/api/v1/backlog").status_code == 200


def test_signed_link_through_the_app(client: TestClient) -> None:
    r = client.post(
        "/api/v1/links",
        json={"url": "/api/v1/backlog?facility=PC-GD", "ttl_seconds": 600},
        headers=READER,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["signed_for"] == "analyst" and "reader-secret" not in body["url"]
    url = urlsplit(body["url"])
    ok = client.get(f"{url.path}?{url.query}")
    assert ok.status_code == 200 and ok.json()["total"] == 1
    tampered = url.query.replace("PC-GD", "DO-GD")
    assert client.get(f"{url.path}?{tampered}").status_code == 401
    # Only API paths, only up to the maximum lifetime, only with a header key.
    for bad in ({"url": "https://evil.example.org/api/v1/backlog"}, {"url": "/session"}):
        assert client.post("/api/v1/links", json=bad, headers=READER).status_code in (400, 422)
    too_long = {"url": "/api/v1/backlog", "ttl_seconds": AUTH.link_max_ttl_seconds * 10}
    r = client.post("/api/v1/links", json=too_long, headers=READER)
    assert r.json()["expires"] - time.time() <= AUTH.link_max_ttl_seconds + 5
    assert client.post("/api/v1/links", json={"url": "/api/v1/backlog"}).status_code == 401


def test_keys_never_reach_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        cookie = _sign_in(client, "reader-secret")
        _as(client, cookie).get("/api/v1/backlog")
        client.post("/api/v1/links", json={"url": "/api/v1/backlog"}, headers=READER)
    for secret in KEYS:
        assert secret not in caplog.text


# --- every drill-down link of the dashboards opens -------------------------------------------

#: Grafana's interpolations of a link, with values of the hand-written folder.
FIELDS = {
    "facility": "PC-GD",
    "region": "CN-GD",
    "destination": "CN-GD",
    "product": "express",
    "category": "delay",
    "from_region": "CN-GD",
    "to_region": "CN-SH",
}
TIMES = {
    "${__from:date:iso}": "2026-03-01T00:00:00.000Z",
    "${__to:date:iso}": "2026-03-05T00:00:00.000Z",
}


def _dashboard_api_links() -> list[tuple[str, str]]:
    api = MixinConfig().api_url
    out = []
    for path in sorted((REPO / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                if link["url"].startswith(api):
                    out.append((f"{path.stem}/{panel['title']}", link["url"][len(api) :]))
    return out


def test_every_dashboard_drill_down_link_opens_in_a_signed_in_browser(client: TestClient) -> None:
    links = _dashboard_api_links()
    assert len(links) >= 15
    cookie = _sign_in(client, "reader-secret")
    client.cookies.clear()
    failures = []
    for where, template in links:
        url = template
        for token, value in TIMES.items():
            url = url.replace(token, value)
        url = re.sub(
            r"\$\{__(?:field\.labels|data\.fields)\.(\w+)\}", lambda m: FIELDS[m.group(1)], url
        )
        assert "$" not in url, f"{where}: {url}"
        assert "from=" in url or "as_of=" in url, f"{where}: no time range in {url}"
        r = _as(client, cookie).get(url, headers=HTML)
        if r.status_code != 200:
            failures.append(f"{where}: {url} -> {r.status_code} {r.text[:200]}")
        # Without the session the same link is refused: the session is what opens it.
        assert _as(client, None).get(url).status_code == 401
    assert failures == []
    assert SIG not in "".join(t for _, t in links)
