"""Complaint metrics: opened (counter), resolution time (histogram), open and overdue (gauges)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors import (
    ViewSource,
    counter_family,
    gauge,
    gauge_rows,
    histogram_family,
    labels_for,
    number,
)
from exporters.view import OPEN_COMPLAINTS_KPI, OVERDUE_COMPLAINTS_KPI


class ComplaintsCollector(Collector):
    """Complaint counters (kept across restarts) and as-of gauges (a region vanishes when none is open)."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """Complaints opened, resolution time, open and overdue complaints."""
        view = self._view()
        yield counter_family(cat.COMPLAINTS, view.counters)
        yield histogram_family(cat.COMPLAINT_RESOLUTION, view.counters)
        opened = gauge(cat.COMPLAINTS_OPEN)
        overdue = gauge(cat.COMPLAINTS_OVERDUE)
        for row in gauge_rows(view.complaints, cat.COMPLAINTS_OPEN.labels):
            opened.add_metric(
                labels_for(cat.COMPLAINTS_OPEN, row), number(row[OPEN_COMPLAINTS_KPI])
            )
            overdue.add_metric(
                labels_for(cat.COMPLAINTS_OVERDUE, row), number(row[OVERDUE_COMPLAINTS_KPI])
            )
        yield opened
        yield overdue
