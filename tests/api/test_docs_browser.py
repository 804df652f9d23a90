"""/docs and /redoc render in a real headless Chromium with every outside name unresolvable.

The pages' scripts come from the fastapi-offline wheel: with the public CDN of FastAPI's
defaults the page stays blank here, and this test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from kpi.api import Settings, create_app
from kpi.api.settings import ApiKey, hash_key
from tests.api.conftest import write_hand_folder
from tests.netkit import free_port
from tests.promkit import wait_for

pytestmark = pytest.mark.slow


def chromium() -> str:
    """Debian's chromium; skipped when missing, except under CI (make system-deps installs it)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium not installed (make system-deps)")
    pytest.skip("chromium not installed (apt-get install chromium)")


@contextlib.contextmanager
def serve(tmp_path: Path) -> Iterator[str]:
    """The API (keys configured, docs open) in a uvicorn thread on a free port."""
    settings = Settings(
        data_dir=write_hand_folder(tmp_path / "data"),
        api_keys=(ApiKey(name="a", sha256=hash_key("secret")),),
        database=f"sqlite:///{tmp_path / 'duty.db'}",
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=60, what="uvicorn")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def render(url: str, workdir: Path) -> tuple[str, list[tuple[str, str]]]:
    """(the DOM after scripts ran, (url, on behalf of) of every request) for ``url``."""
    netlog = workdir / f"net-{time.monotonic_ns()}.json"
    result = subprocess.run(
        [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-background-networking",
            "--disable-features=AutofillServerCommunication,OptimizationHints,Translate",
            f"--user-data-dir={workdir / 'profile'}",
            # The network is cut: no name resolves except this machine's address.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--log-net-log={netlog}", "--virtual-time-budget=20000", "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    events = json.loads(netlog.read_text())["events"]
    requests = [
        (e["params"]["url"], e["params"].get("network_isolation_key", ""))
        for e in events
        if "url" in e.get("params", {})
    ]
    return result.stdout, requests


def page_requests(requests: list[tuple[str, str]]) -> set[str]:
    """Hosts the page asked for (the browser's own update checks are not the page's)."""
    return {
        urllib.parse.urlsplit(u).hostname or ""
        for u, isolation in requests
        if isolation.startswith("http://127.0.0.1")
    }


def test_docs_and_redoc_render_offline(tmp_path: Path) -> None:
    with serve(tmp_path) as base:
        dom, requests = render(f"{base}/docs", tmp_path)
        # Swagger UI drew the operations list, with the Authorize button for the API key.
        assert dom.count("opblock-summary-path") >= 20
        assert "/api/v1/incidents/alertmanager" in dom and "/api/v1/backlog" in dom
        assert "btn authorize" in dom
        assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u, _ in requests)
        assert page_requests(requests) == {"127.0.0.1"}

        dom, requests = render(f"{base}/redoc", tmp_path)
        assert "Alertmanager webhook" in dom and "redoc" in dom.lower()
        assert page_requests(requests) == {"127.0.0.1"}


def test_openapi_offers_the_api_key_to_authorize(tmp_path: Path) -> None:
    settings = Settings(data_dir=write_hand_folder(tmp_path / "data"))
    with TestClient(create_app(settings)) as client:
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        docs = client.get("/docs")
        page = docs.text
    assert "default-src 'self'" in docs.headers["content-security-policy"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "API key (or use Authorization: Bearer)",
    }  # fmt: skip
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert "cdn" not in page.lower() and "https://" not in page
