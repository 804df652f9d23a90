"""The duty desk: the incident register (Alertmanager webhook -> database), duty actions, reports.

A face of its own: it knows SQL and Alertmanager's payload, not HTTP. The API's
incidents router and ``kpi duty-report`` call it.
"""

from kpi.duty.register import IncidentRegister, open_register

__all__ = ["IncidentRegister", "open_register"]
