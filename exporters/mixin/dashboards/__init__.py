"""Grafana dashboards as code on grafana-foundation-sdk: one module per dashboard.

``defaults`` holds the house style (colours by meaning, variables, links, annotations);
each dashboard module has ``build(config) -> dict``. A new dashboard is one more module
here and one more entry in ``BUILDERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from exporters.mixin.config import MixinConfig
from exporters.mixin.dashboards import (
    complaints,
    exporter_health,
    facility,
    network_flow,
    overview,
    timeliness,
)
from exporters.mixin.dashboards.uids import (
    COMPLAINTS,
    EXPORTER,
    FACILITY,
    NETWORK_FLOW,
    OVERVIEW,
    TIMELINESS,
)

#: Every dashboard by uid, in menu order.
BUILDERS: Final[dict[str, Callable[[MixinConfig], dict[str, Any]]]] = {
    OVERVIEW: overview.build,
    TIMELINESS: timeliness.build,
    FACILITY: facility.build,
    NETWORK_FLOW: network_flow.build,
    COMPLAINTS: complaints.build,
    EXPORTER: exporter_health.build,
}

# Kept for callers of the former single-module builder.
UID_OVERVIEW: Final = OVERVIEW
UID_FACILITY: Final = FACILITY
UID_TIMELINESS: Final = TIMELINESS
UID_COMPLAINTS: Final = COMPLAINTS
UID_EXPORTER: Final = EXPORTER


def all_dashboards(config: MixinConfig) -> list[dict[str, Any]]:
    """Every dashboard's JSON."""
    return [build(config) for build in BUILDERS.values()]
