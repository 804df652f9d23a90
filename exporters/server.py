"""HTTP serving: cached ``/metrics`` bytes, ``/healthz`` and ``/readyz``.

The exporter runs this loop in a serving process of its own (``exporters/serving.py``),
or, with ``--serve-in-process``, in a thread of its own process.

Every request is answered from memory; nothing is computed while a scrape waits.
One thread serves every connection from a ``selectors`` loop over non-blocking
sockets: a scrape is an accept, a read of the request head, one send of the
prepared header block and the cached body, a close. Under ingest the interpreter
lock is the scarce resource (two cores, a parser thread that holds it between
switch intervals), so a scrape must need it as few times and as briefly as
possible: no thread handoff per connection (a pool paid a queue put, a wake-up
and a lock hand-over for each), no ``email`` header parser, one ``send`` instead
of a write for the headers and another for the body. The body is sent from a
``memoryview`` of the cached bytes (never copied), a slow reader only keeps its
own socket registered for writing, and HTTP/1.1 keep-alive lets Prometheus reuse
its connection as it does by default.

The listen backlog is ``BACKLOG``: with the socketserver default of 5, twenty
scrapers connecting at once overflow the kernel's queue and the dropped SYNs are
retried after 1 s, 3 s, 7 s.

``/readyz`` is 503 before the first catch-up and while something stops the exporter
from reading all of its input (unreadable files or folders, no valid service
standard, a batch that cannot be applied for a while), with the reasons in the body;
degraded but counting (a refused reference file, the rejects file or checkpoints
failing on a full disk) it stays 200 and lists the notes.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

from exporters.bodies import Exposition, negotiate

log = logging.getLogger(__name__)

#: Listen queue length (the kernel caps it at net.core.somaxconn).
BACKLOG: Final = 128
#: A request head larger than this is refused (431) and the connection closed.
MAX_HEAD: Final = 16 << 10
#: Open connections at most; beyond, new ones wait in the listen queue.
MAX_CONNECTIONS: Final = 512
#: A kept-alive connection idle this long (seconds) is closed.
IDLE_TIMEOUT: Final = 60.0

INDEX = b"""<html><head><title>Postal exporter</title></head><body>
<h1>Postal service-quality exporter</h1>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a> &middot;
<a href="/readyz">/readyz</a></p></body></html>
"""
_TEXT: Final = "text/plain; charset=utf-8"


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
    #: The body of an unhealthy ``/healthz``.
    why_unhealthy: Callable[[], str] = field(default=lambda: "ingest loop stopped")


@dataclass
class Request:
    """One parsed request head."""

    method: str
    path: str
    headers: dict[str, str]
    keep_alive: bool


@dataclass
class _Conn:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    out: list[memoryview] = field(default_factory=list)
    close_after: bool = False
    writing: bool = False
    #: The client closed its side: nothing more to read, what is due is still sent.
    eof: bool = False
    active: float = field(default_factory=time.monotonic)


def parse_head(head: bytes) -> Request | None:
    """The request of a head (request line and header lines, without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return None
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    connection = headers.get("connection", "").lower()
    # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when asked.
    http10 = parts[2] == "HTTP/1.0"
    keep_alive = "keep-alive" in connection if http10 else "close" not in connection
    return Request(parts[0], parts[1].split("?", 1)[0], headers, keep_alive)


def answer(ep: Endpoints, req: Request) -> tuple[int, bytes, str, dict[str, str]]:
    """(status, body, content type, extra headers) for a request."""
    if req.method not in ("GET", "HEAD"):
        return HTTPStatus.METHOD_NOT_ALLOWED, b"GET or HEAD only\n", _TEXT, {"Allow": "GET, HEAD"}
    if req.path == "/metrics":
        return _metrics(ep, req)
    if req.path == "/healthz":
        ok = ep.healthy()
        status = HTTPStatus.OK if ok else HTTPStatus.INTERNAL_SERVER_ERROR
        body = b"ok\n" if ok else f"{ep.why_unhealthy()}\n".encode()
        return status, body, "text/plain", {}
    if req.path == "/readyz":
        failing, notes = ep.condition()
        ready = ep.ready()
        lines = list(failing) if ready else ["catching up", *failing]
        lines = (lines or ["ready"]) + [f"note: {n}" for n in notes]
        status = HTTPStatus.SERVICE_UNAVAILABLE if failing or not ready else HTTPStatus.OK
        return status, "".join(line + "\n" for line in lines).encode(), _TEXT, {}
    if req.path == "/":
        return HTTPStatus.OK, INDEX, "text/html; charset=utf-8", {}
    return HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", {}


def _metrics(ep: Endpoints, req: Request) -> tuple[int, bytes, str, dict[str, str]]:
    """The cached exposition in the variant the request negotiates (503 before ready)."""
    exposition = ep.exposition() if ep.ready() else None
    if exposition is None:
        why = "not ready: catching up with the data folder" if ep.healthy() else ep.why_unhealthy()
        body = f"{why}\n".encode()
        return HTTPStatus.SERVICE_UNAVAILABLE, body, _TEXT, {"Retry-After": "5"}
    use_om, use_gzip = negotiate(
        req.headers.get("accept", ""), req.headers.get("accept-encoding", "")
    )
    data, content_type = exposition.body(use_om, use_gzip)
    extra = {"Vary": "Accept, Accept-Encoding"}
    if use_gzip:
        extra["Content-Encoding"] = "gzip"
    return HTTPStatus.OK, data, content_type, extra


class _Date:
    """The ``Date`` header value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


def response_head(
    status: int, length: int, content_type: str, extra: dict[str, str], date: str, close: bool
) -> bytes:
    """Status line and headers of a response, blank line included."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Server: postal-exporter",
        f"Date: {date}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class MetricsHTTPServer:
    """An HTTP server bound to the exporter's endpoints, served by one selector thread."""

    #: Why serving stopped for good: never, in this process.
    failure: str | None = None

    def __init__(
        self,
        address: tuple[str, int],
        endpoints: Endpoints,
        listener: socket.socket | None = None,
    ) -> None:
        self.endpoints = endpoints
        #: ``listener``: a socket already listening (the serving process gets its parent's).
        self._listener = listener or socket.create_server(address, backlog=BACKLOG)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[int, _Conn] = {}
        self._date = _Date()
        self._stopping = False
        self._accepting = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()

    def publish(self) -> None:
        """Nothing to do: every request reads the endpoints themselves."""

    def stop(self) -> None:
        """Stop serving and close every socket."""
        self._stopping = True
        self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in list(self._conns.values()):
            self._close(conn)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # --- the loop ------------------------------------------------------------------

    def _serve(self) -> None:
        swept = time.monotonic()
        while not self._stopping:
            for key, mask in self._selector.select(timeout=1.0):
                try:
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._wake_r.recv(64)
                    else:
                        self._on_ready(key.data, mask)
                except Exception:  # a bug or a client gone wrong never stops serving
                    log.debug("connection failed", exc_info=True)
                    if isinstance(key.data, _Conn):
                        self._close(key.data)
            now = time.monotonic()
            if now - swept >= 1.0:
                swept = now
                for conn in [c for c in self._conns.values() if now - c.active > IDLE_TIMEOUT]:
                    self._close(conn)

    def _accept(self) -> None:
        while True:
            if len(self._conns) >= MAX_CONNECTIONS:
                # Full: stop listening for readiness (the kernel queues the rest) until
                # a connection closes, instead of waking up for them in a loop.
                self._selector.unregister(self._listener)
                self._accepting = False
                return
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: the queue keeps the rest
                log.debug("accept failed", exc_info=True)
                return
            sock.setblocking(False)
            # Answers are one send; without this a second segment would wait for the
            # client's delayed ACK (~40 ms on Linux).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _on_ready(self, conn: _Conn, mask: int) -> None:
        conn.active = time.monotonic()
        if mask & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._close(conn)
                return
            if data == b"":
                if not conn.out:
                    self._close(conn)
                    return
                conn.eof = conn.close_after = True
                conn.writing = not conn.writing  # forces the selector update below
                self._want(conn, write=True)
                return
            if data:
                conn.inbuf += data
        self._handle(conn)

    def _handle(self, conn: _Conn) -> None:
        """Answer the complete requests buffered (pipelining) while the answers go out."""
        while self._flush(conn) and not conn.close_after:
            end = conn.inbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.inbuf) > MAX_HEAD:
                    self._queue(conn, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"")
                    continue
                return
            head = bytes(conn.inbuf[:end])
            del conn.inbuf[: end + 4]
            req = parse_head(head)
            if req is None:
                self._queue(conn, HTTPStatus.BAD_REQUEST, b"bad request\n")
                continue
            status, body, content_type, extra = answer(self.endpoints, req)
            # A request with a body is not read further: answer it and close.
            close = not req.keep_alive or bool(
                {"content-length", "transfer-encoding"} & req.headers.keys()
            )
            head_bytes = response_head(status, len(body), content_type, extra, self._date(), close)
            conn.out.append(memoryview(head_bytes))
            if req.method != "HEAD" and body:
                conn.out.append(memoryview(body))  # the cached bytes themselves, not a copy
            conn.close_after = close
        if conn.close_after and not conn.out:
            self._close(conn)

    def _queue(self, conn: _Conn, status: int, body: bytes) -> None:
        """An error answer, after which the connection is closed."""
        head = response_head(status, len(body), _TEXT, {}, self._date(), True)
        conn.out.append(memoryview(head + body))
        conn.close_after = True

    def _flush(self, conn: _Conn) -> bool:
        """Send what is due in as few calls as the socket takes; True once all is sent."""
        while conn.out:
            try:
                sent = conn.sock.sendmsg(conn.out)  # head and body in one call, no copy
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                conn.out.clear()
                conn.close_after = True
                return False
            while sent and conn.out:
                first = conn.out[0]
                if sent >= len(first):
                    sent -= len(first)
                    conn.out.pop(0)
                else:
                    conn.out[0] = first[sent:]
                    sent = 0
            if conn.out:
                self._want(conn, write=True)
                return False
        self._want(conn, write=False)
        return True

    def _want(self, conn: _Conn, write: bool) -> None:
        if conn.writing != write and conn.sock.fileno() >= 0:
            events = (0 if conn.eof else selectors.EVENT_READ) | (
                selectors.EVENT_WRITE if write else 0
            )
            if events:
                self._selector.modify(conn.sock, events, conn)
            conn.writing = write

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0 and self._conns.pop(fd, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
            if not self._accepting and not self._stopping:
                self._selector.register(self._listener, selectors.EVENT_READ, None)
                self._accepting = True
        conn.sock.close()
