"""A real Dask cluster for the tests: ``dask scheduler`` and worker processes on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from distributed import Client

from tests.netkit import free_port

BIN = Path(sys.executable).parent


class Cluster:
    """A scheduler and ``workers`` workers (one thread each), each a real process."""

    def __init__(self, workdir: Path, workers: int = 2) -> None:
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
            for i in range(workers)
        ]

    def client(self, workers: int = 2, timeout: float = 90.0) -> Client:
        client = Client(self.address, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
        if workers:
            client.wait_for_workers(workers, timeout=timeout)  # type: ignore[no-untyped-call]
        return client

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
