"""Test helpers around the real Prometheus binaries: promtool, a throw-away server, a scrape target.

Typical use::

    from tests import promkit

    with promkit.serve_exposition(lambda: generate_latest(registry)) as target, \
         promkit.run_prometheus(tmp_path, {"postal-exporter": [target.address]}) as prom:
        prom.wait_for(lambda: prom.query('up{job="postal-exporter"}'))
        assert prom.query("up")[0]["value"][1] == "1"

``require_binary`` skips a test when a binary is missing, except under CI (``CI`` set),
where a missing binary is a broken machine and fails the test instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import yaml

from tests.netkit import free_port

T = TypeVar("T")

#: Environment variables that override where the binaries are found.
BINARY_ENV = {
    "promtool": "PROMTOOL",
    "prometheus": "PROMETHEUS",
    "amtool": "AMTOOL",
    "alertmanager": "ALERTMANAGER",
}
#: Other names a binary goes by (Debian installs Alertmanager as prometheus-alertmanager).
BINARY_ALIASES = {"alertmanager": ("alertmanager", "prometheus-alertmanager")}


class PromQLError(RuntimeError):
    """Prometheus answered a query with an error."""


def find_binary(name: str) -> str | None:
    """Path of ``promtool``/``prometheus``/``amtool``/``alertmanager`` (env first), or None."""
    override = os.environ.get(BINARY_ENV.get(name, ""), "")
    if override:
        return override if Path(override).exists() else None
    for candidate in BINARY_ALIASES.get(name, (name,)):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require_binary(name: str) -> str:
    """The binary's path; skips the test if missing (fails instead when ``CI`` is set)."""
    path = find_binary(name)
    if path is None:
        message = f"{name} not installed (apt-get install prometheus prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_tool(
    name: str, *args: str | Path, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run promtool/amtool with ``args``; returns the completed process (never raises on rc)."""
    return subprocess.run(
        [require_binary(name), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` with ``args``."""
    return run_tool("promtool", *args, cwd=cwd)


def wait_for(
    predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except (OSError, PromQLError) as exc:  # server not ready yet, or series not there yet
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}{detail}")


# --- a scrape target -----------------------------------------------------------------


@dataclass
class ExpositionServer:
    """A tiny HTTP server answering ``GET /metrics`` with ``render()``'s bytes."""

    render: Callable[[], bytes]
    port: int = 0
    scrapes: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` as used in a scrape config."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> ExpositionServer:
        """Bind a free port and serve in a daemon thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                owner.scrapes += 1
                body = owner.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Shut the server down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def serve_exposition(render: Callable[[], bytes]) -> Iterator[ExpositionServer]:
    """Serve ``render()`` at ``http://127.0.0.1:PORT/metrics`` for the duration of the block."""
    server = ExpositionServer(render).start()
    try:
        yield server
    finally:
        server.stop()


# --- a Prometheus server ---------------------------------------------------------------


@dataclass
class PrometheusServer:
    """A running Prometheus bound to 127.0.0.1, with helpers for its HTTP API."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **params: str) -> Any:
        """GET an API path; returns ``data`` of a success answer, raises PromQLError otherwise."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
            try:
                payload = json.load(exc)
            except ValueError:
                raise PromQLError(f"{path}: HTTP {exc.code}") from exc
        if payload.get("status") != "success":
            raise PromQLError(f"{payload.get('errorType')}: {payload.get('error')}")
        return payload["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the result list of a vector (scalars come back as one item)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.get("/api/v1/query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when the result is empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr} returned {len(result)} series")
        return float(result[0]["value"][1])

    def rule_groups(self) -> list[dict[str, Any]]:
        """``/api/v1/rules`` groups (each rule with health, lastError, state, alerts)."""
        return list(self.get("/api/v1/rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts."""
        return list(self.get("/api/v1/alerts")["alerts"])

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets."""
        return list(self.get("/api/v1/targets")["activeTargets"])

    def wait_for(self, predicate: Callable[[], T], timeout: float = 20.0, what: str = "") -> T:
        """Poll ``predicate`` (see module ``wait_for``); fails with the server log on timeout."""
        try:
            return wait_for(predicate, timeout=timeout, what=what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- prometheus log ---\n{self.log()[-3000:]}") from None

    def log(self) -> str:
        """The server's combined output so far."""
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGKILL the server (tests need no graceful shutdown) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


class _Server(Protocol):
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str: ...

    def log(self) -> str: ...

    def stop(self) -> None: ...


def _spawn(workdir: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start a server binary with its output in ``workdir/<name>.log``."""
    with (workdir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def _wait_ready(server: _Server, timeout: float) -> None:
    """Wait for ``/-/ready``; a server that exits or never gets ready is killed and reported."""
    name = Path(str(server.process.args[0])).name  # type: ignore[index]

    def ready() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"{name} exited with {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    try:
        wait_for(ready, timeout=timeout, what=f"{name} /-/ready")
    except BaseException:
        server.stop()
        raise


def prometheus_config(
    scrape: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
) -> dict[str, Any]:
    """A minimal config: one static job per ``scrape`` entry, fast scrapes and evaluations."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in scrape.items()
        ],
    }


def start_prometheus(
    workdir: Path,
    scrape: Mapping[str, Sequence[str]] | None = None,
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
    config: Mapping[str, Any] | None = None,
    ready_timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> PrometheusServer:
    """Start Prometheus on a free 127.0.0.1 port with a temp config and TSDB under ``workdir``."""
    binary = require_binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    data = config if config is not None else prometheus_config(scrape or {}, rule_files, interval)
    config_path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    port = free_port()
    process = _spawn(
        workdir,
        "prometheus",
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *extra_args,
        ],
    )
    server = PrometheusServer(process, port, workdir)
    _wait_ready(server, ready_timeout)
    return server


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    scrape: Mapping[str, Sequence[str]] | None = None,
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
    config: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[PrometheusServer]:
    """``start_prometheus`` as a context manager that always kills the server."""
    server = start_prometheus(workdir, scrape, rule_files, interval, config, extra_args=extra_args)
    try:
        yield server
    finally:
        server.stop()


# --- an Alertmanager server --------------------------------------------------------------


@dataclass
class AlertmanagerServer:
    """A running Alertmanager bound to 127.0.0.1 (clustering off), with its v2 API."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST alerts (dicts with ``labels`` and optional ``annotations``) to /api/v2/alerts."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(list(alerts)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def alerts(self) -> list[dict[str, Any]]:
        """All alerts Alertmanager holds, with ``status.state`` and ``status.inhibitedBy``."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as response:
            return list(json.load(response))

    def log(self) -> str:
        """The server's combined output so far."""
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGKILL the server and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def run_alertmanager(workdir: Path, config_file: Path) -> Iterator[AlertmanagerServer]:
    """Start Alertmanager with ``config_file`` on a free port; always killed on exit."""
    binary = require_binary("alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = _spawn(
        workdir,
        "alertmanager",
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
    )
    server = AlertmanagerServer(process, port, workdir)
    try:
        _wait_ready(server, 30.0)
        yield server
    finally:
        server.stop()


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana ``$var`` and ``${var}`` references, longest names first."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr
