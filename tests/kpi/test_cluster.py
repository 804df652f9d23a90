"""``--engine dask``: a real local Dask cluster (scheduler + two workers) answers as one process.

The tests start ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (free
ports), compare the cluster's answer with the single-process engine on the folder the
lake was compacted from, kill a worker with SIGKILL mid-run, and shut everything down.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from clusterkit import BIN, Cluster
from distributed import Client
from polars.testing import assert_frame_equal

import kpi.simulate as sim
from kpi import cluster
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.lake import LakeError, Manifest, compact
from kpi.output import to_bytes
from kpi.sources.folder import load_data_dir
from tests.netkit import free_port

#: Window and snapshot KPIs of every family, in one question.
EVERY_FAMILY = (
    "accepted_items",
    "on_time_ratio",
    "transit_hours_p90",
    "complaints_per_million",
    "backlog_items",
    "backlog_over_threshold",
    "backlog_oldest_hours",
    "in_network_items",
    "open_complaints",
    "dwell_hours_p50",
    "leg_hours_mean",
    "first_mile_hours_p90",
    "last_mile_hours_p50",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, lake): a small simulated scenario with bad rows, and its lake."""
    folder = tmp_path_factory.mktemp("data")
    cfg = sim.SimConfig(items=600, days=6, seed=11, bad_rows=0.01)
    sim.write_data_folder(sim.generate(cfg), folder)
    lake = tmp_path_factory.mktemp("lake")
    compact(folder, lake, buckets=8)
    return folder, lake


def single_process(folder: Path, q: KpiQuery) -> pl.DataFrame:
    return Snapshot.from_dataset(load_data_dir(folder)).query(q)


QUESTIONS = [
    KpiQuery(),  # the whole catalog
    KpiQuery(by=("product", "destination")),
    KpiQuery(by=("origin",), granularity="day", tz="Asia/Shanghai"),
    KpiQuery(by=("region",), granularity="week", tz="America/New_York"),
    KpiQuery(by=("facility",)),
]


