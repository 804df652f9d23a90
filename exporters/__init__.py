"""Prometheus side: metric catalog and collectors that translate KPI frames."""
