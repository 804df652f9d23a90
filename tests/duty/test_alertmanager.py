"""A real Alertmanager, routed by the project's generated config, feeding a real ``kpi api``.

Firing -> resolved -> re-firing of the backlog alert gives exactly two linked incidents
with Alertmanager's times, on SQLite and on PostgreSQL; 50 concurrent duplicate posts
give one incident; a SIGKILLed API comes back with everything on record.
"""

from __future__ import annotations

import datetime as dt
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporters.mixin import alerts as al
from exporters.mixin import configs
from exporters.mixin.config import MixinConfig
from kpi.api.settings import hash_key
from tests import promkit
from tests.api.conftest import write_hand_folder
from tests.duty.conftest import BACKENDS, ApiServer, alert, database_url, payload, start_api, utc

pytestmark = pytest.mark.slow


def am_config(workdir: Path, api_port: int, token: str) -> Path:
    """The generated alertmanager.yml, pointed at the test API, with quick grouping."""
    config = configs.alertmanager_config(MixinConfig())
    duty = next(r for r in config["receivers"] if r["name"] == configs.DUTY_RECEIVER)
    duty["webhook_configs"][0]["url"] = f"http://127.0.0.1:{api_port}{configs.DUTY_WEBHOOK_PATH}"
    route = next(r for r in config["route"]["routes"] if r["receiver"] == configs.DUTY_RECEIVER)
    route.update(group_wait="0s", group_interval="1s")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / configs.DUTY_TOKEN_FILE).write_text(token + "\n")
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def backlog_rule() -> al.Alert:
    """The backlog alert of the shipped rules (its labels and annotations are the real ones)."""
    return next(a for a in al.backlog_alerts(MixinConfig()) if a.name == al.BACKLOG_HIGH)


def stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def incidents(api: ApiServer) -> list[dict[str, Any]]:
    status, body = api.request("GET", "/api/v1/incidents?limit=1000")
    assert status == 200, body
    return sorted(body["rows"], key=lambda r: r["id"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_alertmanager_firing_resolved_refiring_and_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = database_url(backend, tmp_path, request)
    data = write_hand_folder(tmp_path / "data")
    token = secrets.token_hex(16)
    settings = tmp_path / "api.yaml"
    settings.write_text(
        yaml.safe_dump({"webhook_tokens": [{"name": "am-test", "sha256": hash_key(token)}]})
    )
    api = start_api(tmp_path, data, db, "--config", str(settings))
    try:
        # 50 concurrent duplicate deliveries of one notification: one incident.
        dup = payload(alert("feedface", "2026-03-04T18:00:00Z"))
        auth = {"Authorization": f"Bearer {token}"}
        with ThreadPoolExecutor(50) as pool:
            answers = list(
                pool.map(
                    lambda _: api.request("POST", configs.DUTY_WEBHOOK_PATH, dup, auth), range(50)
                )
            )
        assert {s for s, _ in answers} == {200}
        assert sum(len(b["opened"]) for _, b in answers) == 1
        assert len(incidents(api)) == 1

        rule = backlog_rule()
        labels = {
            "alertname": rule.name, "severity": rule.severity, "job": "postal-exporter",
            "facility": "PC-GD", "facility_type": "processing", "region": "CN-GD",
        }  # fmt: skip
        notes = {
            "summary": "Facility PC-GD backlog is above its threshold.",
            "runbook_url": rule.runbook_url,
        }
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        t0, t1, t2 = (
            now - dt.timedelta(minutes=30),
            now - dt.timedelta(minutes=10),
            now - dt.timedelta(minutes=2),
        )
        with promkit.run_alertmanager(
            tmp_path / "am", am_config(tmp_path / "am-config", api.port, token)
        ) as am:
            am.post_alerts([{"labels": labels, "annotations": notes, "startsAt": stamp(t0)}])
            promkit.wait_for(
                lambda: len(incidents(api)) == 2, timeout=30, what="the firing incident"
            )
            am.post_alerts(
                [
                    {
                        "labels": labels,
                        "annotations": notes,
                        "startsAt": stamp(t0),
                        "endsAt": stamp(t1),
                    }
                ]
            )
            promkit.wait_for(
                lambda: incidents(api)[1]["resolved_at"] is not None,
                timeout=30,
                what="the resolution",
            )
            am.post_alerts([{"labels": labels, "annotations": notes, "startsAt": stamp(t2)}])
            promkit.wait_for(
                lambda: len(incidents(api)) == 3, timeout=30, what="the re-fired incident"
            )
            before = incidents(api)

            _, first, second = before
            assert (first["alertname"], first["severity"], first["facility"], first["region"]) == (
                "PostalFacilityBacklogHigh", "critical", "PC-GD", "CN-GD",
            )  # fmt: skip
            assert utc(first["starts_at"]) == t0 and utc(first["resolved_at"]) == t1
            assert utc(second["starts_at"]) == t2 and second["resolved_at"] is None
            assert (
                second["previous_id"] == first["id"]
                and first["fingerprint"] == second["fingerprint"]
            )
            assert first["runbook_url"] == rule.runbook_url and first["summary"] == notes["summary"]
            # The hub's backlog at the time the alert started: GD4 has waited since 4 March 12:00.
            assert first["kpis"]["backlog_items"] == 1 and first["kpis"]["backlog_threshold"] == 1
            hours = (t0 - utc("2026-03-04T12:00:00Z")).total_seconds() / 3600
            assert first["kpis"]["backlog_oldest_hours"] == pytest.approx(hours, abs=0.01)
            assert "am-test" in api.log() or "webhook from am-test" in api.log()

            # A crash, then the same port again: nothing lost, and the desk goes on.
            api.kill()
            api = start_api(tmp_path, data, db, "--config", str(settings), port=api.port)
            assert incidents(api) == before
            am.post_alerts(
                [
                    {
                        "labels": labels,
                        "annotations": notes,
                        "startsAt": stamp(t2),
                        "endsAt": stamp(now),
                    }
                ]
            )
            promkit.wait_for(
                lambda: incidents(api)[2]["resolved_at"] is not None,
                timeout=30,
                what="resolution after restart",
            )
        after = incidents(api)
        assert len(after) == 3 and utc(after[2]["resolved_at"]) == now
        detail = api.request("GET", f"/api/v1/incidents/{first['id']}")[1]
        assert [e["kind"] for e in detail["timeline"]] == ["opened", "resolved"]
        assert detail["next_id"] == second["id"]
    finally:
        api.kill()


def test_generated_config_routes_every_postal_alert_to_the_desk() -> None:
    path = Path(__file__).resolve().parents[2] / "prometheus/alertmanager.yml"
    for labels in (
        ("alertname=PostalFacilityBacklogHigh", "severity=critical", "region=CN-GD"),
        ("alertname=PostalComplaintSpike", "severity=warning", "region=CN-BJ"),
        ("alertname=PostalExporterDown", "severity=critical"),
        ("alertname=PostalExporterRejectingRows", "severity=info"),
    ):
        result = promkit.run_tool(
            "amtool", "config", "routes", "test", f"--config.file={path}", *labels
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().split(",")[0] == configs.DUTY_RECEIVER, labels
    other = promkit.run_tool(
        "amtool", "config", "routes", "test", f"--config.file={path}", "alertname=Watchdog"
    )
    assert configs.DUTY_RECEIVER not in other.stdout