def test_cluster_answers_as_one_process(data: tuple[Path, Path], dask_client: Client) -> None:
    folder, lake = data
    for q in QUESTIONS:
        expected = single_process(folder, q)
        got = cluster.report(lake, q, dask_client)
        assert expected.height > 0
        assert_frame_equal(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    # With an as-of inside the data and an explicit window too.
    snap = Snapshot.from_dataset(load_data_dir(folder))
    as_of = snap.first_event_at + (snap.as_of - snap.first_event_at) / 2  # type: ignore[operator]
    q = KpiQuery(by=("product",))
    expected = Snapshot.from_dataset(load_data_dir(folder), as_of).query(q)
    assert_frame_equal(
        cluster.report(lake, q, dask_client, as_of), expected, rel_tol=1e-9, abs_tol=1e-9
    )


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


def _copy(lake: Path, tmp_path: Path) -> tuple[Path, Manifest]:
    bad = tmp_path / "lake"
    shutil.copytree(lake, bad)
    manifest = Manifest.load(bad)
    assert manifest is not None
    return bad, manifest


def test_a_lake_missing_a_bucket_is_refused(
    data: tuple[Path, Path], dask_client: Client, tmp_path: Path
) -> None:
    _, lake = data
    bad, manifest = _copy(lake, tmp_path)
    shutil.rmtree(bad / "events" / "bucket=03")
    assert any("bucket=03/" in p for p in manifest.parts)  # the bucket had parts
    with pytest.raises(LakeError, match=r"missing \(bucket\(s\) 03;.*refusing a partial answer"):
        cluster.report(bad, KpiQuery(), dask_client)
    # The command says so and exits 2, no answer on stdout.
    run = subprocess.run(
        [str(BIN / "kpi"), "report", str(bad), "--engine", "dask", "--scheduler", dask_client.scheduler.address,
         "--format", "csv"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and run.stdout == "" and "bucket(s) 03" in run.stderr


def test_a_corrupt_part_is_named_not_skipped(
    data: tuple[Path, Path], dask_client: Client, tmp_path: Path
) -> None:
    _, lake = data
    bad, manifest = _copy(lake, tmp_path)
    victim = next(p for p in manifest.parts if "bucket=05/" in p)
    (bad / victim).write_bytes(b"PAR1 not really parquet")
    with pytest.raises(LakeError, match=rf"bucket 5: lake part .*{victim}.* cannot be read"):
        cluster.report(bad, KpiQuery(kpis=("accepted_items",)), dask_client)
    # A corrupt complaints part too (read by its own task).
    bad2, manifest2 = _copy(lake, tmp_path / "2")
    assert manifest2.complaints is not None
    (bad2 / manifest2.complaints).write_bytes(b"garbage")
    with pytest.raises(LakeError, match=r"complaints .* cannot be read"):
        cluster.report(bad2, KpiQuery(kpis=("open_complaints",)), dask_client)
    # Complaint KPIs not asked: the complaints are not read, the answer is whole.
    q = KpiQuery(kpis=("accepted_items",), by=("product",))
    expected = single_process(data[0], q)
    assert_frame_equal(cluster.report(bad2, q, dask_client), expected)


def test_a_scheduler_without_workers_is_refused_in_time(tmp_path: Path) -> None:
    lone = Cluster(tmp_path, workers=0)
    try:
        lone.client(workers=0).close()  # the scheduler is up and answers
        t0 = time.monotonic()
        with (
            pytest.raises(cluster.ClusterError, match="has no worker"),
            cluster.connect(lone.address, timeout=3),
        ):
            pass
        assert time.monotonic() - t0 < 15  # 3 s for a worker to join, then refused
    finally:
        lone.stop()


def test_cli_reports_through_the_cluster(data: tuple[Path, Path], dask_cluster: Cluster) -> None:
    folder, lake = data
    args = ["--kpi", ",".join(EVERY_FAMILY), "--format", "csv"]
    dask = subprocess.run(
        [str(BIN / "kpi"), "report", str(lake), "--engine", "dask",
         "--scheduler", dask_cluster.address, *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    one = single_process(folder, KpiQuery(kpis=EVERY_FAMILY))
    # Same columns and values; floats to 1e-9 (a sum combined in another order may differ
    # in its last digit, which the CSV prints).
    assert dask.stdout.count("\n") == 2
    got = pl.read_csv(io.StringIO(dask.stdout))
    want = pl.read_csv(io.BytesIO(to_bytes(one, "csv")))
    assert_frame_equal(got, want, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_a_run_past_its_timeout_fails_naming_what_was_pending(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    # A worker frozen with SIGSTOP holds its tasks forever, and the scheduler still counts
    # it alive (its heartbeats are minutes apart): only the run's own deadline ends the wait.
    _, lake = data
    frozen = Cluster(tmp_path, workers=1)
    try:
        with frozen.client(workers=1) as client:
            [worker] = frozen.workers
            os.kill(worker.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            with pytest.raises(cluster.ClusterError) as info:
                cluster.report(lake, KpiQuery(kpis=("delivered_items",)), client, timeout=3)
            assert time.monotonic() - t0 < 20
            message = str(info.value)
            assert "took longer than 3 s" in message and "no answer" in message
            # What was pending is named: the question sent to the worker, or bucket tasks.
            assert "still pending (" in message
            assert "sending the question" in message or "bucket " in message
            run = subprocess.run(
                [str(BIN / "kpi"), "report", str(lake), "--engine", "dask", "--scheduler",
                 frozen.address, "--kpi", "delivered_items", "--timeout", "3"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert run.returncode == 2, run.stderr
            assert "took longer than 3 s" in run.stderr and run.stdout == ""
    finally:
        for p in frozen.workers:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
        frozen.stop()


def test_a_worker_killed_mid_run_changes_nothing(
    data: tuple[Path, Path], dask_cluster: Cluster, dask_client: Client
) -> None:
    # Last in the file: it leaves the module's cluster with one worker.
    folder, lake = data
    q = QUESTIONS[0]
    expected = single_process(folder, q)
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["frame"] = cluster.report(lake, q, dask_client)
        except Exception as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    victim = dask_cluster.workers[0]
    deadline = time.monotonic() + 60
    # Kill as soon as the cluster holds tasks (running, or results kept in memory).
    while time.monotonic() < deadline and thread.is_alive():
        if any(dask_client.processing().values()) or any(dask_client.has_what().values()):  # type: ignore[no-untyped-call]
            break
        time.sleep(0.005)
    assert thread.is_alive(), "the run ended before the worker could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    thread.join(timeout=120)
    assert "error" not in result, result.get("error")
    assert_frame_equal(result["frame"], expected, rel_tol=1e-9, abs_tol=1e-9)  # type: ignore[arg-type]
    assert len(dask_client.scheduler_info()["workers"]) == 1  # type: ignore[no-untyped-call]
