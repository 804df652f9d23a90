"""The incident register: Alertmanager notifications in, duty actions, queries; SQLAlchemy Core.

One incident per alert fingerprint and firing episode. An episode is named by its
``startsAt``: Alertmanager keeps it across re-sends and gives a re-fired alert a new
one. ``(fingerprint, starts_at)`` is a unique constraint and notifications insert
with ``ON CONFLICT DO NOTHING``, so duplicates and concurrent re-sends, in one
process or several, land once. An incident is *open* until the alert resolves
(``resolved_at`` = the alert's ``endsAt``) or the duty desk closes it, whichever
comes first.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

from kpi.duty.schema import handovers, incident_events, incidents
from kpi.duty.terms import CAUSES, STATUSES, DutyError, Episode
from kpi.duty.webhook import WebhookAlert, WebhookPayload

__all__ = ["CAUSES", "STATUSES", "DutyError", "Episode", "IncidentRegister", "open_register"]

log = logging.getLogger("kpi.duty")

ALERTMANAGER: Final = "alertmanager"
DEFAULT_DATABASE: Final = "sqlite:///var/duty.db"

Clock = Callable[[], dt.datetime]


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """The instant in UTC; naive values (SQLite gives those back) are UTC already."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///FILE`` or ``postgresql://...`` (psycopg 3)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})

        # pysqlite's own transaction handling starts transactions late and deferred: a
        # webhook that reads and then writes could then fail with "database is locked"
        # instead of waiting. BEGIN IMMEDIATE takes the write lock up front, so
        # concurrent writers queue on the busy timeout (SQLAlchemy's documented recipe).
        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise ValueError(f"unsupported database {url!r}: use sqlite:///FILE or postgresql://...")


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


@dataclass
class Recorded:
    """What one notification changed."""

    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)


def region_of(labels: Mapping[str, str]) -> str | None:
    """The alert's region: ``region`` (facility, complaint alerts) or ``destination``."""
    return labels.get("region") or labels.get("destination") or None


