"""The duty desk: the incident register (Alertmanager webhook -> database), duty actions, reports.

A face of its own: it knows SQL and Alertmanager's payload, not HTTP. The API's
incidents router and ``kpi duty-report`` call it (``kpi.duty.register``); the router's
module names its causes, statuses and error from ``kpi.duty.terms``; the register
(SQLAlchemy) is imported when the API opens the duty desk. Kept free of imports so the metric
catalog can read ``kpi.duty.metrics`` without SQLAlchemy.
"""
