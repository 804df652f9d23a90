"""Rendering the exposition once per refresh, and picking the cached variant for a scrape.

prometheus_client renders the text (0.0.4) and OpenMetrics formats from a registry
of our collectors; both are gzipped once, so a scrape only copies bytes.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporters.bodies import OPENMETRICS_TYPE, TEXT_TYPE, Exposition, negotiate
from exporters.collectors import ViewSource
from exporters.collectors.backlog import BacklogCollector
from exporters.collectors.complaints import ComplaintsCollector
from exporters.collectors.counters import FlowCountersCollector
from exporters.collectors.network import NetworkCollector
from exporters.collectors.self_monitoring import SelfMonitoringCollector
from exporters.collectors.stages import StageCollector

#: Re-exported: what the renderer produces and how a scrape picks a variant of it.
__all__ = [
    "OPENMETRICS_TYPE",
    "TEXT_TYPE",
    "Exposition",
    "collectors",
    "negotiate",
    "registry_of",
    "render",
]

_GZIP_LEVEL: Final = 6
# prometheus_client's OpenMetrics writer is untyped; pin the signature we rely on.
_openmetrics_latest: Final[Callable[[CollectorRegistry], bytes]] = openmetrics.generate_latest


def collectors(view: ViewSource) -> list[Collector]:
    """Every collector of the exporter, reading ``view``."""
    return [
        FlowCountersCollector(view),
        StageCollector(view),
        ComplaintsCollector(view),
        BacklogCollector(view),
        NetworkCollector(view),
        SelfMonitoringCollector(view),
    ]


def registry_of(items: Iterable[Collector]) -> CollectorRegistry:
    """A fresh registry holding ``items`` only (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in items:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> Exposition:
    """Render both formats and their gzip once."""
    text = generate_latest(registry)
    om = _openmetrics_latest(registry)
    return Exposition(
        text,
        gzip.compress(text, _GZIP_LEVEL),
        om,
        gzip.compress(om, _GZIP_LEVEL),
        time.time(),
    )
