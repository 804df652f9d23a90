"""Duty desk fixtures: the register on SQLite and on a real PostgreSQL, Alertmanager payloads."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kpi.duty.register import IncidentRegister, open_register
from tests import pgkit
from tests.netkit import free_port
from tests.promkit import wait_for

BACKENDS = ("sqlite", "postgresql")
_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[pgkit.PostgresServer]:
    """One PostgreSQL server per test worker (a fresh database per test)."""
    with pgkit.run_postgres() as server:
        yield server


def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'duty.db'}"
    server: pgkit.PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"duty_{next(_names)}_{abs(hash(request.node.nodeid)) % 10**8}")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database, once on SQLite and once on PostgreSQL."""
    return database_url(request.param, tmp_path, request)


@pytest.fixture
def register(db_url: str) -> Iterator[IncidentRegister]:
    """A migrated register over ``db_url``."""
    reg = open_register(db_url)
    yield reg
    reg.engine.dispose()


def utc(text: str) -> dt.datetime:
    """An ISO instant as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


ZERO = "0001-01-01T00:00:00Z"


def alert(
    fingerprint: str,
    starts: str,
    ends: str | None = None,
    *,
    name: str = "PostalFacilityBacklogHigh",
    severity: str = "critical",
    facility: str | None = "PC-GD",
    region: str | None = "CN-GD",
    **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager writes it into a webhook payload (resolved when ``ends``)."""
    all_labels = {"alertname": name, "severity": severity, "job": "postal-exporter", **labels}
    if facility:
        all_labels["facility"] = facility
    if region:
        all_labels["region"] = region
    return {
        "status": "resolved" if ends else "firing",
        "labels": all_labels,
        "annotations": {
            "summary": f"Facility {facility} backlog is above its threshold.",
            "runbook_url": "https://example.org/runbooks#postalfacilitybackloghigh",
        },
        "startsAt": starts,
        "endsAt": ends or ZERO,
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    """A version-4 webhook payload around ``alerts``."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}/{alertname=~"Postal.+"}:{alertname="PostalFacilityBacklogHigh"}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "duty-desk",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


# --- the API as a real server (a subprocess killed with SIGKILL) ---------------------------


@dataclass
class ApiServer:
    """``kpi api`` running in a subprocess on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """(status, JSON answer) of one request."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def log(self) -> str:
        """Output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_api(
    workdir: Path,
    data: Path,
    database: str,
    *extra: str,
    port: int | None = None,
    duty_ready: bool = True,
) -> ApiServer:
    """``kpi api DATA --database URL`` on a free port; returns once /readyz answers 200 and,
    with ``duty_ready``, its duty desk is open (it opens after the server listens)."""
    port = port or free_port()
    log_path = workdir / f"api-{port}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kpi_cli", "api", str(data), "--listen", f"127.0.0.1:{port}",
             "--database", database, *extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
    server = ApiServer(process, port, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"kpi api exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as response:
                body = json.load(response)
        except (OSError, urllib.error.HTTPError):
            return False
        desk = body["components"]["duty_desk"]
        if desk["status"] == "failed":
            raise RuntimeError(f"the duty desk failed: {desk['detail']}\n{server.log()}")
        return not duty_ready or desk["status"] != "starting"

    try:
        wait_for(ready, timeout=90, what="kpi api /readyz")
    except BaseException:
        server.kill()
        raise
    return server
