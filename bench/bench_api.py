"""Analyst API latency and throughput over a real server on loopback.

Usage::

    .venv/bin/python bench/bench_api.py --data /tmp/sim1m          # the 1 M-item folder
    .venv/bin/python bench/bench_api.py --data /tmp/sim1m --lake /tmp/lake1m --baseline /work/main
    .venv/bin/python bench/bench_api.py --small                    # quick smoke run (20 k items)
    .venv/bin/python bench/bench_api.py --data /tmp/sim1m --lake /tmp/lake1m --old-ref main
    .venv/bin/python bench/bench_api.py --lake /tmp/lake1m --old-ref main --startups 5 --no-folder
    .venv/bin/python bench/bench_api.py --lake /tmp/lake1m --old-ref main --no-folder --bytecode

With ``--lake`` the same folder compacted into a lake (``kpi compact``) is served
too, and with ``--baseline`` the folder again by another checkout's sources (e.g. the
main branch), and with ``--old-ref`` the lake (else the folder) again by the sources of
that commit (``git archive``): all servers run at once and every sample is taken on each in turn, so
the comparison holds on a machine whose load varies (report ratios).

Generate the 1 M-item folder first with
``kpi simulate --out /tmp/sim1m --items 1000000 --days 30 --seed 1``.

The server is ``kpi api DATA --listen 127.0.0.1:PORT`` in a subprocess (one uvicorn
worker; an admin key so the benchmark may drop the answer cache). Measured:

- ready: seconds from start until ``/readyz`` answers 200 (interpreter start included;
  with ``--bytecode`` every server reads compiled bytecode, else each start compiles the
  modules' sources when the environment writes no bytecode, ``PYTHONDONTWRITEBYTECODE``);
- RSS: when ready, at the end, and the peak (``VmHWM``);
- cold: the answer cache is dropped (``DELETE /api/v1/admin/cache``) before each request;
- cached: the same request repeated;
- requests: the 30-day by-destination on-time query, a backlog page, an item
  (the oldest waiting one: over a lake its timeline is read from its bucket);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from benchkit import export_tree

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


@dataclass
class Server:
    """One ``kpi api`` subprocess under test."""

    label: str
    data: Path
    code: Path
    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    started: float
    load_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


#: ``--bytecode``: the servers read compiled bytecode from here (``PYTHONPYCACHEPREFIX``).
BYTECODE: dict[str, str] = {}


def _start(label: str, data: Path, code: Path, tmp: Path, *, write: bool = False) -> Server:
    """Start ``kpi api`` over ``data`` with the sources of ``code`` (not yet ready); ``write``:
    let it write the bytecode of what it imports (``--bytecode``'s first start)."""
    port = _free_port()
    cfg = _config(tmp / f"api-{label}.yaml")
    log = tmp / f"server-{label}.log"
    env = {**os.environ, "PYTHONPATH": str(code), **BYTECODE}
    if write:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
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
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=code,
        env=env,
    )
    return Server(label, data, code, proc, f"http://127.0.0.1:{port}", log, t0)


def _wait_ready(srv: Server) -> None:
    with httpx.Client(base_url=srv.base, timeout=300) as c:
        while time.perf_counter() - srv.started < 900:
            if srv.proc.poll() is not None:
                raise RuntimeError(srv.log.read_text())
            try:
                ready = c.get("/readyz")
                if ready.status_code == 200:
                    srv.load_s = time.perf_counter() - srv.started
                    srv.info = ready.json()
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)  # the ready time to 20 ms
    raise RuntimeError(f"{srv.label}: not ready in 900 s")


def _requests(srv: Server, item: str) -> dict[str, tuple[str, dict[str, Any]]]:
    end = srv.info["as_of"]
    return {
        # A 30-day window ending at the as-of instant, by destination and by day.
        "on_time_30d": (
            "/api/v1/kpis/on_time_ratio",
            {
                "by": "destination",
                "granularity": "day",
                "tz": "Asia/Shanghai",
                "to": end,
                "from": _minus_days(end, 30),
                "limit": 10_000,
            },
        ),
        "backlog": ("/api/v1/backlog", {"region": "CN-GD", "min_age_hours": 6, "limit": 100}),
        "item": (f"/api/v1/items/{item}", {}),
    }


