"""Twenty concurrent scrapers while ingesting: the exporter's server beside main's and the first one.

The servers run in this process, one after the other, serving the same cached
exposition (10 k series, the size of a real one) under the same ingest load in a
background thread (JSON lines parsed and validated, GIL-bound as the exporter's
intake is), with the interpreter switch interval the exporter sets (1 ms). Only the
serving differs:

- *thread per connection, backlog 5*: ``ThreadingHTTPServer`` as the exporter had it
  before issue 18 (socketserver's default listen queue of 5);
- *main: pool of 32, backlog 128*: the server of main before this change, a pool of
  32 threads running ``BaseHTTPRequestHandler`` (kept below as ``MainServer``);
- *selector thread*: ``exporters.server.MetricsHTTPServer`` (one thread, non-blocking
  sockets, head and body in one ``sendmsg``, keep-alive), as ``--serve-in-process``;
- *serving process*: ``exporters.serving.ProcessServer``, the exporter's default: the
  same selector loop in a child process that does not share the ingest's interpreter
  lock, fed the exposition over a socket pair.

Two loads, each from 20 scraper threads in a separate process (so they do not
compete for the server's GIL); latency is request-to-last-byte (connect included
for a new connection):

- *back to back*: each scraper opens a new connection per scrape and scrapes again
  at once: a saturation test (by Little's law the mean latency is 20 / throughput);
- *paced*: each scraper scrapes every ``--interval`` (0.25 s: 60 times Prometheus'
  default rate) at its own random phase over a kept-alive connection, as Prometheus
  does.

With ``--client hey`` the 20 scrapers are ``hey`` (Go, ``apt-get install hey``) instead
of Python threads: a Python client process with 20 threads queues its own scrapes
behind its interpreter lock, which then shows in the latencies it measures (``-c 20
-disable-keepalive`` back to back, ``-q`` per-worker rate when paced; every request's
time from ``-o csv``).

The last table is each server's CPU time per scrape without ingest (the serving
process's own CPU time included).

    .venv/bin/python bench/bench_scrapes.py --seconds 8
    .venv/bin/python bench/bench_scrapes.py --seconds 8 --client hey --skip-first
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import multiprocessing as mp
import os
import queue as queue_mod
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from exporters.exposition import Exposition, negotiate, render
from exporters.server import Endpoints, MetricsHTTPServer
from exporters.service import SWITCH_INTERVAL
from exporters.serving import ProcessServer
from kpi.contract import Kind
from kpi.sources.files import parse_jsonl
from kpi.sources.folder import validated
from tests.exporterkit import Feed, jsonl_bytes

SCRAPERS = 20
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
HEADERS = {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}


class _Big:
    """About 10 k series, like the exporter's exposition for a mid-size network."""

    def collect(self):  # type: ignore[no-untyped-def]
        family = CounterMetricFamily("postal_demo", "Demo.", labels=["a", "b"])
        for i in range(100):
            for j in range(100):
                family.add_metric([f"region-{i}", f"product-{j}"], float(i * j))
        yield family


# --- main's server (before this change), kept here to compare ------------------------


class _MainHandler(BaseHTTPRequestHandler):
    """main's ``/metrics`` handler (the other endpoints left out)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Any

    def do_GET(self) -> None:
        expo = self.server.endpoints.exposition()
        use_om, use_gzip = negotiate(
            self.headers.get("Accept", ""), self.headers.get("Accept-Encoding", "")
        )
        body, content_type = expo.body(use_om, use_gzip)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Vary", "Accept, Accept-Encoding")
        if use_gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Not logged."""


class FirstServer(ThreadingHTTPServer):
    """The exporter's server before issue 18: a thread per connection, listen backlog 5."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoints: Endpoints) -> None:
        super().__init__(address, _MainHandler)
        self.endpoints = endpoints

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2})
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


class MainServer(FirstServer):
    """main's server: a fixed pool of 32 threads, listen backlog 128."""

    request_queue_size = 128

    def __init__(self, address: tuple[str, int], endpoints: Endpoints) -> None:
        super().__init__(address, endpoints)
        self._requests: queue_mod.SimpleQueue[Any] = queue_mod.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, daemon=True) for _ in range(32)]
        for worker in self._workers:
            worker.start()

    def process_request(self, request: Any, client_address: Any) -> None:
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
        """Quiet."""

    def stop(self) -> None:
        super().stop()
        for _ in self._workers:
            self._requests.put(None)


# --- load ------------------------------------------------------------------------------


def ingest_load(stop: threading.Event, counter: list[int]) -> None:
    """Parse and validate JSON lines in a loop (the intake's GIL-bound part)."""
    data = jsonl_bytes(Feed().interleaved(0, 300))
    while not stop.is_set():
        batch = parse_jsonl(data, "events/live.jsonl")
        good, _ = validated(batch, Kind.EVENTS)
        counter[0] += good.collect().height


def _scrape(conn: http.client.HTTPConnection) -> None:
    conn.request("GET", "/metrics", headers=HEADERS)
    response = conn.getresponse()
    response.read()
    if response.status != HTTPStatus.OK:
        raise OSError(f"status {response.status}")


def back_to_back(port: int, seconds: float, out: Any) -> None:
    """One scraper: a new connection per scrape, scraping again at once."""
    lat: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            _scrape(conn)
        except OSError:
            errors += 1
            continue
        finally:
            conn.close()
        lat.append(time.perf_counter() - t0)
    out.put((lat, errors))


