"""The duty desk: the incident register (Alertmanager webhook -> database), duty actions, reports.

A face of its own: it knows SQL and Alertmanager's payload, not HTTP. The API's
incidents router and ``kpi duty-report`` call it (``kpi.duty.register``). Kept free of
imports so the metric catalog can read ``kpi.duty.metrics`` without SQLAlchemy.
"""
