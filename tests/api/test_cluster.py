"""``kpi api --engine dask``: the KPI endpoints computed on a real Dask cluster over a lake.

A scheduler and two workers run as processes on 127.0.0.1 (``tests/kpi/clusterkit.py``).
The reference is the single-process API over the same lake: every answer of the cluster
engine equals it (floats to 1e-9), filters and other as-of instants included. Bad input:
a scheduler that does not answer stops ``kpi api`` at startup, in time; a bucket lost
after startup is a 503 naming it, never a smaller answer.
"""

from __future__ import annotations

import math
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from distributed import Client
from fastapi.testclient import TestClient

from kpi.api import Settings, create_app
from kpi.api.settings import ClusterSettings, Limits
from kpi.lake import compact
from tests.api.conftest import api_client
from tests.api.test_parity import CASES, FROM, MID, body_of
from tests.kpi.clusterkit import Cluster
from tests.netkit import free_port

BIN = Path(sys.executable).parent

#: Questions with filters on the input rows of every family (and a product slice of the
#: backlog, whose thresholds are then undefined).
FILTERED: list[dict[str, Any]] = [
    {"measures": ["on_time_ratio", "transit_hours_p50", "in_network_items"],
     "dimensions": ["product"], "filters": [("destination", "not_in", ["CN-BJ"])]},
    {"measures": ["backlog_items", "backlog_over_threshold", "backlog_oldest_hours"],
     "dimensions": ["facility"], "filters": [("product", "in", ["express", "economy"])]},
    {"measures": ["backlog_items", "backlog_threshold_items"], "dimensions": [],
     "filters": [("facility_type", "in", ["processing"])]},
    {"measures": ["complaints_per_million", "open_complaints", "complaints"],
     "dimensions": ["region"], "filters": [("category", "not_in", ["loss"])]},
    {"measures": ["dwell_hours_p90", "dwell_within_target_ratio", "handled_items"],
     "dimensions": ["facility_type"], "filters": [("region", "in", ["CN-BJ", "CN-GD"])]},
    {"measures": ["leg_hours_mean", "leg_hours_p50", "leg_within_target_ratio"],
     "dimensions": ["to_region"], "filters": [("from_region", "not_in", ["CN-GD"])]},
    {"measures": ["first_mile_hours_p90", "last_mile_hours_p50", "delivered_items"],
     "dimensions": ["product"], "granularity": "day", "tz": "Asia/Shanghai",
     "filters": [("product", "equals", ["express"])]},
    {"measures": ["on_time_ratio", "backlog_items"], "dimensions": ["region"], "as_of": MID,
     "from": FROM, "filters": [("region", "not_in", ["CN-GD"])]},
]  # fmt: skip


def body(case: dict[str, Any]) -> dict[str, Any]:
    """The POST /query body, filters included."""
    out = body_of(case)
    out["filters"] = [
        {"dimension": d, "op": op, "values": values} for d, op, values in case.get("filters", [])
    ]
    return out


def close(got: Any, want: Any) -> bool:
    """Equal JSON values: floats to 1e-9 (relative and absolute), all else exactly."""
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, dict) and isinstance(want, dict):
        return list(got) == list(want) and all(close(got[k], want[k]) for k in got)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(close(a, b) for a, b in zip(got, want, strict=True))
    return bool(got == want) and type(got) is type(want)


