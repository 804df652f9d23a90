"""The rendered exposition and the choice of its variant for a scrape: what a server needs.

Kept apart from ``exporters.exposition`` (which renders, and so imports the collectors
and polars) so that the serving process starts in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, gzip_accepted
from prometheus_client.openmetrics import exposition as openmetrics

TEXT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_TYPE: Final[str] = openmetrics.CONTENT_TYPE_LATEST


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


def negotiate(accept: str, accept_encoding: str) -> tuple[bool, bool]:
    """(OpenMetrics?, gzip?) for a request's Accept and Accept-Encoding headers.

    prometheus_client's own negotiation (``choose_encoder``, ``gzip_accepted``), as its
    ``MetricsHandler`` does; the bodies were rendered beforehand, so only its choice is used.
    """
    _, content_type = choose_encoder(accept)
    return content_type.startswith("application/openmetrics-text"), gzip_accepted(accept_encoding)
