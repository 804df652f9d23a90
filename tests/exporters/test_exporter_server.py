"""HTTP endpoints: readiness, content negotiation, gzip, and stale series vanishing (in process)."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import socket
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters import server as server_module
from exporters.exposition import Exposition, negotiate, render
from exporters.server import Endpoints, MetricsHTTPServer
from exporters.service import ExporterConfig, ExporterService
from tests.exporterkit import (
    append_jsonl,
    event,
    facilities_csv,
    fetch,
    parse_exposition,
    total,
    wait_until,
)


class _One(Collector):
    def collect(self):  # type: ignore[no-untyped-def]
        g = GaugeMetricFamily("postal_demo", "Demo.", labels=["a"])
        g.add_metric(["x"], 1.5)
        yield g


def _request(
    port: int, path: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


ACCEPTS = (
    # what Prometheus sends, then the odd cases
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "text/plain",
    "",
    "application/openmetrics-text; q=0",
    "application/openmetrics-text",
    "*/*",
)
ENCODINGS = ("gzip", "", "deflate, gzip;q=0", "x-gzip", "br, gzip")


def test_negotiation_is_prometheus_clients_own() -> None:
    """Our choice equals what prometheus_client's own HTTP server answers, header for header."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_One())
    reference, thread = start_http_server(0, "127.0.0.1", registry)
    try:
        port = reference.server_address[1]
        for accept in ACCEPTS:
            for encoding in ENCODINGS:
                _, headers, _ = _request(
                    port, "/metrics", {"Accept": accept, "Accept-Encoding": encoding}
                )
                theirs = (
                    headers["content-type"].startswith("application/openmetrics-text"),
                    headers.get("content-encoding") == "gzip",
                )
                assert negotiate(accept, encoding) == theirs, (accept, encoding)
    finally:
        reference.shutdown()
        thread.join()
    assert negotiate(ACCEPTS[0], "gzip") == (True, True)
    assert negotiate("text/plain", "") == (False, False)


def test_endpoints_before_and_after_ready() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_One())
    state: dict[str, object] = {"ready": False, "expo": None}

    def current() -> Exposition | None:
        expo = state["expo"]
        return expo if isinstance(expo, Exposition) else None

    server = MetricsHTTPServer(
        ("127.0.0.1", 0), Endpoints(current, lambda: bool(state["ready"]), lambda: True)
    )
    server.start()
    try:
        port = server.port
        assert _request(port, "/metrics", {})[0] == 503
        assert _request(port, "/readyz", {})[0] == 503
        assert _request(port, "/healthz", {})[0] == 200
        state["expo"], state["ready"] = render(registry), True
        assert _request(port, "/readyz", {})[0] == 200

        status, headers, plain = _request(port, "/metrics", {})
        assert status == 200
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert (
            plain == b'# HELP postal_demo Demo.\n# TYPE postal_demo gauge\npostal_demo{a="x"} 1.5\n'
        )

        status, headers, zipped = _request(port, "/metrics", {"Accept-Encoding": "gzip"})
        assert headers["content-encoding"] == "gzip"
        assert gzip.decompress(zipped) == plain

        om_accept = {"Accept": "application/openmetrics-text;version=1.0.0"}
        status, headers, om = _request(port, "/metrics", om_accept)
        assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert om.endswith(b"# EOF\n")

        status, headers, body = _request(port, "/metrics", {}, method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) == len(plain)
        assert _request(port, "/nope", {})[0] == 404
    finally:
        server.stop()


