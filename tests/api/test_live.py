"""A real server (``kpi api`` under uvicorn on 127.0.0.1) probed over HTTP and by schemathesis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api.conftest import api_keys
from tests.netkit import free_port

ADMIN = {"X-API-Key": "admin-secret"}
SERVE = "import typer; from kpi_cli.api import api; typer.run(api)"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,negative_data_rejection,"
    "ignored_auth,missing_required_header,unsupported_method"
)


@pytest.fixture(scope="module")
def live_url(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``kpi api DATA --listen 127.0.0.1:PORT --config api.yaml`` with keys (auth on)."""
    config = tmp_path_factory.mktemp("live") / "api.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api_keys": [k.model_dump(mode="json") for k in api_keys()],
                "limits": {"request_timeout_seconds": 20},
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = config.with_suffix(".log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVE,
            str(sim_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--config",
            str(config),
            "--database",
            f"sqlite:///{config.with_suffix('.db')}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError(config.with_suffix(".log").read_text())
            time.sleep(0.2)
        else:
            raise AssertionError("the server did not become ready in 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_live_server_answers_and_counts(live_url: str) -> None:
    """Keys are enforced over the wire; /metrics counts requests by route template."""
    assert httpx.get(f"{live_url}/api/v1/kpis").status_code == 401
    r = httpx.get(f"{live_url}/api/v1/kpis/on_time_ratio", params={"by": "region"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["total"] > 10
    backlog = httpx.get(f"{live_url}/api/v1/backlog", params={"limit": 1}, headers=ADMIN).json()
    item = backlog["data"][0]["item_id"]
    assert httpx.get(f"{live_url}/api/v1/items/{item}", headers=ADMIN).status_code == 200
    metrics = httpx.get(f"{live_url}/metrics").text
    assert (
        'postal_api_requests_total{method="GET",route="/api/v1/kpis/{name}",status="200"}'
        in metrics
    )
    assert 'route="/api/v1/items/{item_id}"' in metrics and item not in metrics
    assert "postal_api_request_duration_seconds_bucket" in metrics


@pytest.mark.timeout(120)
def test_schemathesis_finds_no_5xx_and_no_schema_violation(live_url: str, tmp_path: Path) -> None:
    """Generated requests (valid and invalid) never get a 5xx or an answer off the schema."""
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(st),
        "run",
        f"{live_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "8",
        "--seed",
        "42",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        # The duty desk's routes get their own run (tests/duty/test_api_schema.py).
        "--exclude-tag",
        "incidents",
        "-H",
        f"X-API-Key: {ADMIN['X-API-Key']}",
    ]
    env = os.environ | {"NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    result = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=110, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
