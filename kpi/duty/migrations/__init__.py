"""Alembic migrations of the incident register (run by ``IncidentRegister.upgrade``)."""
