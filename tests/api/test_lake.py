"""The API over a lake answers as the API over the folder it was compacted from.

The folder path is the reference (it loads the raw events); the lake path starts from
the per-bucket lifecycle tables and reads events only for the drill-downs that need
them, from the bucket(s) they need.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from kpi.api import Settings
from kpi.api.store import build_generation, fingerprint
from kpi.kpis.query import KpiQuery
from kpi.lake import DEFAULT_BUCKETS, Manifest, bucket_of, compact
from kpi.lake_snapshot import LakeReader, start_reading
from kpi.lake_tables import STATE_DIR, TABLES
from tests.api.conftest import api_client
from tests.api.test_parity import CASES, MID, body_of, same_rows

BUCKETS = 8


@pytest.fixture(scope="module")
def sim_lake(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated folder compacted into a lake of 8 buckets."""
    lake = tmp_path_factory.mktemp("lake") / "lake"
    compact(sim_dir, lake, buckets=BUCKETS)
    return lake


@pytest.fixture(scope="module")
def lake_client(sim_lake: Path) -> Iterator[TestClient]:
    with api_client(sim_lake) as client:
        yield client


def _get(client: TestClient, url: str, **params: Any) -> dict[str, Any]:
    r = client.get(url, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    body.pop("data_version", None)  # a folder and a lake are different versions
    return body


def _same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got.keys() == expected.keys()
    for key, value in got.items():
        if key == "data":
            assert same_rows(value, expected["data"]), key
        else:
            assert value == expected[key], key


def test_the_lake_generation_holds_no_events(lake_client: TestClient) -> None:
    gen = lake_client.app.state.store.gen  # type: ignore[attr-defined]
    assert gen.events is None and gen.reader is not None


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c.get("measures") or ["all"])[:40])
def test_kpis_equal_the_folder(
    sim_client: TestClient, lake_client: TestClient, case: dict[str, Any]
) -> None:
    body = body_of(case)
    expected = sim_client.post("/api/v1/query", json=body)
    got = lake_client.post("/api/v1/query", json=body)
    assert expected.status_code == got.status_code == 200, got.text
    e, g = expected.json(), got.json()
    assert e["total"] > 0 or case.get("measures") == ["open_complaints", "overdue_complaints"]
    e.pop("data_version"), g.pop("data_version")
    _same(g, e)


DRILLS: list[tuple[str, dict[str, Any]]] = [
    ("/api/v1/late-items", {"limit": 5000}),
    ("/api/v1/late-items", {"limit": 5000, "as_of": MID.isoformat(), "kind": "overdue"}),
    ("/api/v1/backlog", {"limit": 5000}),
    ("/api/v1/backlog", {"limit": 5000, "as_of": MID.isoformat(), "region": "CN-GD"}),
    ("/api/v1/legs", {"limit": 5000}),
    ("/api/v1/legs", {"limit": 5000, "as_of": MID.isoformat(), "min_hours": 6}),
    ("/api/v1/complaints", {"limit": 5000}),
]


@pytest.mark.parametrize(("url", "params"), DRILLS, ids=[f"{u}-{len(p)}" for u, p in DRILLS])
def test_drill_downs_equal_the_folder(
    sim_client: TestClient, lake_client: TestClient, url: str, params: dict[str, Any]
) -> None:
    expected = _get(sim_client, url, **params)
    assert expected["total"] > 0
    _same(_get(lake_client, url, **params), expected)


