"""``--engine dask`` answers exactly as one process, for every KPI of the catalog.

Three data sets, each compacted into a lake of 8 buckets: hidden-edge-style cases
(boundaries at +-1 us of cut-offs, promises, age bands and the 7-day complaint deadline,
ties at one instant, an unlisted facility, complaint versions, stage targets), the Olist
slice (real orders nobody here wrote) and the simulator's scenario (with bad rows).
Each is asked every KPI ungrouped, every dimension alone (every KPI that supports it),
pairs, every granularity in several time zones, an as-of inside the data and an
explicit window. The reference is the single-process engine on the folder; floats must
agree to 1e-9. One real cluster (scheduler + 2 workers) serves the whole module.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import yaml
from clusterkit import Cluster
from conftest import Kit, Row
from distributed import Client
from polars.testing import assert_frame_equal
from test_reference import BASE, FACILITIES, REGIONS, STEPS, edge_cases
from test_steps import EDGE_COMPLAINTS, EDGE_EVENTS, EDGE_FACILITIES

import kpi.simulate as sim
from kpi import cluster
from kpi.kpis.catalog import ALL_DIMS, GRANULARITIES, KPIS, KpiError
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.lake import compact
from kpi.sources.folder import load_data_dir
from kpi.standards import DEFAULT_STANDARDS
from tests.olist import olist_folder

ZONES = ("UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata")
US = dt.timedelta(microseconds=1)


def _edge_plans() -> list[tuple[object, ...]]:
    """Boundary cases of every kind, product and offset, drawn deterministically."""
    plans: list[tuple[object, ...]] = []
    kinds = ("late", "wait", "complaint", "tie")
    for i, (kind, product) in enumerate(
        itertools.product(kinds, ("express", "standard", "economy"))
    ):
        for k in range(4):
            jitter = (dt.timedelta(0), US, -US)
            fac = (*FACILITIES, "X9")
            plans.append(
                (kind, product, REGIONS[i % 4], REGIONS[(i + k) % 4], (3 * i + k) % 15, k,
                 jitter[(i + k) % 3], jitter[(i + 2 * k) % 3],
                 (STEPS[(i + k) % 8], fac[k % 5]), (STEPS[(i + 2 * k + 1) % 8], fac[(i + k + 1) % 5]))
            )  # fmt: skip
    return plans


def edge_folder(target: Path) -> Path:
    """The hand-placed edge cases of the step and reference tests as a data folder."""
    as_of = BASE + dt.timedelta(days=20)
    events, complaints = edge_cases(_edge_plans(), as_of)
    facilities: list[Row] = [
        *EDGE_FACILITIES,
        Kit.facility("F3", type="delivery", region="CN-BJ", threshold=1),
        Kit.facility("F4", type="collection", region="CN-GD", threshold=0),
        Kit.facility("C1", type="collection", region="CN-BJ"),
        Kit.facility("D1", type="delivery", region="CN-XZ", threshold=2),
    ]
    (target / "events").mkdir(parents=True)
    (target / "complaints").mkdir()
    Kit.events([*EDGE_EVENTS, *events]).collect().write_parquet(target / "events" / "e.parquet")
    Kit.complaints([*EDGE_COMPLAINTS, *complaints]).collect().write_parquet(
        target / "complaints" / "c.parquet"
    )
    Kit.facilities(facilities).write_csv(target / "facilities.csv")
    standards = DEFAULT_STANDARDS.model_dump(mode="json", exclude_none=True)
    standards["stages"] = {"dwell_hours": {"processing": 6, "default": 12},
                           "leg_hours": {"default": 10}}  # fmt: skip
    (target / "service-standards.yaml").write_text(yaml.safe_dump(standards))
    return target


def scenario_folder(target: Path) -> Path:
    cfg = sim.SimConfig(items=500, days=5, seed=7, bad_rows=0.01)
    sim.write_data_folder(sim.generate(cfg), target)
    return target


FOLDERS = {"edge": edge_folder, "olist": olist_folder, "scenario": scenario_folder}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with Cluster(tmp_path_factory.mktemp("dask")) as c, c.client() as client:
        yield client


def questions() -> list[KpiQuery]:
    """Every KPI ungrouped; every dimension alone and in pairs; every granularity and zone."""
    qs = [KpiQuery()]
    qs += [KpiQuery(by=(d,)) for d in ALL_DIMS]
    pairs = [("product", "destination"), ("facility", "product"), ("region", "category"),
             ("from_region", "to_region"), ("facility_type", "region")]  # fmt: skip
    qs += [KpiQuery(by=p) for p in pairs]
    for g, tz in zip(GRANULARITIES, ZONES, strict=True):
        qs.append(KpiQuery(granularity=g, tz=tz))
    for d, g, tz in zip(("region", "facility", "origin", "to_region", "category"),
                        (*GRANULARITIES, "day"), ("Asia/Kolkata", *ZONES[:-1], "UTC"), strict=True):  # fmt: skip
        qs.append(KpiQuery(by=(d,), granularity=g, tz=tz))
    return qs


def _same(got: pl.DataFrame, expected: pl.DataFrame, what: str) -> None:
    try:
        assert_frame_equal(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


@pytest.mark.parametrize("name", list(FOLDERS))
def test_every_kpi_as_one_process(
    name: str, client: Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = FOLDERS[name](tmp_path_factory.mktemp(name))
    lake = tmp_path_factory.mktemp(f"{name}-lake")
    compact(folder, lake, buckets=8)
    snap = Snapshot.from_dataset(load_data_dir(folder))
    seen: set[str] = set()
    non_null: set[str] = set()
    for q in questions():
        try:
            expected = snap.query(q)
        except KpiError as exc:  # a question the catalog refuses: the cluster refuses it too
            with pytest.raises(KpiError, match=str(exc)[:40].replace("[", r"\[")):
                cluster.report(lake, q, client)
            continue
        _same(cluster.report(lake, q, client), expected, f"{name} {q}")
        seen |= set(expected.columns)
        non_null |= {c for c in expected.columns if expected[c].null_count() < expected.height}
    assert {k.name for k in KPIS} <= seen  # the whole catalog was compared
    # An as-of inside the data (snapshots move) and an explicit window.
    assert snap.first_event_at is not None
    mid = snap.first_event_at + (snap.as_of - snap.first_event_at) * 0.6
    inside = Snapshot.from_dataset(load_data_dir(folder), mid)
    for q in (KpiQuery(), KpiQuery(by=("region",)), KpiQuery(by=("facility",))):
        _same(cluster.report(lake, q, client, mid), inside.query(q), f"{name} as of {mid} {q}")
    window = KpiQuery(start=snap.first_event_at + dt.timedelta(hours=30), end=mid,
                      granularity="day", tz="Asia/Shanghai")  # fmt: skip
    _same(cluster.report(lake, window, client), snap.query(window), f"{name} {window}")
    if name == "edge":  # the edge cases give every KPI a value somewhere, not only nulls
        assert {k.name for k in KPIS} - non_null == set()