def paced(port: int, seconds: float, out: Any, interval: float) -> None:
    """One scraper: a scrape every ``interval`` at a random phase, one kept-alive connection."""
    lat: list[float] = []
    errors = 0
    time.sleep(random.random() * interval)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            _scrape(conn)
            lat.append(time.perf_counter() - t0)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    conn.close()
    out.put((lat, errors))


def scrapers_main(interval: float, port: int, seconds: float, result: Any) -> None:
    """The client process: ``SCRAPERS`` threads (back to back when ``interval`` is 0)."""
    inner: queue_mod.Queue[tuple[list[float], int]] = queue_mod.Queue()
    threads = [
        threading.Thread(target=back_to_back, args=(port, seconds, inner))
        if not interval
        else threading.Thread(target=paced, args=(port, seconds, inner, interval))
        for _ in range(SCRAPERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat: list[float] = []
    errors = 0
    while not inner.empty():
        part, err = inner.get()
        lat += part
        errors += err
    result.put((lat, errors))


def hey_main(interval: float, port: int, seconds: float, result: Any) -> None:
    """The scrapers as ``hey``: 20 workers, a new connection each time or paced."""
    cmd = ["hey", "-z", f"{seconds:g}s", "-c", str(SCRAPERS), "-o", "csv", "-t", "30"]
    cmd += [arg for name, value in HEADERS.items() for arg in ("-H", f"{name}: {value}")]
    cmd += ["-q", f"{1 / interval:g}"] if interval else ["-disable-keepalive"]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True, check=True
    ).stdout
    lat: list[float] = []
    errors = 0
    for row in list(csv.reader(out.splitlines()))[1:]:
        if row[6] == "200":
            lat.append(float(row[0]))
        else:
            errors += 1
    result.put((lat, errors))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _child_cpu(server: Any) -> float:
    """CPU seconds of the server's serving process so far (0 for an in-process server)."""
    pid = getattr(server, "pid", None)
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    server_cls: Any,
    expo: Exposition,
    interval: float,
    seconds: float,
    ingest: bool = True,
    client: str = "python",
) -> dict[str, Any]:
    """Serve ``expo`` with ``server_cls`` (under ingest load); 20 scrapers for ``seconds``."""
    server = server_cls(("127.0.0.1", 0), Endpoints(lambda: expo, lambda: True, lambda: True))
    server.start()
    stop, rows = threading.Event(), [0]
    idle = threading.Thread(target=stop.wait)
    load = threading.Thread(target=ingest_load, args=(stop, rows)) if ingest else idle
    load.start()
    cpu = time.process_time() + _child_cpu(server)
    ctx = mp.get_context("spawn")
    result: Any = ctx.Queue()
    target = hey_main if client == "hey" else scrapers_main
    scrapers = ctx.Process(target=target, args=(interval, server.port, seconds, result))
    started = time.monotonic()
    scrapers.start()
    lat, errors = result.get()
    scrapers.join()
    elapsed = time.monotonic() - started
    cpu = time.process_time() + _child_cpu(server) - cpu
    stop.set()
    load.join()
    server.stop()
    return {
        "scrapes": len(lat),
        "errors": errors,
        "p50_ms": pct(lat, 0.5) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
        "max_ms": max(lat) * 1000,
        "mean_ms": statistics.fmean(lat) * 1000,
        "ingest_rows_per_s": rows[0] / elapsed,
        # without ingest the process only serves: its CPU time per scrape
        "server_cpu_us_per_scrape": None if ingest else cpu / max(1, len(lat)) * 1e6,
    }


SERVERS: dict[str, Any] = {
    "thread per connection, backlog 5": FirstServer,
    "main: pool of 32, backlog 128": MainServer,
    "selector thread, backlog 128": MetricsHTTPServer,
    "serving process, backlog 128": ProcessServer,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--interval", type=float, default=0.25, help="paced load: seconds")
    parser.add_argument("--skip-first", action="store_true", help="leave out the backlog-5 server")
    parser.add_argument("--client", choices=("python", "hey"), default="python")
    args = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL)  # as the exporter runs
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Big())  # type: ignore[arg-type]
    expo = render(registry)
    res: dict[str, Any] = {"body_gzip_kb": len(expo.openmetrics_gzip) / 1024}
    rows = []
    servers = {n: c for n, c in SERVERS.items() if not (args.skip_first and c is FirstServer)}
    for mode, interval in (("back to back", 0.0), (f"every {args.interval:g} s", args.interval)):
        for name, cls in servers.items():
            r = measure(cls, expo, interval, args.seconds, client=args.client)
            res[f"{mode} / {name}"] = r
            rows.append(
                f"| {mode} | {name} | {r['scrapes']:,} | {r['p50_ms']:.1f} | "
                f"**{r['p99_ms']:.1f}** | {r['max_ms']:.0f} | {r['errors']} | "
                f"{r['ingest_rows_per_s']:,.0f} |"
            )
    cpu_rows = []
    for name, cls in servers.items():
        r = measure(cls, expo, 0.0, args.seconds / 2, ingest=False, client=args.client)
        res[f"no ingest, back to back / {name}"] = r
        cpu_rows.append(f"| {name} | {r['scrapes']:,} | {r['server_cpu_us_per_scrape']:.0f} |")
    print(json.dumps(res, indent=2))
    print("| Load | Server | Scrapes | p50 ms | p99 ms | max ms | errors | ingest rows/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print("\n| Server (no ingest, back to back) | Scrapes | server CPU µs per scrape |")
    print("| --- | ---: | ---: |")
    print("\n".join(cpu_rows))


if __name__ == "__main__":
    main()
