"""Rendering the exposition once per refresh, and picking the cached variant for a scrape.

prometheus_client renders the text (0.0.4) and OpenMetrics formats from a registry
of our collectors; both are gzipped once, so a scrape only copies bytes.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    choose_encoder,
    generate_latest,
    gzip_accepted,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporters.collectors import ViewSource
from exporters.collectors.backlog import BacklogCollector
from exporters.collectors.complaints import ComplaintsCollector
from exporters.collectors.counters import FlowCountersCollector
from exporters.collectors.network import NetworkCollector
from exporters.collectors.self_monitoring import SelfMonitoringCollector
from exporters.collectors.stages import StageCollector

TEXT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_TYPE: Final[str] = openmetrics.CONTENT_TYPE_LATEST
_GZIP_LEVEL: Final = 6
# prometheus_client's OpenMetrics writer is untyped; pin the signature we rely on.
_openmetrics_latest: Final[Callable[[CollectorRegistry], bytes]] = openmetrics.generate_latest


@dataclass(frozen=True)
class Exposition:
    """The four cached bodies of one refresh."""

    text: bytes
    text_gzip: bytes
    openmetrics: bytes
    openmetrics_gzip: bytes
    rendered_at: float

    def body(self, use_openmetrics: bool, use_gzip: bool) -> tuple[bytes, str]:
        """(body, content type) of one variant."""
        if use_openmetrics:
            return (self.openmetrics_gzip if use_gzip else self.openmetrics), OPENMETRICS_TYPE
        return (self.text_gzip if use_gzip else self.text), TEXT_TYPE


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


def negotiate(accept: str, accept_encoding: str) -> tuple[bool, bool]:
    """(OpenMetrics?, gzip?) for a request's Accept and Accept-Encoding headers.

    prometheus_client's own negotiation (``choose_encoder``, ``gzip_accepted``), as its
    ``MetricsHandler`` does; the bodies were rendered beforehand, so only its choice is used.
    """
    _, content_type = choose_encoder(accept)
    return content_type.startswith("application/openmetrics-text"), gzip_accepted(accept_encoding)
