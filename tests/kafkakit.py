"""A real Apache Kafka broker for tests: KRaft mode, one node, 127.0.0.1 only, free ports.

The broker's jars come from Maven Central through ``tools/kafka/pom.xml`` into a cache
directory named after the pom's hash (``make kafka-jars`` fills it; ``make test`` depends
on it) and run on the machine's Java 17. Typical use::

    from tests import kafkakit

    with kafkakit.run_kafka(tmp_path) as broker:
        broker.create_topic("postal.events", partitions=8)
        ... broker.bootstrap ...

A broker takes several seconds to start, so the tests share one per session:
``shared_broker`` (the ``kafka`` fixture in ``tests/conftest.py``) starts it under a file
lock the first time any pytest-xdist worker asks, the other workers connect to the same one,
and the controlling process kills it at the end of the run (``stop_shared``). Tests keep
apart by using their own topic and group names (``unique``).

``require_kafka`` skips a test when Java or the jars are missing, except under CI (``CI``
set), where that is a broken machine and fails the test instead.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.netkit import free_port
from tests.promkit import wait_for

REPO = Path(__file__).resolve().parents[1]
POM = REPO / "tools" / "kafka" / "pom.xml"
#: Broker heap: the tests' topics hold a few MB.
HEAP = "-Xmx384m"
#: Start-up costs more than throughput in tests: the client compiler only, one GC thread.
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto")
#: Settings that make a one-node broker usable: replication factors of 1, and groups that
#: rebalance without the default 3 s wait and accept the tests' short session timeouts.
BROKER_SETTINGS = {
    "num.partitions": "8",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "message.max.bytes": str(16 * 1024 * 1024),
    "log.retention.hours": "-1",
}
LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


def jars_dir() -> Path:
    """Where ``make kafka-jars`` puts the broker's classpath (``KAFKA_LIBS`` overrides)."""
    override = os.environ.get("KAFKA_LIBS")
    if override:
        return Path(override)
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "postal-kpi" / f"kafka-{digest}"


def missing() -> str | None:
    """Why a broker cannot start here (no java, no jars), or None."""
    if shutil.which("java") is None:
        return "java not installed (make kafka-jars installs openjdk-17-jre-headless)"
    if not (jars_dir() / ".complete").exists():
        return f"Kafka jars missing in {jars_dir()} (run `make kafka-jars`)"
    return None


def require_kafka() -> None:
    """Skip the test when no broker can start (fail instead when ``CI`` is set)."""
    reason = missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def unique(prefix: str) -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class KafkaBroker:
    """A running single-node broker (broker and controller in one JVM)."""

    pid: int
    port: int
    workdir: Path

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for ``bootstrap.servers``."""
        return f"127.0.0.1:{self.port}"

    def create_topic(self, name: str, partitions: int = 8) -> str:
        """Create ``name`` with ``partitions`` partitions (replication 1); returns the name."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(timeout=30)
        # Metadata reaches the partition leaders a moment after the create returns.
        wait_for(
            lambda: len(admin.list_topics(name, timeout=5).topics[name].partitions) == partitions,
            timeout=20,
            what=f"topic {name} ready",
        )
        return name

    def log(self) -> str:
        """The broker's output so far."""
        path = self.workdir / "kafka.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self) -> bool:
        """Whether the broker's JVM is still running."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """SIGKILL the broker's JVM (tests need no graceful shutdown)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        # Reap it when it is our child; another process's child is reaped by its parent.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _java(workdir: Path, *args: str, fast_start: bool = True) -> list[str]:
    return [
        "java",
        HEAP,
        *(JVM_FLAGS if fast_start else ()),
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={workdir / 'log4j2.yaml'}",
        "-cp",
        f"{jars_dir()}/*",
        *args,
    ]


def _cluster_id() -> str:
    """A KRaft cluster id as Kafka's ``Uuid.randomUuid`` makes one: URL-safe base64 of 16
    random bytes, never starting with "-" (the storage tool would read it as an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def start_kafka(workdir: Path, ready_timeout: float = 90.0, fast_start: bool = True) -> KafkaBroker:
    """Format a KRaft log directory under ``workdir`` and start a broker on free ports.

    ``fast_start`` trades the broker's throughput for a quicker start (tests); benchmarks
    pass False to run it with the JVM's defaults.
    """
    require_kafka()
    workdir.mkdir(parents=True, exist_ok=True)
    port, controller = free_port(), free_port()
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(workdir / "logs"),
        **BROKER_SETTINGS,
    }
    config = workdir / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    (workdir / "log4j2.yaml").write_text(LOG4J2)
    cluster_id = _cluster_id()
    formatted = subprocess.run(
        _java(workdir, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if formatted.returncode != 0:
        raise RuntimeError(f"kafka-storage format failed:\n{formatted.stdout}{formatted.stderr}")
    with (workdir / "kafka.log").open("wb") as log:
        process = subprocess.Popen(
            _java(workdir, "kafka.Kafka", str(config), fast_start=fast_start),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,  # an interrupt of pytest does not reach the broker half-way
        )
    broker = KafkaBroker(process.pid, port, workdir)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"kafka exited with {process.returncode}:\n{broker.log()[-3000:]}")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except Exception:  # KafkaException while the listener is not up yet
            return False

    try:
        wait_for(ready, timeout=ready_timeout, interval=0.5, what="kafka broker ready")
    except BaseException:
        broker.stop()
        raise
    return broker


@contextlib.contextmanager
def run_kafka(workdir: Path, fast_start: bool = True) -> Iterator[KafkaBroker]:
    """``start_kafka`` as a context manager that always kills the broker."""
    broker = start_kafka(workdir, fast_start=fast_start)
    try:
        yield broker
    finally:
        broker.stop()


# --- one broker per test session, across pytest-xdist workers ---------------------------


def _record(root: Path) -> Path:
    return root / "kafka-broker.json"


def shared_broker(root: Path) -> KafkaBroker:
    """The session's broker under ``root`` (the run's base temp dir), started on first use."""
    require_kafka()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "kafka-broker.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = _record(root)
        if record.exists():
            data = json.loads(record.read_text())
            broker = KafkaBroker(int(data["pid"]), int(data["port"]), Path(data["workdir"]))
            if broker.alive():
                return broker
        broker = start_kafka(root / "kafka-broker")
        record.write_text(
            json.dumps({"pid": broker.pid, "port": broker.port, "workdir": str(broker.workdir)})
        )
        return broker


def stop_shared(root: Path) -> None:
    """Kill the session's broker if one was started under ``root``."""
    record = _record(root)
    if not record.exists():
        return
    data = json.loads(record.read_text())
    KafkaBroker(int(data["pid"]), int(data["port"]), Path(data["workdir"])).stop()
    record.unlink()
