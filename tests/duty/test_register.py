"""The incident register on SQLite and PostgreSQL: episodes, idempotence, concurrency, actions."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kpi.duty.register as register_module
from kpi.duty.register import DutyError, IncidentRegister, head_revision, open_register
from kpi.duty.schema import incident_events, incidents
from kpi.duty.webhook import WebhookPayload
from tests.duty.conftest import alert, payload, utc


def record(reg: IncidentRegister, *alerts: dict[str, object]) -> tuple[list[int], list[int]]:
    done = reg.record(WebhookPayload.model_validate(payload(*alerts)))
    return done.opened, done.resolved


def test_firing_resolved_refiring_gives_two_linked_incidents(register: IncidentRegister) -> None:
    t0, t1, t2 = "2026-03-04T18:00:00.123Z", "2026-03-04T21:30:00Z", "2026-03-05T02:00:00Z"
    opened, _ = record(register, alert("aa01", t0))
    assert len(opened) == 1
    first = opened[0]
    # Alertmanager re-sends the firing alert every repeat_interval: nothing new.
    assert record(register, alert("aa01", t0)) == ([], [])
    assert record(register, alert("aa01", t0, t1)) == ([], [first])
    assert record(register, alert("aa01", t0, t1)) == ([], [])  # re-sent resolution
    opened, _ = record(register, alert("aa01", t2))
    second = opened[0]
    assert second != first

    one, two = register.get(first), register.get(second)
    assert (one["starts_at"], one["resolved_at"], one["status"]) == (utc(t0), utc(t1), "resolved")
    assert (two["starts_at"], two["resolved_at"], two["status"]) == (utc(t2), None, "open")
    assert two["previous_id"] == first and one["next_id"] == second
    assert [(e["kind"], e["at"]) for e in one["timeline"]] == [
        ("opened", utc(t0)),
        ("resolved", utc(t1)),
    ]
    assert one["alertname"] == "PostalFacilityBacklogHigh"
    assert (one["severity"], one["facility"], one["region"]) == ("critical", "PC-GD", "CN-GD")
    assert one["runbook_url"].endswith("#postalfacilitybackloghigh")
    assert one["labels"]["job"] == "postal-exporter"
    rows, total = register.search()
    assert total == 2 and [r["id"] for r in rows] == [second, first]


def test_resolution_before_any_firing_notification_opens_and_resolves(
    register: IncidentRegister,
) -> None:
    """The API was down while the alert fired: the resolved notification alone records it."""
    opened, resolved = record(
        register, alert("bb02", "2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z")
    )
    assert opened == resolved and len(opened) == 1
    kinds = [e["kind"] for e in register.get(opened[0])["timeline"]]
    assert kinds == ["opened", "resolved"]


def test_lost_resolution_is_ended_by_the_next_episode(register: IncidentRegister) -> None:
    (first,), _ = record(register, alert("cc03", "2026-03-04T10:00:00Z"))
    (second,), _ = record(register, alert("cc03", "2026-03-04T15:00:00Z"))
    one = register.get(first)
    assert one["resolved_at"] == utc("2026-03-04T15:00:00Z")
    assert "fired again" in one["timeline"][-1]["text"]
    assert register.get(second)["previous_id"] == first


def test_fifty_concurrent_duplicates_make_one_incident(db_url: str) -> None:
    """Each thread has its own connection; the unique constraint decides, not a lock."""
    regs = [open_register(db_url, upgrade=i == 0) for i in range(2)]
    body = WebhookPayload.model_validate(
        payload(alert("dd04", "2026-03-04T10:00:00Z"), alert("ee05", "2026-03-04T10:00:05Z"))
    )
    barrier = threading.Barrier(50)

    def send(i: int) -> list[int]:
        barrier.wait()
        return regs[i % 2].record(body).opened

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(send, range(50)))
    opened = [i for r in results for i in r]
    assert len(opened) == 2 and len(set(opened)) == 2
    with regs[0].engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(incidents)).scalar_one() == 2
        events = conn.execute(sa.select(sa.func.count()).select_from(incident_events)).scalar_one()
    assert events == 2  # one "opened" each
    for reg in regs:
        reg.engine.dispose()


def test_the_unique_constraint_itself_refuses_a_second_row(register: IncidentRegister) -> None:
    """The guarantee lives in the schema: a plain INSERT of the same episode fails."""
    row = {
        "fingerprint": "ff06",
        "starts_at": utc("2026-03-04T10:00:00Z"),
        "alertname": "X",
        "labels": {},
        "recorded_at": utc("2026-03-04T10:00:00Z"),
    }
    with register.engine.begin() as conn:
        conn.execute(incidents.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError), register.engine.begin() as conn:
        conn.execute(incidents.insert().values(**row))


def test_duty_actions_and_timeline(register: IncidentRegister) -> None:
    (gd,), _ = record(register, alert("a1", "2026-03-04T10:00:00Z"))
    (sh,), _ = record(
        register, alert("a2", "2026-03-04T11:00:00Z", facility="DO-SH", region="CN-SH")
    )
    register.acknowledge(gd, "night-duty", "looking")
    with pytest.raises(DutyError) as exc:
        register.acknowledge(gd, "someone-else")
    assert exc.value.status == 409 and "night-duty" in exc.value.detail
    register.note(gd, "night-duty", "called the hub: two sorters down")
    handover = register.handover("night-duty", "PC-GD still over threshold")
    assert [i["id"] for i in handover["open"]] == [gd, sh]
    scoped = register.handover("gd-desk", "GD only", regions=frozenset({"CN-GD"}))
    assert [i["id"] for i in scoped["open"]] == [gd]
    with pytest.raises(DutyError) as exc:
        register.close(gd, "night-duty", "gremlins")
    assert exc.value.status == 400 and "equipment" in exc.value.detail
    closed = register.close(gd, "night-duty", "equipment", "sorters repaired")
    assert closed["status"] == "closed" and closed["cause"] == "equipment"
    assert [e["kind"] for e in closed["timeline"]] == [
        "opened", "acknowledged", "note", "handover", "handover", "closed",
    ]  # fmt: skip
    assert closed["timeline"][1]["by"] == "night-duty"
    with pytest.raises(DutyError):
        register.close(gd, "night-duty", "other")
    # A key scoped to CN-SH does not see the CN-GD incident at all.
    with pytest.raises(DutyError) as exc:
        register.get(gd, regions=frozenset({"CN-SH"}))
    assert exc.value.status == 404
    assert [r["id"] for r in register.search(status="open")[0]] == [sh]
    assert [r["id"] for r in register.search(status="closed")[0]] == [gd]
    assert [r["id"] for r in register.search(facility=["DO-SH"])[0]] == [sh]
    # [from, to): open at some time in the window.
    early = register.search(end=utc("2026-03-04T10:30:00Z"))[0]
    assert [r["id"] for r in early] == [gd]
    assert register.counts() == ({"critical": 1}, {"critical": 2})


def _episode_plan() -> st.SearchStrategy[list[tuple[str, int, int | None]]]:
    """(fingerprint, start hour, end hour or None) for 1-3 episodes of 1-2 alerts."""

    def episodes(fp: str) -> st.SearchStrategy[list[tuple[str, int, int | None]]]:
        return st.lists(
            st.tuples(st.integers(1, 5), st.one_of(st.none(), st.integers(0, 4))),
            min_size=1,
            max_size=3,
        ).map(
            lambda gaps: [
                (fp, start, None if end is None else start + end) for start, end in _starts(gaps)
            ]
        )

    return st.tuples(episodes("a1"), st.one_of(st.just([]), episodes("b2"))).map(
        lambda pair: pair[0] + pair[1]
    )


def _starts(gaps: list[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
    """Episode start hours 10 h apart plus a gap, so an episode ends before the next starts."""
    return [(10 * i + gap, end) for i, (gap, end) in enumerate(gaps)]


def _hour(h: int) -> str:
    return f"2026-03-0{1 + h // 24}T{h % 24:02d}:00:00Z"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=_episode_plan(), data=st.data())
def test_any_delivery_order_and_resends_give_the_same_register(
    plan: list[tuple[str, int, int | None]], data: st.DataObject
) -> None:
    """Property: whatever the order and the duplicates, the register ends up the same.

    Reference: one incident per episode; resolved at its endsAt when a resolution was
    delivered, else at the next episode's start when there is one (Alertmanager only
    re-fires a resolved alert), else open; each episode linked to the one before.
    """
    notes: list[dict[str, object]] = []
    for fp, start, end in plan:
        copies = data.draw(st.integers(1, 3), label="copies")
        notes += [alert(fp, _hour(start))] * copies
        if end is not None:
            notes += [alert(fp, _hour(start), _hour(end))] * copies
    order = data.draw(st.permutations(notes), label="order")
    with tempfile.TemporaryDirectory() as tmp:
        reg = open_register(f"sqlite:///{tmp}/duty.db")
        for note in order:
            reg.record(WebhookPayload.model_validate(payload(note)))
        got = {(r["fingerprint"], r["starts_at"]): r for r in reg.search(limit=1000)[0]}
        reg.engine.dispose()
    assert len(got) == len(plan)
    for fp in ("a1", "b2"):
        mine = sorted((s, e) for f, s, e in plan if f == fp)
        for i, (start, end) in enumerate(mine):
            row = got[(fp, utc(_hour(start)))]
            if end is not None:
                expected_end = utc(_hour(end))
            elif i + 1 < len(mine):
                expected_end = utc(_hour(mine[i + 1][0]))
            else:
                expected_end = None
            assert row["resolved_at"] == expected_end, (fp, start, end)
            previous = got[(fp, utc(_hour(mine[i - 1][0])))]["id"] if i else None
            assert row["previous_id"] == previous


def test_head_revision_is_alembics_head() -> None:
    cfg = Config()
    migrations = Path(register_module.__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(migrations))
    assert [head_revision()] == ScriptDirectory.from_config(cfg).get_heads()


def test_a_migrated_database_opens_without_alembic(db_url: str) -> None:
    open_register(db_url).engine.dispose()  # a new database: Alembic creates the schema
    # Alembic costs a second to import: a register at the newest revision reopens without it.
    code = (
        "import sys; from kpi.duty.register import open_register; "
        f"r = open_register({db_url!r}); r.engine.dispose(); print('alembic' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False", run.stderr
    reg = open_register(db_url)
    assert reg.revision() == head_revision()
    reg.engine.dispose()
