"""Analyst API latency and throughput over a real server on loopback.

Usage::

    .venv/bin/python bench/bench_api.py --data /tmp/sim1m          # the 1 M-item folder
    .venv/bin/python bench/bench_api.py --small                    # quick smoke run (20 k items)

Generate the 1 M-item folder first with
``kpi simulate --out /tmp/sim1m --items 1000000 --days 30 --seed 1``.

The server is ``kpi api DATA --listen 127.0.0.1:PORT`` in a subprocess (one uvicorn
worker; an admin key so the benchmark may drop the answer cache). Measured:

- load: seconds from start until ``/readyz`` answers 200;
- cold: the answer cache is dropped (``DELETE /api/v1/admin/cache``) before each request;
- cached: the same request repeated;
- throughput: 32 concurrent clients (httpx, one asyncio loop) sending a mix of both
  requests for a fixed time; every answer must be 200.

Client and server share the machine's cores, so the throughput is a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import httpx

ROOT: Final = Path(__file__).resolve().parent.parent
OUT_DIR: Final = ROOT / "bench" / "out"
ADMIN_KEY: Final = "bench-admin"
SERVE: Final = "import typer; from kpi_cli.api import api; typer.run(api)"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path) -> Path:
    import hashlib

    import yaml

    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    path.write_text(
        yaml.safe_dump(
            {
                "api_keys": [{"name": "bench", "sha256": digest, "role": "admin"}],
                "limits": {"request_timeout_seconds": 120},
                "watch_interval_seconds": 3600,
            }
        )
    )
    return path


def _small_folder(out: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from kpi.simulate import SimConfig, generate, write_data_folder

    write_data_folder(generate(SimConfig(items=20_000, days=30, seed=1)), out)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(_pct(ms, 0.95), 2),
        "max_ms": round(max(ms), 2),
    }


def _timed(client: httpx.Client, url: str, params: dict[str, Any]) -> float:
    start = time.perf_counter()
    r = client.get(url, params=params)
    elapsed = time.perf_counter() - start
    if r.status_code != 200:
        raise RuntimeError(f"{url} {params}: {r.status_code} {r.text[:300]}")
    return elapsed


async def _one_connection(
    host: str, port: int, paths: list[bytes], deadline: float, offset: int
) -> tuple[int, int, list[float]]:
    """Keep-alive HTTP/1.1 requests on one connection until the deadline: (done, errors, latencies)."""
    # A raw asyncio client: httpx spends more CPU per request than the server does, and
    # client and server share the machine's two cores.
    reader, writer = await asyncio.open_connection(host, port)
    done = errors = 0
    latencies: list[float] = []
    i = offset
    try:
        while time.perf_counter() < deadline:
            request = paths[i % len(paths)]
            i += 1
            start = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            done += 1
            errors += status != 200
    finally:
        writer.close()
    return done, errors, latencies


async def _throughput(
    base: str, requests: list[tuple[str, dict[str, Any]]], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` concurrent keep-alive connections cycling through ``requests``."""
    url = httpx.URL(base)
    host, port = str(url.host), int(url.port or 80)
    paths = [
        (
            f"GET {httpx.URL(url.join(path), params=params).raw_path.decode()} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nX-API-Key: {ADMIN_KEY}\r\n\r\n"
        ).encode()
        for path, params in requests
    ]
    start = time.perf_counter()
    results = await asyncio.gather(
        *(_one_connection(host, port, paths, start + seconds, k) for k in range(clients))
    )
    wall = time.perf_counter() - start
    done = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[2]]
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": done,
        "errors": sum(r[1] for r in results),
        "rps": round(done / wall, 1),
        **{f"latency_{k}": v for k, v in _summary(latencies).items() if k != "n"},
    }


def run(data: Path, cold_n: int, warm_n: int, seconds: float, clients: int) -> dict[str, Any]:
    """Start the server, measure, stop it; returns the figures."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(Path(tmp) / "api.yaml")
        log = (Path(tmp) / "server.log").open("w")
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVE,
                str(data),
                "--listen",
                f"127.0.0.1:{port}",
                "--config",
                str(cfg),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            with httpx.Client(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=300) as c:
                ready = None
                while time.perf_counter() - t0 < 900:
                    if proc.poll() is not None:
                        raise RuntimeError((Path(tmp) / "server.log").read_text())
                    try:
                        ready = c.get("/readyz")
                        if ready.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.25)
                assert ready is not None and ready.status_code == 200, "server not ready"
                load_s = time.perf_counter() - t0
                info = ready.json()
                as_of = info["as_of"]
                # A 30-day window ending at the as-of instant, by destination and by day.
                end = as_of
                q_url = "/api/v1/kpis/on_time_ratio"
                q_params = {
                    "by": "destination",
                    "granularity": "day",
                    "tz": "Asia/Shanghai",
                    "to": end,
                    "from": _minus_days(end, 30),
                    "limit": 10_000,
                }
                b_url = "/api/v1/backlog"
                b_params = {"region": "CN-GD", "min_age_hours": 6, "limit": 100}
                rows = c.get(q_url, params=q_params).json()["total"]
                backlog_total = c.get(b_url, params=b_params).json()["total"]
                figures: dict[str, Any] = {
                    "items": info["items"],
                    "load_seconds": round(load_s, 1),
                    "query_rows": rows,
                    "backlog_total": backlog_total,
                }
                for name, url, params in (
                    ("on_time_30d", q_url, q_params),
                    ("backlog", b_url, b_params),
                ):
                    cold = []
                    for _ in range(cold_n):
                        c.delete("/api/v1/admin/cache")
                        cold.append(_timed(c, url, params))
                    warm = [_timed(c, url, params) for _ in range(warm_n)]
                    figures[name] = {"cold": _summary(cold), "cached": _summary(warm)}
                mix = [(q_url, q_params), (b_url, b_params)]
                figures["throughput"] = asyncio.run(_throughput(base, mix, clients, seconds))
                rss = _rss_mb(proc.pid)
                if rss is not None:
                    figures["server_rss_mb"] = rss
                return figures
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def _minus_days(iso: str, days: int) -> str:
    import datetime as dt

    return (dt.datetime.fromisoformat(iso) - dt.timedelta(days=days)).isoformat()


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 0)
    except OSError:
        return None
    return None


def main() -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, help="data folder (default: /tmp/sim1m)")
    ap.add_argument("--small", action="store_true", help="generate and use a 20 k-item folder")
    ap.add_argument("--cold", type=int, default=20, help="cold samples per request")
    ap.add_argument("--warm", type=int, default=200, help="cached samples per request")
    ap.add_argument("--seconds", type=float, default=15.0, help="throughput run length")
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()
    if args.small:
        data = _small_folder(Path(tempfile.mkdtemp(prefix="bench-api-")))
    else:
        data = args.data or Path("/tmp/sim1m")
    if not (data / "events").is_dir():
        sys.exit(f"{data} has no events/: generate it with kpi simulate (see the docstring)")
    figures = run(data, args.cold, args.warm, args.seconds, args.clients)
    figures["data"] = str(data)
    figures["cpus"] = os.cpu_count()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "api.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