class IncidentRegister:
    """The register over one database; every method is one transaction (blocking)."""

    def __init__(self, engine: Engine, clock: Clock = _now) -> None:
        self.engine = engine
        self.clock = clock

    # --- schema -----------------------------------------------------------------------

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (Alembic ``upgrade head``)."""
        if self._at_head():
            return
        # Alembic loads only to migrate: importing it costs about as much as starting the API.
        from alembic import command  # noqa: PLC0415
        from alembic.config import Config  # noqa: PLC0415

        # Alembic announces each of its plugins at INFO; the revision lines stay.
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def revision(self) -> str | None:
        """The schema's current migration revision (None before the first upgrade)."""
        from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def _at_head(self) -> bool:
        """Whether the schema is at the newest migration already (read without Alembic)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        except sa.exc.DBAPIError:  # no version table yet: a new database
            return False
        head = head_revision()
        return head is not None and [r[0] for r in rows] == [head]

    # --- Alertmanager -------------------------------------------------------------------

    def unknown_episodes(self, payload: WebhookPayload) -> list[WebhookAlert]:
        """The payload's alerts whose episode is not on record yet (their KPIs are needed)."""
        out: list[WebhookAlert] = []
        with self.engine.begin() as conn:
            for alert in payload.alerts:
                found = conn.execute(
                    sa.select(incidents.c.id).where(
                        incidents.c.fingerprint == alert.fingerprint,
                        incidents.c.starts_at == alert.startsAt,
                    )
                ).first()
                if found is None:
                    out.append(alert)
        return out

    def record(
        self,
        payload: WebhookPayload,
        kpis: Mapping[Episode, dict[str, Any]] | None = None,
    ) -> Recorded:
        """Apply a notification: open new episodes, resolve ended ones; re-sends change nothing."""
        result = Recorded()
        now = self.clock()
        # One order for every transaction, so two notifications never deadlock each other.
        alerts = sorted(payload.alerts, key=lambda a: (a.fingerprint, a.startsAt))
        with self.engine.begin() as conn:
            for alert in alerts:
                key = (alert.fingerprint, alert.startsAt)
                resolved: int | None = None
                incident_id = self._open(conn, alert, (kpis or {}).get(key), now)
                if incident_id is not None:
                    result.opened.append(incident_id)
                if alert.status == "resolved":
                    ends = alert.ends_at
                    assert ends is not None  # the payload model checks this
                    resolved = self._resolve(conn, alert.fingerprint, alert.startsAt, ends)
                    if resolved is not None:
                        result.resolved.append(resolved)
                if incident_id is None and (alert.status == "firing" or resolved is None):
                    row = conn.execute(
                        sa.select(incidents.c.id).where(
                            incidents.c.fingerprint == alert.fingerprint,
                            incidents.c.starts_at == alert.startsAt,
                        )
                    ).scalar_one()
                    result.unchanged.append(int(row))
        return result

    def _open(
        self,
        conn: Connection,
        alert: WebhookAlert,
        kpis: dict[str, Any] | None,
        now: dt.datetime,
    ) -> int | None:
        labels, notes = alert.labels, alert.annotations
        row = {
            "fingerprint": alert.fingerprint,
            "starts_at": alert.startsAt,
            "alertname": labels["alertname"],
            "severity": labels.get("severity"),
            "facility": labels.get("facility"),
            "region": region_of(labels),
            "product": labels.get("product"),
            "summary": notes.get("summary"),
            "description": notes.get("description"),
            "runbook_url": notes.get("runbook_url"),
            "labels": dict(sorted(labels.items())),
            "kpis": kpis,
            "recorded_at": now,
        }
        stmt = (
            _insert(conn)(incidents)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["fingerprint", "starts_at"])
            .returning(incidents.c.id)
        )
        new_id = conn.execute(stmt).scalar_one_or_none()
        if new_id is None:
            return None
        self._event(conn, new_id, alert.startsAt, "opened", ALERTMANAGER, notes.get("summary"))
        # Notifications may arrive out of order (retries, several Alertmanagers): the
        # episodes before and after this one are linked whichever came first.
        episodes = sa.select(incidents.c.id, incidents.c.starts_at, incidents.c.resolved_at)
        same = incidents.c.fingerprint == alert.fingerprint
        previous = conn.execute(
            episodes.where(same, incidents.c.starts_at < alert.startsAt)
            .order_by(incidents.c.starts_at.desc())
            .limit(1)
        ).first()
        following = conn.execute(
            episodes.where(same, incidents.c.starts_at > alert.startsAt)
            .order_by(incidents.c.starts_at)
            .limit(1)
        ).first()
        if previous is not None:
            conn.execute(
                incidents.update().where(incidents.c.id == new_id).values(previous_id=previous.id)
            )
            # An end after this start can only have been inferred from a later episode
            # that arrived first (a real end comes before the next start): this is nearer.
            ended = utc(previous.resolved_at)
            if ended is None or ended > alert.startsAt:
                self._infer_end(conn, previous.id, alert.startsAt, new_id)
        if following is not None:
            conn.execute(
                incidents.update().where(incidents.c.id == following.id).values(previous_id=new_id)
            )
            self._infer_end(conn, new_id, utc(following.starts_at), following.id)  # type: ignore[arg-type]
        return int(new_id)

    def _infer_end(self, conn: Connection, incident_id: int, at: dt.datetime, next_id: int) -> None:
        """End an episode whose resolved notification never came at the next one's start."""
        # Alertmanager gives an alert a new startsAt only after it resolved: the
        # resolved notification was lost (API down, retries exhausted) or is late; a
        # late one still corrects the time (see _resolve).
        conn.execute(incidents.update().where(incidents.c.id == incident_id).values(resolved_at=at))
        self._event(
            conn,
            incident_id,
            at,
            "resolved",
            ALERTMANAGER,
            f"no resolved notification (yet); ended when the alert fired again "
            f"(incident {next_id})",
        )

    def _resolve(
        self, conn: Connection, fingerprint: str, starts_at: dt.datetime, ends_at: dt.datetime
    ) -> int | None:
        # An end inferred from the next episode is always at or after the real end: the
        # real one, arriving late, replaces it; an equal one is a re-send.
        done = conn.execute(
            incidents.update()
            .where(
                incidents.c.fingerprint == fingerprint,
                incidents.c.starts_at == starts_at,
                sa.or_(incidents.c.resolved_at.is_(None), incidents.c.resolved_at > ends_at),
            )
            .values(resolved_at=ends_at)
            .returning(incidents.c.id)
        ).scalar_one_or_none()
        if done is None:
            return None
        self._event(conn, done, ends_at, "resolved", ALERTMANAGER, None)
        return int(done)

    @staticmethod
    def _event(
        conn: Connection, incident_id: int, at: dt.datetime, kind: str, actor: str, text: str | None
    ) -> None:
        conn.execute(
            incident_events.insert().values(
                incident_id=incident_id, at=at, kind=kind, actor=actor, text=text
            )
        )

    # --- duty actions -------------------------------------------------------------------

    def _row(self, conn: Connection, incident_id: int, regions: frozenset[str] | None) -> Any:
        row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
        if row is None or (regions is not None and row.region not in regions):
            # Outside the caller's regions reads as absent: ids say nothing about others.
            raise DutyError(404, f"no incident {incident_id}")
        return row

    def acknowledge(
        self,
        incident_id: int,
        by: str,
        note: str | None = None,
        regions: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """Mark the incident acknowledged by ``by`` now (409 when it already is)."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._row(conn, incident_id, regions)
            if row.acknowledged_at is not None:
                raise DutyError(
                    409,
                    f"incident {incident_id} was acknowledged by {row.acknowledged_by} at "
                    f"{utc(row.acknowledged_at):%Y-%m-%dT%H:%M:%SZ}",
                )
            conn.execute(
                incidents.update()
                .where(incidents.c.id == incident_id)
                .values(acknowledged_at=now, acknowledged_by=by)
            )
            self._event(conn, incident_id, now, "acknowledged", by, note)
        return self.get(incident_id)

    def note(
        self, incident_id: int, by: str, text: str, regions: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """Add a note to the incident's timeline."""
        now = self.clock()
        with self.engine.begin() as conn:
            self._row(conn, incident_id, regions)
            self._event(conn, incident_id, now, "note", by, text)
        return self.get(incident_id)

    def close(
        self,
        incident_id: int,
        by: str,
        cause: str,
        note: str | None = None,
        regions: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """Close the incident under a cause category (409 when already closed)."""
        if cause not in CAUSES:
            raise DutyError(400, f"unknown cause {cause!r}; use one of {', '.join(CAUSES)}")
        now = self.clock()
        with self.engine.begin() as conn:
            row = self._row(conn, incident_id, regions)
            if row.closed_at is not None:
                raise DutyError(
                    409, f"incident {incident_id} was closed by {row.closed_by} ({row.cause})"
                )
            conn.execute(
                incidents.update()
                .where(incidents.c.id == incident_id)
                .values(closed_at=now, closed_by=by, cause=cause)
            )
            self._event(
                conn,
                incident_id,
                now,
                "closed",
                by,
                f"cause: {cause}" + (f"; {note}" if note else ""),
            )
        return self.get(incident_id)

    def handover(self, by: str, note: str, regions: frozenset[str] | None = None) -> dict[str, Any]:
        """Hand the shift over: record the note with every open incident the caller sees."""
        now = self.clock()
        with self.engine.begin() as conn:
            open_rows = conn.execute(
                _scoped(
                    sa.select(incidents)
                    .where(_status_clause("open"))
                    .order_by(incidents.c.starts_at),
                    regions,
                )
            ).all()
            ids = [int(r.id) for r in open_rows]
            handover_id = conn.execute(
                handovers.insert()
                .values(at=now, by=by, note=note, open_ids=ids)
                .returning(handovers.c.id)
            ).scalar_one()
            for incident_id in ids:
                self._event(conn, incident_id, now, "handover", by, note)
        return {
            "id": int(handover_id),
            "at": now,
            "by": by,
            "note": note,
            "open": [_incident(r) for r in open_rows],
        }

    # --- queries ------------------------------------------------------------------------

    def get(self, incident_id: int, regions: frozenset[str] | None = None) -> dict[str, Any]:
        """The incident with its timeline (oldest first) and the episodes before and after."""
        with self.engine.connect() as conn:
            row = self._row(conn, incident_id, regions)
            timeline = conn.execute(
                sa.select(incident_events)
                .where(incident_events.c.incident_id == incident_id)
                .order_by(incident_events.c.at, incident_events.c.id)
            ).all()
            following = conn.execute(
                sa.select(incidents.c.id).where(incidents.c.previous_id == incident_id)
            ).scalar_one_or_none()
        out = _incident(row)
        out["next_id"] = following
        out["timeline"] = [
            {"at": utc(e.at), "kind": e.kind, "by": e.actor, "text": e.text} for e in timeline
        ]
        return out

    def search(
        self,
        *,
        status: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        region: Sequence[str] = (),
        facility: Sequence[str] = (),
        regions: frozenset[str] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Incidents open at some time in [start, end), newest first, with the total count."""
        if status is not None and status not in STATUSES:
            raise DutyError(400, f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        start, end = utc(start), utc(end)
        query = sa.select(incidents)
        if status is not None:
            query = query.where(_status_clause(status))
        if end is not None:
            query = query.where(incidents.c.starts_at < end)
        if start is not None:
            query = query.where(sa.or_(_ended().is_(None), _ended() >= start))
        if region:
            query = query.where(incidents.c.region.in_(list(region)))
        if facility:
            query = query.where(incidents.c.facility.in_(list(facility)))
        query = _scoped(query, regions)
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(query.subquery())
            ).scalar_one()
            rows = conn.execute(
                query.order_by(incidents.c.starts_at.desc(), incidents.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return [_incident(r) for r in rows], int(total)

    def overlapping(
        self, start: dt.datetime, end: dt.datetime, regions: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """Every incident that was open, or acted on, at some time in [start, end)."""
        start, end = utc(start), utc(end)  # type: ignore[assignment]
        query = _scoped(
            sa.select(incidents).where(
                incidents.c.starts_at < end,
                sa.or_(
                    _ended().is_(None),
                    _ended() >= start,
                    incidents.c.acknowledged_at >= start,
                ),
            ),
            regions,
        )
        with self.engine.connect() as conn:
            return [_incident(r) for r in conn.execute(query.order_by(incidents.c.id)).all()]

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(open incidents by severity, incidents ever opened by severity), for /metrics."""
        sev = sa.func.coalesce(incidents.c.severity, "none")
        with self.engine.connect() as conn:
            opened = conn.execute(sa.select(sev, sa.func.count()).group_by(sev)).all()
            still_open = conn.execute(
                sa.select(sev, sa.func.count()).where(_status_clause("open")).group_by(sev)
            ).all()
        return ({str(s): int(n) for s, n in still_open}, {str(s): int(n) for s, n in opened})


def _ended() -> Any:
    """When the incident stopped being open: the earlier of resolution and closing."""
    return sa.case(
        (
            sa.and_(
                incidents.c.closed_at.is_not(None),
                sa.or_(
                    incidents.c.resolved_at.is_(None),
                    incidents.c.closed_at < incidents.c.resolved_at,
                ),
            ),
            incidents.c.closed_at,
        ),
        else_=incidents.c.resolved_at,
    )


def _status_clause(status: str) -> Any:
    is_open = sa.and_(incidents.c.resolved_at.is_(None), incidents.c.closed_at.is_(None))
    return {
        "open": is_open,
        "acknowledged": sa.and_(is_open, incidents.c.acknowledged_at.is_not(None)),
        "unacknowledged": sa.and_(is_open, incidents.c.acknowledged_at.is_(None)),
        "resolved": sa.and_(incidents.c.resolved_at.is_not(None), incidents.c.closed_at.is_(None)),
        "closed": incidents.c.closed_at.is_not(None),
    }[status]


def _scoped(query: Any, regions: frozenset[str] | None) -> Any:
    if regions is None:
        return query
    return query.where(incidents.c.region.in_(sorted(regions)))


def status_of(row: Mapping[str, Any]) -> str:
    """closed, resolved, acknowledged (open and seen) or open."""
    if row["closed_at"] is not None:
        return "closed"
    if row["resolved_at"] is not None:
        return "resolved"
    return "acknowledged" if row["acknowledged_at"] is not None else "open"


def _incident(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    for key in ("starts_at", "resolved_at", "acknowledged_at", "closed_at", "recorded_at"):
        out[key] = utc(out[key])
    out["status"] = status_of(out)
    return out


_REVISION = re.compile(r"^(down_)?revision\s*=\s*(?:[\"']([^\"']*)[\"']|None)\s*$", re.MULTILINE)


def head_revision() -> str | None:
    """The newest migration's revision (the one no other revises); None when unsure."""
    revised: set[str] = set()
    named: set[str] = set()
    for script in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        for down, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            (revised if down else named).add(value)
    heads = named - revised
    # Several heads (or none): not read here, Alembic decides.
    return heads.pop() if len(heads) == 1 else None


def open_register(url: str, *, upgrade: bool = True, clock: Clock = _now) -> IncidentRegister:
    """The register at ``url``, its schema migrated to the newest revision unless told not to."""
    register = IncidentRegister(make_engine(url), clock)
    if upgrade:
        register.upgrade()
    return register


def episodes(alerts: Iterable[WebhookAlert]) -> list[Episode]:
    """The (fingerprint, startsAt) of alerts."""
    return [(a.fingerprint, a.startsAt) for a in alerts]
