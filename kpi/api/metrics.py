"""The API's own Prometheus metrics (``postal_api_*``) on a registry of its own."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kpi.duty import metrics as duty_metrics

#: Every metric the API exposes: (name, type, help). Names are spelled here only.
METRIC_CATALOG: Final = (
    ("postal_api_requests_total", "counter", "HTTP requests by route template, method and status."),
    (
        "postal_api_request_duration_seconds",
        "histogram",
        "HTTP request latency by route template and method.",
    ),
    (
        "postal_api_cache_requests_total",
        "counter",
        "Query answers served from the cache (hit) or computed (miss).",
    ),
    ("postal_api_data_loads_total", "counter", "Data folder loads by outcome (ok, error)."),
    (
        "postal_api_data_load_duration_seconds",
        "gauge",
        "Duration of the last successful data folder load.",
    ),
    (
        "postal_api_data_loaded_timestamp_seconds",
        "gauge",
        "Unix time of the last successful data folder load.",
    ),
    ("postal_api_data_items", "gauge", "Items in the default snapshot's lifecycle table."),
    (duty_metrics.INCIDENTS_OPEN, "gauge", duty_metrics.INCIDENTS_OPEN_HELP),
    (duty_metrics.INCIDENTS_OPENED + "_total", "counter", duty_metrics.INCIDENTS_OPENED_HELP),
)
_HELP: Final = {name: text for name, _, text in METRIC_CATALOG}
#: Latency buckets (seconds): cached answers take milliseconds, cold ones up to seconds.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
UNMATCHED: Final = "unmatched"
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class ApiMetrics:
    """The metric objects, registered on ``registry``."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    cache: Counter
    loads: Counter
    load_seconds: Gauge
    loaded_at: Gauge
    items: Gauge

    @classmethod
    def create(cls) -> ApiMetrics:
        """Fresh metrics on a new registry (one per app, so tests never collide)."""
        reg = CollectorRegistry(auto_describe=True)

        def name(n: str) -> str:
            # prometheus_client appends _total itself for counters.
            return n.removesuffix("_total")

        return cls(
            registry=reg,
            requests=Counter(
                name("postal_api_requests_total"),
                _HELP["postal_api_requests_total"],
                ("route", "method", "status"),
                registry=reg,
            ),
            latency=Histogram(
                "postal_api_request_duration_seconds",
                _HELP["postal_api_request_duration_seconds"],
                ("route", "method"),
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),
            cache=Counter(
                name("postal_api_cache_requests_total"),
                _HELP["postal_api_cache_requests_total"],
                ("result",),
                registry=reg,
            ),
            loads=Counter(
                name("postal_api_data_loads_total"),
                _HELP["postal_api_data_loads_total"],
                ("outcome",),
                registry=reg,
            ),
            load_seconds=Gauge(
                "postal_api_data_load_duration_seconds",
                _HELP["postal_api_data_load_duration_seconds"],
                registry=reg,
            ),
            loaded_at=Gauge(
                "postal_api_data_loaded_timestamp_seconds",
                _HELP["postal_api_data_loaded_timestamp_seconds"],
                registry=reg,
            ),
            items=Gauge("postal_api_data_items", _HELP["postal_api_data_items"], registry=reg),
        )


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.prefixes = prefixes

    def template(self, scope: Scope) -> str:
        """The matched route's path template, with the router prefix it was mounted under."""
        route_path = getattr(scope.get("route"), "path", None)
        if not route_path:
            return UNMATCHED
        path = str(scope.get("path", ""))
        for prefix in self.prefixes:
            # Routers included with a prefix may report their path without it.
            if path.startswith(prefix + "/") and not route_path.startswith(prefix + "/"):
                return prefix + str(route_path)
        return str(route_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then record status and latency under the matched route."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # Raw paths would put item ids in labels; unmatched ones share one label,
            # and so do made-up methods: label values stay a small fixed set.
            template = self.template(scope)
            method = str(scope.get("method", ""))
            method = method if method in METHODS else "other"
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - start)
