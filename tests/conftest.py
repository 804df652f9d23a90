"""Shared fixtures: small hand-written data folders in every supported format."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest

from kpi.contract import EVENT_SCHEMA
from tests import kafkakit

if TYPE_CHECKING:
    from distributed import Client

    from tests.kpi.clusterkit import Cluster

EVENT_COLUMNS = tuple(EVENT_SCHEMA)


def write_rows(
    path: Path,
    rows: list[dict[str, str | None]],
    columns: tuple[str, ...] = EVENT_COLUMNS,
    typed: bool = False,
) -> Path:
    """Write string rows as CSV, JSONL, JSONL.gz or Parquet by the file's suffix.

    Columns are text, except with ``typed``: timestamps of the event schema are then
    parsed into UTC timestamps (typed Parquet, as producers write it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(
        [{c: r.get(c) for c in columns} for r in rows], schema=dict.fromkeys(columns, pl.String)
    )
    if typed:
        frame = frame.with_columns(
            pl.col(c).str.to_datetime(time_zone="UTC", time_unit="us")
            for c, t in EVENT_SCHEMA.items()
            if c in columns and isinstance(t, pl.Datetime)
        )
    name = path.name
    if name.endswith(".csv"):
        frame.write_csv(path)
    elif name.endswith(".jsonl.gz"):
        path.write_bytes(gzip.compress(frame.write_ndjson().encode()))
    elif name.endswith(".jsonl"):
        frame.write_ndjson(path)
    elif name.endswith(".parquet"):
        frame.write_parquet(path)
    else:
        raise ValueError(name)
    return path


@pytest.fixture
def rows_writer(tmp_path: Path) -> Callable[[str, list[dict[str, str | None]]], Path]:
    """Write rows into ``tmp_path/<relative path>`` in the format its suffix names."""

    def write(rel: str, rows: list[dict[str, str | None]]) -> Path:
        return write_rows(tmp_path / rel, rows)

    return write


def _run_root(config: pytest.Config) -> Path:
    """The run's base temp dir, shared by the pytest-xdist workers (each has a subdir)."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return Path(base.parent if hasattr(config, "workerinput") else base)


@pytest.fixture(scope="session")
def kafka(request: pytest.FixtureRequest) -> kafkakit.KafkaBroker:
    """The session's real Kafka broker (one for all workers; see tests/kafkakit.py)."""
    return kafkakit.shared_broker(_run_root(request.config))


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Only the controlling process (no workerinput) knows that every worker is done.
    if not hasattr(session.config, "workerinput"):
        kafkakit.stop_shared(_run_root(session.config))


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real Dask scheduler on 127.0.0.1 for one test module (workers per client)."""
    from tests.kpi.clusterkit import Cluster  # noqa: PLC0415 (distributed: only where used)

    with Cluster(tmp_path_factory.mktemp("dask")) as c:
        yield c


@pytest.fixture(scope="module")
def dask_client(dask_cluster: Cluster) -> Iterator[Client]:
    """A client of ``dask_cluster`` with its two worker processes."""
    with dask_cluster.client() as client:
        yield client
