"""Stage histograms: first mile, dwell, legs, last mile, and their revisions."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors import ViewSource, counter_family, histogram_family


class StageCollector(Collector):
    """The stage histograms (values kept across restarts)."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """One family per catalog metric."""
        store = self._view().counters
        for spec in cat.STAGE_HISTOGRAMS:
            yield histogram_family(spec, store)
        yield counter_family(cat.STAGE_REVISIONS, store)
