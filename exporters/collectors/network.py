"""Network gauges: items in the network, overdue items, stalled items."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors import ViewSource, gauge, gauge_rows, labels_for, number
from exporters.view import IN_NETWORK_KPI, OVERDUE_KPI, STALLED_KPI


class NetworkCollector(Collector):
    """Unfinished, overdue and stalled items; a label set vanishes with its last item."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """In-network, overdue and stalled gauges."""
        view = self._view()
        in_network = gauge(cat.ITEMS_IN_NETWORK)
        overdue = gauge(cat.ITEMS_OVERDUE)
        stalled = gauge(cat.ITEMS_STALLED)
        for row in gauge_rows(view.network, cat.ITEMS_IN_NETWORK.labels):
            in_network.add_metric(
                labels_for(cat.ITEMS_IN_NETWORK, row), number(row[IN_NETWORK_KPI])
            )
            overdue.add_metric(labels_for(cat.ITEMS_OVERDUE, row), number(row[OVERDUE_KPI]))
        for row in gauge_rows(view.stalled, cat.ITEMS_STALLED.labels):
            stalled.add_metric(labels_for(cat.ITEMS_STALLED, row), number(row[STALLED_KPI]))
        yield in_network
        yield overdue
        yield stalled
