"""Delivery-flow counters: accepted, delivered, returned, attempts, failures, transit time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors import ViewSource, counter_family, histogram_family


class FlowCountersCollector(Collector):
    """The item-flow counters and the transit-time histogram (values kept across restarts)."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """One family per catalog metric."""
        store = self._view().counters
        for spec in (
            cat.ITEMS_ACCEPTED,
            cat.ITEMS_DELIVERED,
            cat.ITEMS_RETURNED,
            cat.DELIVERY_ATTEMPTS,
            cat.DELIVERY_FAILURES,
        ):
            yield counter_family(spec, store)
        yield histogram_family(cat.TRANSIT_TIME, store)