def _items(sim_lake: Path, n: int) -> list[str]:
    ids = LakeReader.open(sim_lake).tables().state["item_id"].sort()
    return ids.gather_every(max(1, ids.len() // n)).to_list()[:n]


def test_items_equal_the_folder(
    sim_client: TestClient, lake_client: TestClient, sim_lake: Path
) -> None:
    items = _items(sim_lake, 25)
    for item in items:
        for as_of in (None, MID.isoformat()):
            params = {"as_of": as_of} if as_of else {}
            r0 = sim_client.get(f"/api/v1/items/{item}", params=params)
            r1 = lake_client.get(f"/api/v1/items/{item}", params=params)
            assert r0.status_code == r1.status_code, (item, as_of)
            if r0.status_code == 200:
                b0, b1 = r0.json(), r1.json()
                b0.pop("data_version"), b1.pop("data_version")
                assert b1 == b0
                assert len(b1["events"]) > 0
    assert lake_client.get("/api/v1/items/NOSUCHITEM").status_code == 404


def _corrupt(lake: Path, keep_bucket: int | None) -> int:
    """Overwrite every event part outside ``keep_bucket`` with garbage; how many."""
    manifest = Manifest.load(lake)
    assert manifest is not None
    n = 0
    for bucket, files in manifest.bucket_parts(lake).items():
        if bucket == keep_bucket:
            continue
        for f in files:
            f.write_bytes(b"not parquet at all")
            n += 1
    return n


def test_item_drill_down_reads_only_its_bucket(
    sim_client: TestClient, sim_lake: Path, tmp_path: Path
) -> None:
    lake = shutil.copytree(sim_lake, tmp_path / "lake")
    item = _items(sim_lake, 5)[2]
    bucket = bucket_of(item, BUCKETS)
    reader = LakeReader.open(lake)
    parts = reader.item_parts(item)
    assert parts and all(f"bucket={bucket:02d}/" in p for p in parts)
    with api_client(lake) as client:
        # Every other bucket unreadable after the load: the item is still answered.
        assert _corrupt(lake, keep_bucket=bucket) > 0
        got = client.get(f"/api/v1/items/{item}")
        assert got.status_code == 200, got.text
        expected = sim_client.get(f"/api/v1/items/{item}").json()
        body = got.json()
        body.pop("data_version"), expected.pop("data_version")
        assert body == expected
        # The corruption is real: an item of another bucket gets a clear error.
        other = next(i for i in _items(sim_lake, 40) if bucket_of(i, BUCKETS) != bucket)
        bad = client.get(f"/api/v1/items/{other}")
        assert bad.status_code == 503
        assert "lake cannot be read" in bad.json()["detail"]


def test_backlog_and_late_items_read_no_event(
    sim_client: TestClient, sim_lake: Path, tmp_path: Path
) -> None:
    lake = shutil.copytree(sim_lake, tmp_path / "lake")
    with api_client(lake) as client:
        assert _corrupt(lake, keep_bucket=None) > 0
        for url in ("/api/v1/backlog", "/api/v1/late-items"):
            _same(_get(client, url, limit=5000), _get(sim_client, url, limit=5000))


def test_parts_not_in_the_tables_yet_are_merged(
    sim_client: TestClient, sim_lake: Path, tmp_path: Path
) -> None:
    """Tables behind the manifest (a crash after its commit): readers still see every event."""
    lake = shutil.copytree(sim_lake, tmp_path / "lake")
    (lake / TABLES).unlink()
    shutil.rmtree(lake / STATE_DIR)
    with api_client(lake) as client:
        for case in CASES[:4]:
            e = sim_client.post("/api/v1/query", json=body_of(case)).json()
            g = client.post("/api/v1/query", json=body_of(case)).json()
            e.pop("data_version"), g.pop("data_version")
            _same(g, e)


def test_a_new_compaction_is_a_new_version(sim_dir: Path, tmp_path: Path) -> None:
    data = shutil.copytree(sim_dir, tmp_path / "data")
    lake = tmp_path / "lake"
    late = sorted((data / "events").iterdir())[-1]
    held = late.rename(tmp_path / late.name)
    compact(data, lake, buckets=DEFAULT_BUCKETS)
    with api_client(lake, watch_interval_seconds=0) as client:
        before = client.get("/readyz").json()
        held.rename(data / "events" / held.name)
        compact(data, lake, buckets=DEFAULT_BUCKETS)
        r = client.post("/api/v1/admin/reload")
        assert r.status_code == 200 and r.json()["changed"] is True
        after = client.get("/readyz").json()
    assert after["items"] >= before["items"]
    assert after["as_of"] > before["as_of"]
    expected = pl.read_parquet(data / "events" / held.name).select(pl.col("ts").max()).item()
    assert dt.datetime.fromisoformat(after["as_of"]) == expected


def test_a_read_begun_before_start_up_serves_only_its_own_version(
    sim_lake: Path, tmp_path: Path
) -> None:
    # `kpi api` starts reading a lake before importing the web stack (`start_reading`).
    lake = tmp_path / "lake"
    shutil.copytree(sim_lake, lake)
    settings = Settings(data_dir=lake)
    fresh = build_generation(settings, fingerprint(lake))
    start = start_reading(lake).result(timeout=300)
    used = build_generation(settings, fingerprint(lake), start)
    assert used.default is start.default and used.reader is start.reader
    assert used.version == fresh.version
    assert used.default.lifecycle.equals(fresh.default.lifecycle)
    assert used.known == fresh.known
    # Another as-of asked: the early read (as of the last event) is not that snapshot.
    mid = fresh.default.as_of - dt.timedelta(days=3)
    other = build_generation(Settings(data_dir=lake, as_of=mid), fingerprint(lake), start)
    assert other.default is not start.default and other.default.as_of == mid
    # The lake committed a new version after the read began: the load reads it again.
    stamp = (lake / TABLES).stat().st_mtime_ns
    os.utime(lake / TABLES, ns=(stamp + 10**9, stamp + 10**9))
    again = build_generation(settings, fingerprint(lake), start)
    assert again.default is not start.default and again.version != fresh.version
    assert again.default.lifecycle.equals(fresh.default.lifecycle)


FLOW_QUESTIONS = [
    ("on_time_ratio", "destination", "day", "Asia/Shanghai"),
    ("accepted_items", "product", "hour", "Asia/Kolkata"),
    ("first_attempt_ratio", "region", "week", "America/New_York"),
    ("returned_items", "origin", None, "UTC"),
]


@pytest.mark.parametrize(("kpi", "by", "granularity", "tz"), FLOW_QUESTIONS)
def test_the_hour_counts_answer_as_the_rows(
    lake_client: TestClient, kpi: str, by: str, granularity: str | None, tz: str
) -> None:
    gen = lake_client.app.state.store.gen  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while not gen.default._hour_counts:  # built in the background after the load
        assert time.monotonic() < deadline, "the hour counts were not built"
        time.sleep(0.05)
    end = gen.default.as_of + dt.timedelta(microseconds=1)
    q = KpiQuery(
        kpis=(kpi,),
        by=(by,),
        start=end - dt.timedelta(days=9, minutes=17),
        end=end,
        granularity=granularity,
        tz=tz,
    )
    got = gen.default.query(q)
    want = replace(gen.default).query(q)  # not prepared: grouped on the rows, as text
    assert got.height > 0 and got.equals(want)
