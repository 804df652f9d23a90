"""Facility backlog gauges: waiting items by age band, oldest waiting item, thresholds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors import ViewSource, gauge, gauge_rows, labels_for, number
from exporters.view import BAND_KPIS, OLDEST_KPI, THRESHOLD_KPI

_KEYS: Final = ("facility", "facility_type", "region")
_SECONDS_PER_HOUR: Final = 3600.0


class BacklogCollector(Collector):
    """Backlog per facility: listed facilities always (0 when idle), others while items wait."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """Items per age band, oldest age (s), thresholds (only where configured)."""
        items = gauge(cat.BACKLOG_ITEMS)
        oldest = gauge(cat.BACKLOG_OLDEST_AGE)
        threshold = gauge(cat.BACKLOG_THRESHOLD)
        for row in gauge_rows(self._view().backlog, _KEYS):
            for band, kpi in BAND_KPIS.items():
                labels = labels_for(cat.BACKLOG_ITEMS, {**row, "age_band": band})
                items.add_metric(labels, number(row[kpi]))
            age = number(row[OLDEST_KPI]) * _SECONDS_PER_HOUR
            oldest.add_metric(labels_for(cat.BACKLOG_OLDEST_AGE, row), age)
            if row[THRESHOLD_KPI] is not None:
                threshold.add_metric(
                    labels_for(cat.BACKLOG_THRESHOLD, row), number(row[THRESHOLD_KPI])
                )
        yield items
        yield oldest
        yield threshold
