"""Postal service-quality KPIs: contract, ingestion, lifecycle, KPI functions, API, CLI."""
