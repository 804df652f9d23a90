"""API test fixtures: a generated data folder, a hand-written one, and client factories."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from kpi.api import Settings, create_app
from kpi.api.settings import ApiKey, Role, hash_key
from kpi.contract import COMPLAINT_CATEGORIES
from kpi.kpis.query import Snapshot
from kpi.simulate import SimConfig, generate, write_data_folder
from kpi.sources.folder import load_data_dir

# Keys used by the auth tests: secret -> (name, role, regions).
KEYS: dict[str, tuple[str, Role, tuple[str, ...] | None]] = {
    "reader-secret": ("analyst", Role.READER, None),
    "gd-secret": ("guangdong", Role.READER, ("CN-GD",)),
    "admin-secret": ("ops-admin", Role.ADMIN, None),
}


def api_keys() -> tuple[ApiKey, ...]:
    """The test keys as they would be stored in a config file (hashed)."""
    return tuple(
        ApiKey(name=name, sha256=hash_key(secret), role=role, regions=regions)
        for secret, (name, role, regions) in KEYS.items()
    )


def _extra_complaints(events: pl.DataFrame) -> pl.DataFrame:
    """Complaints about generated items (the generator makes few in a short run)."""
    acc = events.filter(pl.col("event") == "accepted").sort("item_id").head(80)
    n = acc.height
    opened = acc["ts"] + pl.Series([dt.timedelta(hours=30 + 7 * i) for i in range(n)])
    resolved = [
        (o + dt.timedelta(hours=20 * (i % 12))) if i % 3 else None
        for i, o in enumerate(opened.to_list())
    ]
    fmt = "%Y-%m-%dT%H:%M:%S%:z"
    return pl.DataFrame(
        {
            "complaint_id": [f"XC{i:05d}" for i in range(n)],
            "opened_at": opened.dt.strftime(fmt),
            "category": [COMPLAINT_CATEGORIES[i % 5] for i in range(n)],
            "item_id": acc["item_id"],
            "region": acc["destination"].cast(pl.String),
            "product": acc["product"].cast(pl.String),
            "valid": ["true" if i % 2 else "false" for i in range(n)],
            "resolved_at": pl.Series(resolved, dtype=pl.Datetime("us", "UTC")).dt.strftime(fmt),
            "updated_at": opened.dt.strftime(fmt),
        }
    )


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``kpi simulate --items 3000 --days 10 --seed 7`` plus a batch of extra complaints."""
    out = tmp_path_factory.mktemp("sim")
    result = generate(SimConfig(items=3000, days=10, seed=7))
    write_data_folder(result, out)
    _extra_complaints(result.events).write_csv(out / "complaints" / "extra.csv")
    return out


@pytest.fixture(scope="session")
def sim_snapshot(sim_dir: Path) -> Snapshot:
    """The engine's snapshot of the generated folder (the reference for parity)."""
    return Snapshot.from_dataset(load_data_dir(sim_dir))


HAND_FACILITIES = """facility,name,type,region,backlog_threshold
CO-BJ,Beijing collection,collection,CN-BJ,
PC-GD,Guangzhou hub,processing,CN-GD,1
DO-GD,Guangzhou delivery,delivery,CN-GD,
DO-SH,Shanghai delivery,delivery,CN-SH,5
"""

EVENT_HEADER = "event_id,item_id,event,ts,facility,product,origin,destination,promised_by,reason"


def _acc(i: str, ts: str, dest: str, promised: str) -> str:
    return f"{i}-0,{i},accepted,{ts},CO-BJ,express,CN-BJ,{dest},{promised},"


