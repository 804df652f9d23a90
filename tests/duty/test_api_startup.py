"""``kpi api`` opens the duty desk after it listens: the KPI routes do not wait for it.

Real subprocesses, a real PostgreSQL whose version table a test transaction keeps locked
(so the register's opening waits, as behind a slow or busy database), and a SQLite path
that cannot be created (an opening that fails).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from kpi.duty.register import open_register
from tests import pgkit
from tests.api.conftest import write_hand_folder
from tests.duty.conftest import ApiServer, alert, payload, start_api
from tests.promkit import wait_for

pytestmark = pytest.mark.slow


def get(api: ApiServer, path: str, body: Any = None) -> tuple[int, Message, Any]:
    """(status, headers (any case), JSON answer) of a GET (a POST with ``body``)."""
    req = urllib.request.Request(
        api.url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.load(exc)


def desk(api: ApiServer) -> dict[str, Any]:
    """The duty desk's component in /readyz (which answers 200 here)."""
    status, _, body = get(api, "/readyz")
    assert status == 200, body
    return dict(body["components"]["duty_desk"])


def test_the_desk_answers_503_while_its_database_opens_and_the_kpis_do_not_wait(
    tmp_path: Path, postgres: pgkit.PostgresServer
) -> None:
    url = postgres.create_database("duty_starting")
    open_register(url).engine.dispose()  # migrated: the API's opening only reads its version
    u = make_url(url)
    dsn = f"host={u.host} port={u.port} user={u.username} dbname={u.database}"
    with psycopg.connect(dsn) as lock:
        # Held until released below: the register's first read waits on it.
        lock.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        api = start_api(tmp_path, write_hand_folder(tmp_path / "data"), url, duty_ready=False)
        try:
            assert desk(api) == {"status": "starting", "detail": None}
            status, _, body = get(api, "/api/v1/kpis/on_time_ratio")
            assert status == 200 and body["data"], body
            status, headers, body = get(api, "/api/v1/incidents")
            assert status == 503 and "starting" in body["detail"], body
            assert int(headers["Retry-After"]) > 0, headers
            firing = payload(alert("f1", "2026-01-02T03:00:00Z"))
            status, headers, body = get(api, "/api/v1/incidents/alertmanager", firing)
            assert status == 503 and headers["Retry-After"], body
            lock.rollback()
            wait_for(lambda: desk(api)["status"] == "ready", timeout=30, what="the duty desk")
            # Alertmanager's retry of the refused notification: recorded now.
            status, _, body = get(api, "/api/v1/incidents/alertmanager", firing)
            assert status == 200, body
            status, _, body = get(api, "/api/v1/incidents")
            assert status == 200 and [r["fingerprint"] for r in body["rows"]] == ["f1"], body
        finally:
            api.kill()


def test_a_desk_that_cannot_open_says_why_and_the_kpis_still_answer(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    url = f"sqlite:///{blocker / 'duty.db'}"  # its folder cannot be created
    api = start_api(tmp_path, write_hand_folder(tmp_path / "data"), url, duty_ready=False)
    try:
        wait_for(lambda: desk(api)["status"] != "starting", timeout=30, what="the duty desk")
        state = desk(api)
        assert state["status"] == "failed" and "a-file" in state["detail"], state
        status, headers, body = get(api, "/api/v1/incidents")
        assert status == 503 and "could not open its database" in body["detail"], body
        assert headers["Retry-After"] is None
        status, _, body = get(api, "/api/v1/kpis/on_time_ratio")
        assert status == 200 and body["data"], body
        assert "the duty desk could not open its database" in api.log()
    finally:
        api.kill()
