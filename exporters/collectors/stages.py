"""Stage histograms: first mile, dwell, legs, last mile, and their revisions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors import ViewSource, histogram_family


class StageCollector(Collector):
    """The stage histograms (values kept across restarts)."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """One family per catalog metric."""
        store = self._view().counters
        for spec in cat.STAGE_HISTOGRAMS:
            yield histogram_family(spec, store)
        # Every stage's series exists from the start (at 0): revisions are rare.
        spec = cat.STAGE_REVISIONS
        family = cast(CounterMetricFamily, spec.family())
        counts = dict(store.series(spec))
        for stage in spec.values["stage"]:
            family.add_metric([stage], float(counts.get((stage,), 0)))
        yield family
