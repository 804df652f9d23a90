"""The incident register's tables (SQLAlchemy Core), shared by the code and the migrations."""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

#: Constraint names are fixed so migrations can refer to them on every backend.
metadata: Final = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = DateTime(timezone=True)

#: One row per alert fingerprint and firing episode (``starts_at``). The unique
#: constraint, not a lock in the process, makes concurrent re-sends of one episode
#: land once, whichever API process receives them.
incidents: Final = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False),
    Column("starts_at", TS, nullable=False),
    Column("previous_id", Integer, ForeignKey("incidents.id"), nullable=True),
    Column("alertname", String(200), nullable=False),
    Column("severity", String(32), nullable=True),
    Column("facility", String(100), nullable=True),
    Column("region", String(100), nullable=True),
    Column("product", String(100), nullable=True),
    Column("summary", Text, nullable=True),
    Column("description", Text, nullable=True),
    Column("runbook_url", Text, nullable=True),
    Column("labels", JSON, nullable=False),
    Column("kpis", JSON, nullable=True),
    Column("resolved_at", TS, nullable=True),
    Column("acknowledged_at", TS, nullable=True),
    Column("acknowledged_by", String(200), nullable=True),
    Column("closed_at", TS, nullable=True),
    Column("closed_by", String(200), nullable=True),
    Column("cause", String(64), nullable=True),
    Column("recorded_at", TS, nullable=False),
    UniqueConstraint("fingerprint", "starts_at", name="uq_incidents_episode"),
    Index("ix_incidents_starts_at", "starts_at"),
)

#: What happened to an incident, in order: opened, resolved, acknowledged, note, handover, closed.
incident_events: Final = Table(
    "incident_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("at", TS, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("text", Text, nullable=True),
    Index("ix_incident_events_incident_id", "incident_id"),
)

#: Shift handovers: who handed over, the note, and the incidents open at that moment.
handovers: Final = Table(
    "handovers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("by", String(200), nullable=False),
    Column("note", Text, nullable=False),
    Column("open_ids", JSON, nullable=False),
)
