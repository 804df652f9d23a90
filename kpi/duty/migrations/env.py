"""Alembic environment: runs on the connection ``IncidentRegister.upgrade`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from kpi.duty.schema import metadata

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via IncidentRegister.upgrade
    raise RuntimeError("run the duty migrations through kpi.duty.IncidentRegister.upgrade")
# SQLite cannot ALTER most things in place: batch mode copies the table when needed.
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
