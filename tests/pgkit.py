"""A throw-away PostgreSQL server from Debian's package, on 127.0.0.1 and a free port.

Typical use::

    with pgkit.run_postgres() as pg:
        url = pg.create_database("t1")   # postgresql://postgres@127.0.0.1:PORT/t1

PostgreSQL refuses to run as root, and CI runs as root: the cluster then belongs to
the ``postgres`` system user the Debian package creates, and the server runs as that
user (``subprocess`` ``user=``), in its own session so SIGKILL takes every backend.
``require_postgres`` skips a test when the binaries are missing, except under CI.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.netkit import free_port
from tests.promkit import wait_for


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb and postgres (or ``$PG_BINDIR``)."""
    override = os.environ.get("PG_BINDIR")
    candidates = [override] if override else glob.glob("/usr/lib/postgresql/*/bin")
    found = [
        Path(c)
        for c in candidates
        if (Path(c) / "initdb").exists() and (Path(c) / "postgres").exists()
    ]
    return (
        max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
        if found
        else None
    )


def require_postgres() -> Path:
    """The server's bin folder; skips (fails under CI) when PostgreSQL is not installed."""
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server not installed (apt-get install postgresql; make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return bindir


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the ``postgres`` user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and no `postgres` user to run the server as")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    """A running server with trust authentication for ``postgres`` on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        """The server's output so far."""
        path = self.workdir / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGKILL the postmaster and its backends (one session) and reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def run_postgres() -> Iterator[PostgresServer]:
    """initdb a cluster in a fresh temp folder, start it on a free port; removed afterwards."""
    bindir = require_postgres()
    as_user = _run_as()
    # pytest's tmp_path is private to root; the postgres user needs a folder of its own.
    workdir = Path(tempfile.mkdtemp(prefix="pgkit-"))
    data, sockets = workdir / "data", workdir / "run"
    sockets.mkdir()
    if as_user:
        for p in (workdir, sockets):
            os.chown(p, as_user["user"], as_user["group"])
    try:
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, timeout=120, check=False, cwd=workdir, **as_user,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        port = free_port()
        log = (workdir / "postgres.log").open("wb")
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True, **as_user,
        )  # fmt: skip
        log.close()
        server = PostgresServer(process, port, workdir)
        try:
            wait_for(lambda: _ready(server), timeout=60, what="postgres to accept connections")
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _ready(server: PostgresServer) -> bool:
    if server.process.poll() is not None:
        raise RuntimeError(f"postgres exited with {server.process.returncode}:\n{server.log()}")
    try:
        with psycopg.connect(
            f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", connect_timeout=2
        ):
            return True
    except psycopg.OperationalError:
        return False
