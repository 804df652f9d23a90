"""Dashboard uids (stable: links, provisioning and bookmarks use them)."""

from __future__ import annotations

from typing import Final

OVERVIEW: Final = "postal-overview"
FACILITY: Final = "postal-facility-backlog"
TIMELINESS: Final = "postal-timeliness"
COMPLAINTS: Final = "postal-complaints"
EXPORTER: Final = "postal-exporter-health"
NETWORK_FLOW: Final = "postal-network-flow"
