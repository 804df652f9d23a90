"""``GET /runbooks``: every alert's absolute runbook_url lands on its own section."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]


def test_every_runbook_url_resolves_to_a_section(hand_client: TestClient) -> None:
    alerts = yaml.safe_load((REPO / "prometheus/alerts.yml").read_text())
    urls = {r["annotations"]["runbook_url"] for g in alerts["groups"] for r in g["rules"]}
    assert len(urls) >= 12
    page = hand_client.get("/runbooks")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:8000", "/runbooks")
        assert f'<h2 id="{parts.fragment}">' in page.text, url


def test_runbooks_follow_the_docs_access_rule(auth_client: TestClient) -> None:
    # auth_client closes the docs (docs_require_key): the runbooks too.
    assert auth_client.get("/runbooks").status_code == 401
    assert auth_client.get("/runbooks", headers={"X-API-Key": "reader-secret"}).status_code == 200
