"""Twenty concurrent scrapers while ingesting: the pooled server beside the one it replaced.

Both servers run in this process, one after the other, with the same handler, the
same cached exposition (the size of a real one) and the same ingest load in a
background thread (JSON lines parsed and validated, GIL-heavy as the exporter's
intake is). Only the serving differs:

- *thread per connection, backlog 5*: ``ThreadingHTTPServer`` as the exporter had it
  before issue 18 (socketserver's default listen queue of 5);
- *pool, backlog 128*: ``exporters.server.MetricsHTTPServer`` (``WORKERS`` pooled
  threads, ``BACKLOG`` 128).

The scrapers are 20 threads in a separate process (so they do not compete for the
server's GIL), each opening a new connection per scrape back to back, as 20
Prometheus servers would. Latency is connect-to-last-byte.

    .venv/bin/python bench/bench_scrapes.py --seconds 8
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import statistics
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from exporters.exposition import Exposition, render
from exporters.server import Endpoints, MetricsHTTPServer, _Handler
from kpi.contract import Kind
from kpi.sources.files import parse_jsonl
from kpi.sources.folder import validated
from tests.exporterkit import Feed, jsonl_bytes

SCRAPERS = 20
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


class _Big:
    """About 10 k series, like the exporter's exposition for a mid-size network."""

    def collect(self):  # type: ignore[no-untyped-def]
        family = CounterMetricFamily("postal_demo", "Demo.", labels=["a", "b"])
        for i in range(100):
            for j in range(100):
                family.add_metric([f"region-{i}", f"product-{j}"], float(i * j))
        yield family


class Today(ThreadingHTTPServer):
    """The exporter's server before issue 18: a thread per connection, listen backlog 5."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoints: Endpoints) -> None:
        super().__init__(address, _Handler)
        self.endpoints = endpoints


def ingest_load(stop: threading.Event, counter: list[int]) -> None:
    """Parse and validate JSON lines in a loop (the intake's GIL-bound part)."""
    data = jsonl_bytes(Feed().interleaved(0, 300))
    while not stop.is_set():
        batch = parse_jsonl(data, "events/live.jsonl")
        good, _ = validated(batch, Kind.EVENTS)
        counter[0] += good.collect().height


def scraper(port: int, seconds: float, out: Any) -> None:
    """One scraping thread: new connection per scrape, back to back."""
    lat: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(
                "GET", "/metrics", headers={"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}
            )
            response = conn.getresponse()
            response.read()
            conn.close()
        except OSError:
            errors += 1
            continue
        lat.append(time.perf_counter() - t0)
    out.put((lat, errors))


def scrapers_main(port: int, seconds: float, queue: Any) -> None:
    """The client process: ``SCRAPERS`` threads."""
    inner: Any = __import__("queue").Queue()
    threads = [
        threading.Thread(target=scraper, args=(port, seconds, inner)) for _ in range(SCRAPERS)
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
    queue.put((lat, errors))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(server_cls: Any, expo: Exposition, seconds: float) -> dict[str, Any]:
    """Serve ``expo`` with ``server_cls`` under ingest load; 20 scrapers for ``seconds``."""
    server = server_cls(("127.0.0.1", 0), Endpoints(lambda: expo, lambda: True, lambda: True))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    stop, rows = threading.Event(), [0]
    load = threading.Thread(target=ingest_load, args=(stop, rows))
    load.start()
    queue: Any = mp.get_context("spawn").Queue()
    client = mp.get_context("spawn").Process(
        target=scrapers_main, args=(server.server_address[1], seconds, queue)
    )
    started = time.monotonic()
    client.start()
    lat, errors = queue.get()
    client.join()
    elapsed = time.monotonic() - started
    stop.set()
    load.join()
    server.shutdown()
    server.server_close()
    thread.join()
    return {
        "scrapes": len(lat),
        "errors": errors,
        "p50_ms": pct(lat, 0.5) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
        "max_ms": max(lat) * 1000,
        "mean_ms": statistics.fmean(lat) * 1000,
        "ingest_rows_per_s": rows[0] / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Big())  # type: ignore[arg-type]
    expo = render(registry)
    res = {
        "body_gzip_kb": len(expo.openmetrics_gzip) / 1024,
        "thread per connection, backlog 5": measure(Today, expo, args.seconds),
        "pool, backlog 128": measure(MetricsHTTPServer, expo, args.seconds),
    }
    print(json.dumps(res, indent=2))
    for name in ("thread per connection, backlog 5", "pool, backlog 128"):
        r = res[name]
        assert isinstance(r, dict)
        print(
            f"| {name} | {r['scrapes']:,} | {r['p50_ms']:.1f} | **{r['p99_ms']:.1f}** | "
            f"{r['max_ms']:.0f} | {r['errors']} | {r['ingest_rows_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    main()
