"""The exporter's own health: rows ingested and rejected, late events, lag, batches, checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors import ViewSource, gauge, histogram_family
from exporters.ingest import REJECT_REASONS


class SelfMonitoringCollector(Collector):
    """Self-monitoring metrics; every reject reason is exported from the start (at 0)."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """Ingested/rejected/late counters, batch durations and the exporter gauges."""
        view = self._view()
        store = view.counters
        ingested = cast(CounterMetricFamily, cat.EXPORTER_EVENTS_INGESTED.family())
        ingested.add_metric([], float(store.value(cat.EXPORTER_EVENTS_INGESTED)))
        yield ingested
        rejected = cast(CounterMetricFamily, cat.EXPORTER_EVENTS_REJECTED.family())
        reasons = {r: 0 for r in REJECT_REASONS}
        for (reason,), value in store.series(cat.EXPORTER_EVENTS_REJECTED):
            reasons[reason] = value
        for reason in sorted(reasons):
            rejected.add_metric([reason], float(reasons[reason]))
        yield rejected
        late = cast(CounterMetricFamily, cat.EXPORTER_LATE_EVENTS.family())
        # Process-local (like the batch durations): a restart re-reads what it lost as
        # one larger set, in which fewer events are late.
        late.add_metric([], float(view.local.value(cat.EXPORTER_LATE_EVENTS)))
        yield late
        yield histogram_family(cat.EXPORTER_BATCH_DURATION, view.local)
        stats = view.stats
        for spec, sample in (
            (cat.EXPORTER_LAST_EVENT_TIMESTAMP, stats.last_event_timestamp),
            (cat.EXPORTER_ITEMS_TRACKED, float(stats.items_tracked)),
            (cat.EXPORTER_AWAITING_ACCEPTANCE, float(stats.deliveries_awaiting_acceptance)),
            (cat.EXPORTER_LAST_CHECKPOINT_TIMESTAMP, stats.last_checkpoint_timestamp),
        ):
            family = gauge(spec)
            family.add_metric([], sample)
            yield family
        valid = gauge(cat.EXPORTER_CONFIG_VALID)
        for file, ok in stats.config_valid:
            valid.add_metric([file], 1.0 if ok else 0.0)
        yield valid
        build = gauge(cat.EXPORTER_BUILD_INFO)
        build.add_metric([stats.version], 1.0)
        yield build
