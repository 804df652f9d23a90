"""HTTP serving: cached ``/metrics`` bytes, ``/healthz`` and ``/readyz``.

Every request is answered from memory; nothing is computed while a scrape waits,
which keeps latency flat while batches and refreshes run. Connections are served by
a fixed pool of ``WORKERS`` threads (no thread started per connection), and the
listen backlog is ``BACKLOG``: with the socketserver default of 5, twenty scrapers
connecting at once overflow the kernel's queue and the dropped SYNs are retried
after 1 s, 3 s, 7 s.

``/readyz`` is 503 before the first catch-up and while something stops the exporter
from reading all of its input (unreadable files or folders, no valid service
standard, a batch that cannot be applied for a while), with the reasons in the body;
degraded but counting (a refused reference file, the rejects file or checkpoints
failing on a full disk) it stays 200 and lists the notes.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from exporters.exposition import Exposition, negotiate

log = logging.getLogger(__name__)

#: Listen queue length (the kernel caps it at net.core.somaxconn).
BACKLOG: Final = 128
#: Serving threads: more than the concurrent scrapers expected, each answer is a copy.
WORKERS: Final = 32

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
    #: (reasons for a 503, notes shown with a 200) of ``/readyz``.
    condition: Callable[[], tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default=lambda: ((), ())
    )


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
                self.headers.get("Accept", ""), self.headers.get("Accept-Encoding", "")
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
            failing, notes = ep.condition()
            lines = list(failing) if ep.ready() else ["catching up", *failing]
            if not lines:
                lines = ["ready"]
            lines += [f"note: {n}" for n in notes]
            status = HTTPStatus.SERVICE_UNAVAILABLE if failing or not ep.ready() else HTTPStatus.OK
            body = "".join(line + "\n" for line in lines).encode()
            self._send(status, body, "text/plain; charset=utf-8")
        elif path == "/":
            self._send(HTTPStatus.OK, INDEX, "text/html; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def do_HEAD(self) -> None:
        self.do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (scrapes every few seconds would flood the log)."""


class MetricsHTTPServer(ThreadingHTTPServer):
    """An HTTP server bound to the exporter's endpoints, served by a fixed thread pool."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], endpoints: Endpoints) -> None:
        super().__init__(address, _Handler)
        self.endpoints = endpoints
        self._thread: threading.Thread | None = None
        self._requests: queue.SimpleQueue[tuple[socket.socket, Any] | None] = queue.SimpleQueue()
        self._workers = [
            threading.Thread(target=self._work, name=f"http-{i}", daemon=True)
            for i in range(WORKERS)
        ]
        for worker in self._workers:
            worker.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to a pooled thread (instead of a new thread per connection)."""
        self._requests.put((request, client_address))

    def _work(self) -> None:
        while (job := self._requests.get()) is not None:
            request, client_address = job
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is no error worth a traceback."""
        log.debug("request from %s failed", client_address, exc_info=True)

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
        for _ in self._workers:
            self._requests.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