def _samples(
    name: str,
    clients: dict[str, httpx.Client],
    reqs: dict[str, dict[str, tuple[str, dict[str, Any]]]],
    cold_n: int,
    warm_n: int,
    figures: dict[str, Any],
) -> None:
    """Cold and cached samples of one request, taken on every server in turn."""
    cold: dict[str, list[float]] = {label: [] for label in clients}
    warm: dict[str, list[float]] = {label: [] for label in clients}
    for _ in range(cold_n):
        for label, c in clients.items():
            c.delete("/api/v1/admin/cache")
            cold[label].append(_timed(c, *reqs[label][name]))
    for _ in range(warm_n):
        for label, c in clients.items():
            warm[label].append(_timed(c, *reqs[label][name]))
    for label in clients:
        figures[label][name] = {"cold": _summary(cold[label]), "cached": _summary(warm[label])}


def run(
    targets: list[tuple[str, Path, Path]], cold_n: int, warm_n: int, seconds: float, clients: int
) -> dict[str, Any]:
    """Start every server (one after the other, each timed to ready), then measure them
    side by side: each cold and cached sample is taken on every server in turn, so they
    share the machine's load. Returns the figures per server."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers: list[Server] = []
        try:
            for label, data, code in targets:
                srv = _start(label, data, code, Path(tmp))
                servers.append(srv)
                _wait_ready(srv)
                figures[label] = {
                    "data": str(data),
                    "code": str(code),
                    "items": srv.info["items"],
                    "ready_seconds": round(srv.load_s, 2),
                    # CPU seconds the server used until ready: less sensitive to the
                    # machine's load than the wall time (the load uses both cores).
                    "ready_cpu_seconds": _cpu_seconds(srv.proc.pid),
                    "rss_mb_ready": _rss_mb(srv.proc.pid, "VmRSS"),
                }
            clients_ = {
                s.label: httpx.Client(
                    base_url=s.base, headers={"X-API-Key": ADMIN_KEY}, timeout=300
                )
                for s in servers
            }
            first = clients_[servers[0].label].get("/api/v1/backlog", params={"limit": 1}).json()
            item = first["data"][0]["item_id"]
            reqs = {s.label: _requests(s, item) for s in servers}
            for s in servers:
                c = clients_[s.label]
                q_url, q_params = reqs[s.label]["on_time_30d"]
                b_url, b_params = reqs[s.label]["backlog"]
                figures[s.label]["query_rows"] = c.get(q_url, params=q_params).json()["total"]
                figures[s.label]["backlog_total"] = c.get(b_url, params=b_params).json()["total"]
            for name in ("on_time_30d", "backlog", "item"):
                _samples(name, clients_, reqs, cold_n, warm_n, figures)
            for s in servers:
                mix = [reqs[s.label]["on_time_30d"], reqs[s.label]["backlog"]]
                figures[s.label]["throughput"] = asyncio.run(
                    _throughput(s.base, mix, clients, seconds)
                )
                figures[s.label]["rss_mb_end"] = _rss_mb(s.proc.pid, "VmRSS")
                figures[s.label]["rss_mb_peak"] = _rss_mb(s.proc.pid, "VmHWM")
            for c in clients_.values():
                c.close()
        finally:
            for s in servers:
                s.proc.terminate()
            for s in servers:
                s.proc.wait(timeout=30)
    return figures


def startups(targets: list[tuple[str, Path, Path]], times: int) -> dict[str, Any]:
    """Start-up only: each server started ``times`` times, the targets alternating (so they
    share the machine's load), each stopped once ready. Ready wall and CPU seconds, RSS."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in targets}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(times):
            for label, data, code in targets:
                srv = _start(label, data, code, Path(tmp))
                try:
                    _wait_ready(srv)
                    runs[label].append(
                        {
                            "ready_seconds": round(srv.load_s, 2),
                            "ready_cpu_seconds": _cpu_seconds(srv.proc.pid),
                            "rss_mb_ready": _rss_mb(srv.proc.pid, "VmRSS"),
                        }
                    )
                finally:
                    srv.proc.terminate()
                    srv.proc.wait(timeout=30)
    out: dict[str, Any] = {}
    for label, rows in runs.items():
        out[label] = {
            "runs": rows,
            **{
                f"{k}_median": statistics.median(r[k] for r in rows if r[k] is not None)
                for k in ("ready_seconds", "ready_cpu_seconds", "rss_mb_ready")
            },
        }
    return out


def compile_bytecode(targets: list[tuple[str, Path, Path]], into: Path) -> None:
    """``--bytecode``: start each server once, writing the bytecode of every module it
    imports up to ready and its first question under ``into``; the measured servers then
    read it (and write none), as a deployment's image does (``UV_COMPILE_BYTECODE``)."""
    BYTECODE["PYTHONPYCACHEPREFIX"] = str(into)
    with tempfile.TemporaryDirectory() as tmp:
        for label, data, code in targets:
            srv = _start(label, data, code, Path(tmp), write=True)
            try:
                _wait_ready(srv)
                with httpx.Client(
                    base_url=srv.base, headers={"X-API-Key": ADMIN_KEY}, timeout=300
                ) as c:
                    url, params = _requests(srv, "-")["on_time_30d"]
                    c.get(url, params=params)
            finally:
                srv.proc.terminate()
                srv.proc.wait(timeout=30)


def _minus_days(iso: str, days: int) -> str:
    import datetime as dt

    return (dt.datetime.fromisoformat(iso) - dt.timedelta(days=days)).isoformat()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (and its waited-for children) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return round(ticks / os.sysconf("SC_CLK_TCK"), 2)


def _rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
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
    ap.add_argument(
        "--lake", type=Path, help="also serve this lake (compacted from --data first if absent)"
    )
    ap.add_argument(
        "--baseline", type=Path, help="also serve the folder with the sources of this checkout"
    )
    ap.add_argument(
        "--old-ref",
        help="also serve the lake (else the folder) with the sources of this git commit",
    )
    ap.add_argument(
        "--no-folder", action="store_true", help="do not serve the folder (with --lake)"
    )
    ap.add_argument("--small", action="store_true", help="generate and use a 20 k-item folder")
    ap.add_argument("--cold", type=int, default=20, help="cold samples per request")
    ap.add_argument("--warm", type=int, default=200, help="cached samples per request")
    ap.add_argument("--seconds", type=float, default=15.0, help="throughput run length")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument(
        "--startups",
        type=int,
        help="measure start-up only: start every server this many times, alternating",
    )
    ap.add_argument(
        "--bytecode",
        action="store_true",
        help="every server reads compiled bytecode (written by a first start of each, not"
        " timed), as the Docker image's dependencies are; default: as this environment"
        " runs them (PYTHONDONTWRITEBYTECODE=1 here: every start compiles every module)",
    )
    args = ap.parse_args()
    if args.small:
        data = _small_folder(Path(tempfile.mkdtemp(prefix="bench-api-")))
    else:
        data = args.data or Path("/tmp/sim1m")
    if not (data / "events").is_dir():
        sys.exit(f"{data} has no events/: generate it with kpi simulate (see the docstring)")
    targets = [] if args.no_folder else [("folder", data, ROOT)]
    if args.lake is not None:
        if not (args.lake / "_manifest.json").exists():
            sys.path.insert(0, str(ROOT))
            from kpi.lake import compact

            compact(data, args.lake)
        targets.append(("lake", args.lake, ROOT))
    if args.baseline is not None:
        targets.append(("folder_baseline", data, args.baseline.resolve()))
    if args.old_ref is not None:
        old = export_tree(args.old_ref, Path(tempfile.mkdtemp(prefix="bench-api-old-")))
        label, served = ("lake_old", args.lake) if args.lake is not None else ("folder_old", data)
        targets.append((label, served, old))
    if args.bytecode:
        compile_bytecode(targets, Path(tempfile.mkdtemp(prefix="bench-api-pyc-")))
    load_before = os.getloadavg()
    if args.startups:
        figures = startups(targets, args.startups)
    else:
        figures = run(targets, args.cold, args.warm, args.seconds, args.clients)
    if args.old_ref is not None:
        figures["old_ref"] = args.old_ref
    figures["bytecode"] = (
        "compiled, read from PYTHONPYCACHEPREFIX"
        if args.bytecode
        else (
            "not written (PYTHONDONTWRITEBYTECODE)"
            if os.environ.get("PYTHONDONTWRITEBYTECODE")
            else "as the environment writes it"
        )
    )
    figures["cpus"] = os.cpu_count()
    figures["loadavg_before"] = [round(x, 1) for x in load_before]
    figures["loadavg_after"] = [round(x, 1) for x in os.getloadavg()]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / ("api-startups.json" if args.startups else "api.json")).write_text(
        json.dumps(figures, indent=2) + "\n"
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
