"""The incident register: incidents, their timeline, shift handovers.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables (spelled out: later schema changes get migrations of their own)."""
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column(
            "previous_id",
            sa.Integer,
            sa.ForeignKey("incidents.id", name="fk_incidents_previous_id"),
            nullable=True,
        ),
        sa.Column("alertname", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(32), nullable=True),
        sa.Column("facility", sa.String(100), nullable=True),
        sa.Column("region", sa.String(100), nullable=True),
        sa.Column("product", sa.String(100), nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("runbook_url", sa.Text, nullable=True),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("kpis", sa.JSON, nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("closed_by", sa.String(200), nullable=True),
        sa.Column("cause", sa.String(64), nullable=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
        sa.UniqueConstraint("fingerprint", "starts_at", name="uq_incidents_episode"),
    )
    op.create_index("ix_incidents_starts_at", "incidents", ["starts_at"])
    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "incident_id",
            sa.Integer,
            sa.ForeignKey("incidents.id", name="fk_incident_events_incident_id"),
            nullable=False,
        ),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_incident_events"),
    )
    op.create_index("ix_incident_events_incident_id", "incident_events", ["incident_id"])
    op.create_table(
        "handovers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("open_ids", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_handovers"),
    )


def downgrade() -> None:
    """Drop the register."""
    op.drop_table("handovers")
    op.drop_index("ix_incident_events_incident_id", "incident_events")
    op.drop_table("incident_events")
    op.drop_index("ix_incidents_starts_at", "incidents")
    op.drop_table("incidents")
