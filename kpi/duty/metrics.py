"""The duty desk's metrics, read from the register at scrape time (right after any restart)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from kpi.duty.register import IncidentRegister

log = logging.getLogger("kpi.duty")

#: Metric names (the exporter catalog and the API's catalog take them from here).
INCIDENTS_OPEN: Final = "postal_incidents_open"
INCIDENTS_OPEN_HELP: Final = "Incidents on record that are open (not resolved, not closed)."
#: Counter base name; exposed as ``postal_incidents_opened_total``.
INCIDENTS_OPENED: Final = "postal_incidents_opened"
INCIDENTS_OPENED_HELP: Final = "Incidents opened since the register was created."
#: Severities always exposed (zero when none), so dashboards never see a gap.
SEVERITIES: Final = ("critical", "warning", "info")


class IncidentCollector(Collector):
    """Open incidents and incidents ever opened, by severity, counted in the database."""

    def __init__(self, register: IncidentRegister) -> None:
        self.register = register

    def collect(self) -> Iterator[Metric]:
        """Both families; nothing (and a log line) when the database does not answer."""
        try:
            still_open, opened = self.register.counts()
        except Exception:  # a scrape must not fail because the database is away
            log.exception("counting incidents for /metrics failed")
            return
        gauge = GaugeMetricFamily(INCIDENTS_OPEN, INCIDENTS_OPEN_HELP, labels=["severity"])
        counter = CounterMetricFamily(INCIDENTS_OPENED, INCIDENTS_OPENED_HELP, labels=["severity"])
        for sev in sorted(set(SEVERITIES) | set(opened)):
            gauge.add_metric([sev], still_open.get(sev, 0))
            counter.add_metric([sev], opened.get(sev, 0))
        yield gauge
        yield counter

    def describe(self) -> Iterator[Metric]:
        """No describe-time database access."""
        return iter(())
