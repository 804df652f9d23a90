"""HTTP serving: cached ``/metrics`` bytes, ``/healthz`` and ``/readyz``.

A ``ThreadingHTTPServer`` answers every request from memory; nothing is computed
while a scrape waits, which keeps latency flat while batches and refreshes run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporters.exposition import Exposition, negotiate

log = logging.getLogger(__name__)

INDEX = b"""<html><head><title>Postal exporter</title></head><body>
<h1>Postal service-quality exporter</h1>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a> &middot;
<a href="/readyz">/readyz</a></p></body></html>
"""


@dataclass
class Endpoints:
    """What the server reads: the current exposition, readiness and liveness."""

    exposition: Callable[[], Exposition | None]
    ready: Callable[[], bool]
    healthy: Callable[[], bool]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes; with Nagle the body waits for the client's
    # delayed ACK (~40 ms on Linux).
    disable_nagle_algorithm = True
    server: MetricsHTTPServer

    def _send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        ep = self.server.endpoints
        if path == "/metrics":
            exposition = ep.exposition() if ep.ready() else None
            if exposition is None:
                self._send(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    b"not ready: catching up with the data folder\n",
                    "text/plain; charset=utf-8",
                    {"Retry-After": "5"},
                )
                return
            use_om, use_gzip = negotiate(
                self.headers.get("Accept"), self.headers.get("Accept-Encoding")
            )
            body, content_type = exposition.body(use_om, use_gzip)
            extra = {"Vary": "Accept, Accept-Encoding"}
            if use_gzip:
                extra["Content-Encoding"] = "gzip"
            self._send(HTTPStatus.OK, body, content_type, extra)
        elif path == "/healthz":
            ok = ep.healthy()
            status = HTTPStatus.OK if ok else HTTPStatus.INTERNAL_SERVER_ERROR
            self._send(status, b"ok\n" if ok else b"ingest loop stopped\n", "text/plain")
        elif path == "/readyz":
            ok = ep.ready()
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, b"ready\n" if ok else b"catching up\n", "text/plain")
        elif path == "/":
            self._send(HTTPStatus.OK, INDEX, "text/html; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def do_HEAD(self) -> None:
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (scrapes every few seconds would flood the log)."""


class MetricsHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server bound to the exporter's endpoints."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoints: Endpoints) -> None:
        super().__init__(address, _Handler)
        self.endpoints = endpoints
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