HAND_EVENTS = [
    EVENT_HEADER,
    # To CN-GD: on time, late by 25 h, delivered exactly at the promise, still waiting.
    _acc("GD1", "2026-03-01T01:00:00Z", "CN-GD", "2026-03-03T00:00:00Z"),
    "GD1-1,GD1,arrived,2026-03-01T12:00:00Z,DO-GD,,,,,",
    "GD1-2,GD1,delivered,2026-03-02T10:00:00Z,DO-GD,,,,,",
    _acc("GD2", "2026-03-01T02:00:00Z", "CN-GD", "2026-03-03T00:00:00Z"),
    "GD2-1,GD2,delivery_failed,2026-03-02T09:00:00Z,DO-GD,,,,,addressee_absent",
    "GD2-2,GD2,delivered,2026-03-04T01:00:00Z,DO-GD,,,,,",
    _acc("GD3", "2026-03-01T03:00:00Z", "CN-GD", "2026-03-03T00:00:00Z"),
    "GD3-1,GD3,delivered,2026-03-03T00:00:00Z,DO-GD,,,,,",
    _acc("GD4", "2026-03-03T00:00:00Z", "CN-GD", "2026-03-06T00:00:00Z"),
    "GD4-1,GD4,arrived,2026-03-04T12:00:00Z,PC-GD,,,,,",
    # To CN-SH: on time, and one overdue item waiting at the delivery office.
    _acc("SH1", "2026-03-01T04:00:00Z", "CN-SH", "2026-03-03T00:00:00Z"),
    "SH1-1,SH1,delivered,2026-03-02T08:00:00Z,DO-SH,,,,,",
    _acc("SH2", "2026-03-01T05:00:00Z", "CN-SH", "2026-03-02T00:00:00Z"),
    "SH2-1,SH2,arrived,2026-03-02T06:00:00Z,DO-SH,,,,,",
    # The last scan of the folder sets the default as-of: 2026-03-05T00:00:00Z.
    _acc("SH3", "2026-03-05T00:00:00Z", "CN-SH", "2026-03-08T00:00:00Z"),
]

HAND_COMPLAINTS = """complaint_id,opened_at,category,item_id,region,product,valid,resolved_at,updated_at
C1,2026-03-03T06:00:00Z,delay,GD2,CN-GD,express,true,,2026-03-03T06:00:00Z
C2,2026-03-02T06:00:00Z,delay,SH2,CN-SH,express,false,2026-03-02T18:00:00Z,2026-03-02T18:00:00Z
"""


def write_hand_folder(root: Path) -> Path:
    """The hand-written folder whose answers the tests know by heart."""
    (root / "events").mkdir(parents=True)
    (root / "complaints").mkdir()
    (root / "facilities.csv").write_text(HAND_FACILITIES)
    (root / "events" / "day1.csv").write_text("\n".join(HAND_EVENTS) + "\n")
    (root / "complaints" / "complaints.csv").write_text(HAND_COMPLAINTS)
    return root


@pytest.fixture
def hand_dir(tmp_path: Path) -> Path:
    """A fresh copy of the hand-written folder (tests may append to it)."""
    return write_hand_folder(tmp_path / "hand")


@pytest.fixture(scope="session")
def hand_dir_shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-written folder, shared read-only between tests."""
    return write_hand_folder(tmp_path_factory.mktemp("hand") / "data")


ClientFactory = Callable[..., Any]


@contextmanager
def api_client(data_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """A TestClient over ``data_dir`` with the data loaded before the first request."""
    app = create_app(Settings(data_dir=data_dir, **settings), wait_for_data=True)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def sim_client(sim_dir: Path) -> Iterator[TestClient]:
    """One client over the generated folder, auth off (the demo configuration)."""
    with api_client(sim_dir) as client:
        yield client


@pytest.fixture(scope="session")
def hand_client(hand_dir_shared: Path) -> Iterator[TestClient]:
    """One client over the hand-written folder, auth off."""
    with api_client(hand_dir_shared) as client:
        yield client


@pytest.fixture(scope="session")
def auth_client(hand_dir_shared: Path) -> Iterator[TestClient]:
    """A client over the hand-written folder with keys configured (auth on)."""
    with api_client(hand_dir_shared, api_keys=api_keys(), docs_require_key=True) as client:
        yield client


def copy_folder(src: Path, dst: Path) -> Path:
    """A writable copy of a data folder."""
    shutil.copytree(src, dst)
    return dst
