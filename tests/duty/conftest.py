"""Duty desk fixtures: the register on SQLite and on a real PostgreSQL, Alertmanager payloads."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kpi.duty.register import IncidentRegister, open_register
from tests import pgkit

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