def test_stale_series_vanish_and_listed_facilities_go_to_zero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    facilities_csv(data / "facilities.csv", [("PC-SH-01", "Hub", "processing", "CN-SH", 5)])
    t0 = dt.datetime(2027, 1, 11, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    live = data / "events" / "live.jsonl"
    acc = {"product": "express", "origin": "CN-BJ", "destination": "CN-GD"}
    append_jsonl(
        live,
        [
            event("a1", "A", "accepted", t0, "CO-BJ-001", **acc),
            event("a2", "A", "arrived", t0 + hour, "PC-SH-01"),
            event("b1", "B", "accepted", t0, "CO-BJ-001", **acc),
            event("b2", "B", "arrived", t0 + hour, "DO-XX-999"),  # not in facilities.csv
        ],
    )
    complaints = data / "complaints" / "c.jsonl"
    opened = {"opened_at": "2027-01-11T00:30:00+00:00", "category": "delay", "region": "CN-SH"}
    append_jsonl(
        complaints, [{"complaint_id": "C1", **opened, "updated_at": "2027-01-11T00:30:00+00:00"}]
    )

    service = ExporterService(
        ExporterConfig(
            data,
            tmp_path / "state",
            port=0,
            as_of="latest",
            batch_interval=0.05,
            refresh_interval=3600,
        )
    ).start()
    try:
        assert service.wait_ready(30)

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            status, body = fetch(service.url + "/metrics")
            assert status == 200
            return parse_exposition(body.decode())

        before = scrape()
        backlog = cat.BACKLOG_ITEMS.series
        assert total(before, backlog, facility="PC-SH-01") == 1
        assert total(before, backlog, facility="DO-XX-999", facility_type="unknown") == 1
        assert (
            total(before, cat.ITEMS_IN_NETWORK.series, product="express", destination="CN-GD") == 2
        )
        assert total(before, cat.COMPLAINTS_OPEN.series, region="CN-SH") == 1

        append_jsonl(
            live,
            [
                event("a3", "A", "departed", t0 + 2 * hour, "PC-SH-01"),
                event("b3", "B", "departed", t0 + 2 * hour, "DO-XX-999"),
                event("a4", "A", "delivered", t0 + 3 * hour, "DO-GD-001"),
                event("b4", "B", "delivered", t0 + 3 * hour, "DO-GD-001"),
            ],
        )
        resolved = {
            "resolved_at": "2027-01-11T03:00:00+00:00",
            "updated_at": "2027-01-11T03:00:00+00:00",
        }
        append_jsonl(complaints, [{"complaint_id": "C1", **opened, **resolved}])
        wait_until(lambda: service.ingestor.counters.value(cat.EXPORTER_EVENTS_INGESTED) == 10)
        service.refresh()
        after = scrape()
    finally:
        service.stop()

    names = {name for name, _ in after}
    facilities = {dict(labels).get("facility") for name, labels in after if name == backlog}
    assert facilities == {"PC-SH-01"}  # the unlisted facility drained and vanished
    hub = {dict(lbl)["age_band"]: v for (n, lbl), v in after.items() if n == backlog}
    assert hub == dict.fromkeys(cat.AGE_BANDS, 0.0)  # the listed one is still there, at 0
    assert cat.ITEMS_IN_NETWORK.series not in names  # no item left in the network
    assert cat.COMPLAINTS_OPEN.series not in names
    assert total(after, cat.ITEMS_DELIVERED.series) == 2
    assert total(after, cat.COMPLAINT_RESOLUTION.count) == 1


class _Many(Collector):
    """A large exposition (about 600 KB of text), more than one socket send."""

    def collect(self):  # type: ignore[no-untyped-def]
        g = GaugeMetricFamily("postal_demo", "Demo.", labels=["a", "b"])
        for i in range(150):
            for j in range(100):
                g.add_metric([f"region-{i}", f"product-{j}"], float(i * j))
        yield g


def _served(collector: Collector) -> tuple[MetricsHTTPServer, Exposition]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    expo = render(registry)
    server = MetricsHTTPServer(
        ("127.0.0.1", 0), Endpoints(lambda: expo, lambda: True, lambda: True)
    )
    server.start()
    return server, expo


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[bytes, dict[str, str], bytes]:
    """(status line, headers, body) of one response read from ``sock`` (extra bytes stay in buffer)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the head"
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    head, rest = bytes(buffer[:end]).split(b"\r\n"), buffer[end + 4 :]
    headers = {}
    for line in head[1:]:
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        rest += chunk
    buffer[:] = rest[length:]
    return head[0], headers, bytes(rest[:length])


def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    server, expo = _served(_One())
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            buffer = bytearray()
            for _ in range(3):  # one connection, one request after the other
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = _read_response(sock, buffer)
                assert status == b"HTTP/1.1 200 OK" and body == expo.text
                assert "connection" not in headers
            # three requests in one segment (pipelining), the last one closing
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert _read_response(sock, buffer)[2] == b"ok\n"
            sock.settimeout(5)
            # HEAD: the length of the body that a GET gets, and no body (read the head only)
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(65536)
            end = buffer.index(b"\r\n\r\n")
            assert f"Content-Length: {len(expo.text)}".encode() in buffer[:end]
            del buffer[: end + 4]
            status, headers, _ = _read_response(sock, buffer)
            assert status == b"HTTP/1.1 404 Not Found" and headers["connection"] == "close"
            assert sock.recv(10) == b""  # closed by the server
    finally:
        server.stop()


def test_bad_requests_get_an_answer_and_never_stop_the_server() -> None:
    server, expo = _served(_One())
    try:
        cases = [
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", b"405"),
            (b"garbage\r\n\r\n", b"400"),
            (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
            (b"GET /metrics HTTP/1.1\r\nX: " + b"y" * (40 << 10), b"431"),
        ]
        for request, code in cases:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                try:
                    sock.sendall(request)
                    answer = sock.recv(64)
                except ConnectionResetError:
                    # the head too large: closed with unread bytes, the kernel may reset
                    # the connection before the answer is read
                    assert code == b"431"
                    continue
                assert answer.split()[1] == code, request[:20]
        # a client that connects and says nothing, one that goes away mid-request
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        gone = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        gone.sendall(b"GET /metr")
        gone.close()
        assert _request(server.port, "/metrics", {})[2] == expo.text  # others still served
        idle.close()
    finally:
        server.stop()


def test_a_slow_reader_gets_the_whole_body_and_does_not_hold_up_others() -> None:
    server, expo = _served(_Many())
    try:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        slow.shutdown(socket.SHUT_WR)  # done sending: the answer must still come whole
        time.sleep(0.2)  # the server has filled the socket buffers and waits to write more
        for _ in range(5):
            status, _, body = _request(server.port, "/metrics", {})
            assert status == 200 and body == expo.text
        buffer = bytearray()
        _, _, body = _read_response(slow, buffer)
        assert len(expo.text) > 500_000 and body == expo.text
        assert slow.recv(10) == b""  # then closed: the client said it was done
        slow.close()
    finally:
        server.stop()


def test_scrapes_while_ingesting_see_whole_batches_and_the_latest_within_a_refresh(
    tmp_path: Path,
) -> None:
    """Each file is one batch: 25 items accepted and delivered. Counters move together."""
    data = tmp_path / "data"
    events = data / "events"
    events.mkdir(parents=True)
    t0 = dt.datetime(2027, 1, 11, tzinfo=dt.UTC)
    acc = {"product": "express", "origin": "CN-BJ", "destination": "CN-GD"}
    refresh = 0.3
    service = ExporterService(
        ExporterConfig(
            data,
            tmp_path / "state",
            port=0,
            as_of="latest",
            batch_interval=0.02,
            refresh_interval=refresh,
        )
    ).start()
    seen: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            status, body = fetch(service.url + "/metrics")
            if status == 200:
                s = parse_exposition(body.decode())
                seen.append(
                    (
                        total(s, cat.EXPORTER_EVENTS_INGESTED.series),
                        total(s, cat.ITEMS_ACCEPTED.series),
                        total(s, cat.ITEMS_DELIVERED.series),
                    )
                )

    batches = 12
    try:
        assert service.wait_ready(30)
        threads = [threading.Thread(target=scraper) for _ in range(4)]
        for t in threads:
            t.start()
        for b in range(batches):
            rows = []
            for i in range(25):
                item, ts = f"I{b}-{i}", t0 + dt.timedelta(minutes=b)
                rows.append(event(f"a{b}-{i}", item, "accepted", ts, "CO-BJ-001", **acc))
                rows.append(event(f"d{b}-{i}", item, "delivered", ts + dt.timedelta(hours=5)))
            tmp = events / f"b{b:02}.jsonl.tmp"
            append_jsonl(tmp, rows)
            tmp.rename(events / f"b{b:02}.jsonl")  # a whole batch appears at once
            time.sleep(0.05)
        wait_until(
            lambda: service.ingestor.counters.value(cat.EXPORTER_EVENTS_INGESTED) == batches * 50
        )
        applied = time.monotonic()
        wait_until(lambda: bool(seen) and seen[-1][0] == batches * 50, timeout=30)
        shown_after = time.monotonic() - applied
    finally:
        stop.set()
        for t in threads:
            t.join()
        service.stop()
    assert len(seen) > 20
    for ingested, accepted, delivered in seen:  # never half a batch, never one side only
        assert ingested == 2 * accepted == 2 * delivered and accepted % 25 == 0
    assert seen[-1] == (batches * 50, batches * 25, batches * 25)
    # the latest batch shows within one refresh interval (plus a refresh's own time)
    assert shown_after <= refresh + 2.0


def test_connections_beyond_the_limit_wait_in_the_queue_and_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 3)
    server, expo = _served(_One())
    try:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
        time.sleep(0.2)
        started = time.process_time()
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        waiting.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)
        # full: the server does not spin on the waiting connection
        assert time.process_time() - started < 0.3
        held[0].close()  # room again: the waiting one is accepted and answered
        _, _, body = _read_response(waiting, bytearray())
        assert body == expo.text
        for sock in [*held[1:], waiting]:
            sock.close()
    finally:
        server.stop()