@pytest.fixture(scope="module")
def lake(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated folder compacted into a lake of 8 buckets."""
    out = tmp_path_factory.mktemp("lake") / "lake"
    compact(sim_dir, out, buckets=8)
    return out


def dask_api(lake: Path, client: Client) -> TestClient:
    # A loaded test machine: a first question (workers importing the engine) may take long.
    settings = Settings(
        data_dir=lake,
        cluster=ClusterSettings(engine="dask"),
        limits=Limits(request_timeout_seconds=600),
    )
    return TestClient(create_app(settings, wait_for_data=True, cluster=client))


@pytest.fixture(scope="module")
def clients(lake: Path, dask_client: Client) -> Iterator[tuple[TestClient, TestClient]]:
    """(the single-process API, the cluster API), both over the lake."""
    with api_client(lake) as one, dask_api(lake, dask_client) as many:
        yield one, many


def _ask(client: TestClient, case: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/api/v1/query", json=body(case))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


@pytest.mark.parametrize("case", CASES + FILTERED, ids=lambda c: ",".join(c["measures"])[:60])
def test_the_cluster_answers_as_the_process(
    clients: tuple[TestClient, TestClient], case: dict[str, Any]
) -> None:
    one, many = clients
    want, got = _ask(one, case), _ask(many, case)
    assert want["data"], "a question with no rows tests nothing"
    assert close(got, want), (got["data"][:3], want["data"][:3])


def test_get_kpis_through_the_cluster(clients: tuple[TestClient, TestClient]) -> None:
    one, many = clients
    url = "/api/v1/kpis/on_time_ratio"
    params = {"dimensions": "destination", "granularity": "week", "product": "express"}
    want, got = one.get(url, params=params), many.get(url, params=params)
    assert want.status_code == got.status_code == 200, got.text
    assert want.json()["data"]
    assert close(got.json(), want.json())


def test_a_bucket_lost_after_startup_is_a_503_not_a_smaller_answer(
    lake: Path, dask_client: Client, tmp_path: Path
) -> None:
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    case = {"measures": ["delivered_items"], "dimensions": []}
    with dask_api(copy, dask_client) as many:
        assert _ask(many, case)["data"][0]["delivered_items"] > 0
        shutil.rmtree(copy / "events" / "bucket=05")
        r = many.post("/api/v1/query", json=body({"measures": ["accepted_items"]}))
    assert r.status_code == 503, r.text
    assert "bucket(s) 05" in r.text and "refusing a partial answer" in r.text


def _api(lake: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kpi"), "api", str(lake), "--listen", f"127.0.0.1:{free_port()}",
         "--engine", "dask", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_a_scheduler_that_does_not_answer_stops_startup_in_time(lake: Path) -> None:
    # Nothing listens on a free port; a socket that listens but never speaks hangs a handshake.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        for address in (
            f"tcp://127.0.0.1:{free_port()}",
            f"tcp://127.0.0.1:{silent.getsockname()[1]}",
        ):
            # The process ends (a hang would time out): the wait gave up at its deadline. Its
            # wall time is not asserted: importing the API takes 25 s on the loaded machine
            # (`tests/kpi/test_cluster.py` times the connection in process).
            run = _api(lake, "--scheduler", address, "--connect-timeout", "2")
            assert run.returncode == 2, run.stderr
            assert f"no Dask scheduler answered at {address} within 2 s" in run.stderr


def test_the_dask_engine_needs_a_lake(sim_dir: Path) -> None:
    run = _api(sim_dir, "--scheduler", "tcp://127.0.0.1:1")
    assert run.returncode == 2
    assert "--engine dask reads a lake" in run.stderr and "kpi compact" in run.stderr


def test_kpi_api_serves_through_the_scheduler(
    lake: Path, dask_cluster: Cluster, clients: tuple[TestClient, TestClient], tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "api.yaml"  # the engine from the config, the scheduler from the CLI
    config.write_text("cluster: {engine: dask}\nlimits: {request_timeout_seconds: 600}\n")
    proc = subprocess.Popen(
        [str(BIN / "kpi"), "api", str(lake), "--listen", f"127.0.0.1:{port}",
         "--config", str(config), "--database", "none", "--scheduler", dask_cluster.address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "kpi api never became ready"
                time.sleep(0.3)
        case = {"measures": ["on_time_ratio", "dwell_hours_p90"], "dimensions": ["region"]}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/query",
            data=orjson.dumps(body(case)),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as r:
            got = orjson.loads(r.read())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    want = _ask(clients[0], case)
    assert want["data"]
    assert close(got, want)


def _children(pid: int) -> list[str]:
    """The command lines of the processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # not a process, or it ended meanwhile
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        if int(ppid) == pid:
            out.append(cmdline.replace(b"\0", b" ").decode(errors="replace").strip())
    return out


def _serve(lake: Path, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``kpi api LAKE --engine dask ARGS`` listening on a free port, once /readyz is 200."""
    port = free_port()
    config = tmp_path / "api.yaml"  # a loaded machine: the workers' first question is slow
    config.write_text("limits: {request_timeout_seconds: 600}\n")
    proc = subprocess.Popen(
        [str(BIN / "kpi"), "api", str(lake), "--listen", f"127.0.0.1:{port}",
         "--config", str(config), "--database", "none", "--engine", "dask", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            assert time.monotonic() < deadline, "kpi api never became ready"
            time.sleep(0.3)


def _post(base: str, case: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{base}/api/v1/query",
        data=orjson.dumps(body(case)),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_kpi_api_workers_starts_a_local_cluster_of_that_many_workers(
    lake: Path, clients: tuple[TestClient, TestClient], tmp_path: Path
) -> None:
    proc, base = _serve(lake, tmp_path, "--workers", "3", "--timeout", "600")
    try:
        # Each worker of the local cluster is a child process titled `dask worker [address]`.
        workers = [c for c in _children(proc.pid) if c.startswith("dask worker")]
        assert len(workers) == 3, _children(proc.pid)
        case = {"measures": ["on_time_ratio", "transit_hours_p90", "delivered_items"],
                "dimensions": ["region"], "granularity": "week"}  # fmt: skip
        status, got = _post(base, case)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert status == 200, got
    want = _ask(clients[0], case)
    assert want["data"]
    assert close(got, want)


def test_kpi_api_timeout_bounds_a_cluster_run(
    lake: Path, dask_cluster: Cluster, tmp_path: Path
) -> None:
    # Workers answer a task in milliseconds at best: a microsecond's budget always runs out.
    proc, base = _serve(lake, tmp_path, "--scheduler", dask_cluster.address, "--timeout", "0.001")
    try:
        status, got = _post(base, {"measures": ["delivered_items"], "dimensions": ["region"]})
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert status == 503, got
    assert "took longer than 0.001 s" in got["detail"], got
