"""``--engine dask``: a real local Dask cluster (scheduler + two workers) answers as one process.

The tests start ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (free
ports), compare the cluster's answer with the single-process engine on the folder the
lake was compacted from, kill a worker with SIGKILL mid-run, and shut everything down.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from distributed import Client
from polars.testing import assert_frame_equal

import kpi.simulate as sim
from kpi import cluster
from kpi.kpis.catalog import KpiError
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.lake import compact
from kpi.output import to_bytes
from kpi.sources.folder import load_data_dir
from tests.conftest import free_port

BIN = Path(sys.executable).parent
#: The families the cluster engine supports today (flow: volumes, timeliness, transit).
FLOW_AND_NETWORK = (
    "accepted_items",
    "delivered_items",
    "delivered_without_acceptance",
    "returned_items",
    "on_time_items",
    "on_time_ratio",
    "late_1d_items",
    "late_2d_items",
    "late_3d_plus_items",
    "transit_hours_mean",
    "transit_hours_p50",
    "transit_hours_p90",
    "within_72h_ratio",
    "first_attempt_ratio",
)
SNAPSHOT_KPIS = ("in_network_items", "overdue_items", "stalled_items")


class Cluster:
    """A scheduler and two workers, each a real process."""

    def __init__(self, workdir: Path) -> None:
        self.address = f"tcp://127.0.0.1:{free_port()}"
        port = self.address.rsplit(":", 1)[1]
        self.log = workdir / "dask.log"
        out = self.log.open("ab")
        self.scheduler = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", port,
             "--no-dashboard"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
        worker = [str(BIN / "dask"), "worker", self.address, "--host", "127.0.0.1",
                  "--nthreads", "1", "--no-nanny", "--no-dashboard"]  # fmt: skip
        self.workers = [
            subprocess.Popen(
                [*worker, "--name", f"w{i}"], stdout=out, stderr=subprocess.STDOUT, cwd=workdir
            )
            for i in range(2)
        ]

    def client(self, workers: int = 2, timeout: float = 90.0) -> Client:
        client = Client(self.address, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
        client.wait_for_workers(workers, timeout=timeout)  # type: ignore[no-untyped-call]
        return client

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, lake): a small simulated scenario with bad rows, and its lake."""
    folder = tmp_path_factory.mktemp("data")
    cfg = sim.SimConfig(items=600, days=6, seed=11, bad_rows=0.01)
    sim.write_data_folder(sim.generate(cfg), folder)
    lake = tmp_path_factory.mktemp("lake")
    compact(folder, lake, buckets=8)
    return folder, lake


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def client(dask_cluster: Cluster) -> Iterator[Client]:
    with dask_cluster.client() as client:
        yield client


def single_process(folder: Path, q: KpiQuery) -> pl.DataFrame:
    return Snapshot.from_dataset(load_data_dir(folder)).query(q)


QUESTIONS = [
    KpiQuery(kpis=(*FLOW_AND_NETWORK, *SNAPSHOT_KPIS)),
    KpiQuery(kpis=(*FLOW_AND_NETWORK, *SNAPSHOT_KPIS), by=("product", "destination")),
    KpiQuery(kpis=FLOW_AND_NETWORK, by=("origin",), granularity="day", tz="Asia/Shanghai"),
    KpiQuery(kpis=FLOW_AND_NETWORK, by=("region",), granularity="week", tz="America/New_York"),
]


def test_cluster_answers_as_one_process(data: tuple[Path, Path], client: Client) -> None:
    folder, lake = data
    for q in QUESTIONS:
        expected = single_process(folder, q)
        got = cluster.report(lake, q, client)
        assert expected.height > 0
        assert_frame_equal(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    # With an as-of inside the data and an explicit window too.
    snap = Snapshot.from_dataset(load_data_dir(folder))
    as_of = snap.first_event_at + (snap.as_of - snap.first_event_at) / 2  # type: ignore[operator]
    q = KpiQuery(kpis=(*FLOW_AND_NETWORK, *SNAPSHOT_KPIS), by=("product",))
    expected = Snapshot.from_dataset(load_data_dir(folder), as_of).query(q)
    assert_frame_equal(cluster.report(lake, q, client, as_of), expected, rel_tol=1e-9, abs_tol=1e-9)


def test_unsupported_kpis_are_refused_not_left_out(data: tuple[Path, Path], client: Client) -> None:
    _, lake = data
    with pytest.raises(KpiError, match="backlog_items"):
        cluster.report(lake, KpiQuery(kpis=("accepted_items", "backlog_items")), client)
    with pytest.raises(KpiError, match="does not compute"):
        cluster.report(lake, KpiQuery(), client)  # the whole catalog: not yet


def test_a_scheduler_that_does_not_answer_is_a_clear_error_in_time() -> None:
    # Nothing listens on a free port; a socket that listens but never speaks hangs a handshake.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        for address in (
            f"tcp://127.0.0.1:{free_port()}",
            f"tcp://127.0.0.1:{silent.getsockname()[1]}",
        ):
            t0 = time.monotonic()
            with (
                pytest.raises(cluster.ClusterError, match="no Dask scheduler answered"),
                cluster.connect(address, timeout=2),
            ):
                pass
            assert time.monotonic() - t0 < 15


def test_cli_reports_through_the_cluster(data: tuple[Path, Path], dask_cluster: Cluster) -> None:
    folder, lake = data
    args = ["--kpi", "accepted_items,on_time_ratio,transit_hours_p90", "--by", "product",
            "--format", "csv"]  # fmt: skip
    dask = subprocess.run(
        [str(BIN / "kpi"), "report", str(lake), "--engine", "dask",
         "--scheduler", dask_cluster.address, *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    q = KpiQuery(kpis=("accepted_items", "on_time_ratio", "transit_hours_p90"), by=("product",))
    one = to_bytes(single_process(folder, q), "csv").decode()
    assert dask.stdout == one and dask.stdout.count("\n") == 4


def test_a_worker_killed_mid_run_changes_nothing(
    data: tuple[Path, Path], dask_cluster: Cluster, client: Client
) -> None:
    # Last in the file: it leaves the module's cluster with one worker.
    folder, lake = data
    q = QUESTIONS[2]
    expected = single_process(folder, q)
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["frame"] = cluster.report(lake, q, client)
        except Exception as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    victim = dask_cluster.workers[0]
    deadline = time.monotonic() + 60
    # Kill as soon as the cluster holds tasks (running, or results kept in memory).
    while time.monotonic() < deadline and thread.is_alive():
        if any(client.processing().values()) or any(client.has_what().values()):  # type: ignore[no-untyped-call]
            break
        time.sleep(0.005)
    assert thread.is_alive(), "the run ended before the worker could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    thread.join(timeout=120)
    assert "error" not in result, result.get("error")
    assert_frame_equal(result["frame"], expected, rel_tol=1e-9, abs_tol=1e-9)  # type: ignore[arg-type]
    assert len(client.scheduler_info()["workers"]) == 1  # type: ignore[no-untyped-call]
