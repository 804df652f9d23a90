"""The API's numbers are exactly the engine's (``Snapshot.query``) and ``kpi report``'s."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kpi.kpis.query import KpiQuery, Snapshot
from kpi.sources.folder import load_data_dir
from kpi_cli.app import app

UTC = dt.UTC
# The generated folder covers 2027-01-11 .. 2027-01-21 (Asia/Shanghai).
FROM = dt.datetime(2027, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=8)))
TO = dt.datetime(2027, 1, 19, tzinfo=dt.timezone(dt.timedelta(hours=8)))
MID = dt.datetime(2027, 1, 16, 12, tzinfo=UTC)

CASES: list[dict[str, Any]] = [
    {"measures": [], "dimensions": []},
    {"measures": [], "dimensions": ["region"]},
    {
        "measures": ["on_time_ratio", "delivered_items", "transit_hours_p90", "late_2d_items"],
        "dimensions": ["destination"],
        "granularity": "day",
        "tz": "Asia/Shanghai",
    },
    {
        "measures": ["on_time_ratio", "within_72h_ratio"],
        "dimensions": ["product", "origin"],
        "from": FROM,
        "to": TO,
    },
    {
        "measures": [
            "backlog_items",
            "backlog_oldest_hours",
            "backlog_over_threshold",
            "backlog_threshold_items",
        ],
        "dimensions": ["facility"],
    },
    {
        "measures": ["backlog_items", "backlog_items_ge_48h"],
        "dimensions": ["facility_type", "product"],
    },
    {
        "measures": ["complaints", "complaints_per_million", "resolved_within_7d_ratio"],
        "dimensions": ["region", "category"],
        "granularity": "week",
    },
    {"measures": ["complaints_per_million", "valid_complaints"], "dimensions": ["category"]},
    {"measures": ["in_network_items", "overdue_items", "stalled_items"], "dimensions": ["product"]},
    {"measures": ["open_complaints", "overdue_complaints"], "dimensions": ["category"]},
    {
        "measures": ["accepted_items", "first_attempt_ratio"],
        "granularity": "hour",
        "from": FROM,
        "to": FROM + dt.timedelta(days=1),
    },
    {
        "measures": ["on_time_ratio", "backlog_items", "in_network_items"],
        "dimensions": ["region"],
        "as_of": MID,
    },
    {
        "measures": ["delivered_items"],
        "dimensions": ["origin", "destination"],
        "granularity": "month",
        "tz": "America/New_York",
    },
]


def body_of(case: dict[str, Any]) -> dict[str, Any]:
    """The POST /query body of a case."""
    body: dict[str, Any] = {
        "measures": case.get("measures", []),
        "dimensions": case.get("dimensions", []),
        "limit": 10_000,
    }
    if case.get("granularity"):
        body["time_dimension"] = {"granularity": case["granularity"], "tz": case.get("tz", "UTC")}
    for key in ("from", "to", "as_of"):
        if key in case:
            body[key] = case[key].isoformat()
    body["filters"] = case.get("filters", [])
    return body


def engine_query(case: dict[str, Any], by: list[str] | None = None) -> KpiQuery:
    """The same question for ``Snapshot.query``."""
    return KpiQuery(
        kpis=tuple(case.get("measures", [])) or None,
        by=tuple(by if by is not None else case.get("dimensions", [])),
        start=case.get("from"),
        end=case.get("to"),
        granularity=case.get("granularity"),
        tz=case.get("tz", "UTC"),
    )


def as_json(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows the way the API serialises them (orjson: ISO timestamps with offset)."""
    rows: list[dict[str, Any]] = orjson.loads(orjson.dumps(frame.to_dicts()))
    return rows


def same_rows(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    """Equal rows: keys, order, strings, integers and nulls exactly; floats to 1e-12."""
    # Means are float sums whose last bit depends on the row order polars' group-by
    # happens to produce; two builds of the engine's own snapshot differ there too.
    if len(got) != len(expected):
        return False
    for a, b in zip(got, expected, strict=True):
        if list(a) != list(b):
            return False
        for k, va in a.items():
            vb = b[k]
            if isinstance(va, float) and isinstance(vb, float):
                if not math.isclose(va, vb, rel_tol=1e-12):
                    return False
            elif va != vb or type(va) is not type(vb):
                return False
    return True


@pytest.fixture(scope="module")
def snapshots(sim_dir: Path, sim_snapshot: Snapshot) -> dict[dt.datetime | None, Snapshot]:
    """Engine snapshots for the default as-of and MID."""
    return {None: sim_snapshot, MID: Snapshot.from_dataset(load_data_dir(sim_dir), MID)}


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        "-".join(c.get("measures") or ["all"])[:40] + "/" + ",".join(c.get("dimensions", []))
    ),
)
def test_query_matches_engine(
    sim_client: TestClient, snapshots: dict[dt.datetime | None, Snapshot], case: dict[str, Any]
) -> None:
    """POST /query returns exactly Snapshot.query's rows, in its order, with its columns."""
    expected = snapshots[case.get("as_of")].query(engine_query(case))
    r = sim_client.post("/api/v1/query", json=body_of(case))
    assert r.status_code == 200, r.text
    got = r.json()
    assert [c["name"] for c in got["columns"]] == expected.columns
    assert got["total"] == expected.height
    assert same_rows(got["data"], as_json(expected))
    assert got["as_of"] == (case.get("as_of") or snapshots[None].as_of).isoformat()


@pytest.mark.parametrize(
    "case", [c for c in CASES if len(c.get("measures", [])) == 1 or c is CASES[2]][:4]
)
def test_get_kpi_matches_post_query(sim_client: TestClient, case: dict[str, Any]) -> None:
    """GET /kpis/{name} and POST /query agree for the same question."""
    name = (case.get("measures") or ["on_time_ratio"])[0]
    params: list[tuple[str, str]] = [("by", ",".join(case.get("dimensions", [])))]
    if case.get("granularity"):
        params += [("granularity", case["granularity"]), ("tz", case.get("tz", "UTC"))]
    params += [(k, case[k].isoformat()) for k in ("from", "to", "as_of") if k in case]
    params.append(("limit", "10000"))
    got = sim_client.get(f"/api/v1/kpis/{name}", params=params)
    posted = sim_client.post("/api/v1/query", json=body_of(case | {"measures": [name]}))
    assert got.status_code == posted.status_code == 200, got.text
    assert got.json() == posted.json()


FILTER_CASES = [
    ("on_time_ratio,transit_hours_p50,delivered_items", ["product"], "region", "CN-GD"),
    ("on_time_ratio,accepted_items", [], "destination", "CN-BJ"),
    ("on_time_ratio", ["destination"], "origin", "CN-SH"),
    ("complaints,complaints_per_million,resolved_within_7d_ratio", ["category"], "region", "CN-GD"),
    ("complaints,complaints_per_million", ["region"], "product", "express"),
    ("complaints_per_million,valid_complaints", [], "category", "delay"),
    (
        "backlog_items,backlog_oldest_hours,backlog_over_threshold,backlog_threshold_items",
        [],
        "region",
        "CN-GD",
    ),
    (
        "backlog_items,backlog_over_threshold,backlog_threshold_items",
        ["region"],
        "product",
        "standard",
    ),
    ("backlog_items,backlog_items_lt_6h", ["product"], "facility_type", "delivery"),
    ("in_network_items,overdue_items", ["product"], "region", "CN-SC"),
    ("open_complaints,overdue_complaints", [], "region", "CN-GD"),
]


@pytest.mark.parametrize(("measures", "by", "dim", "value"), FILTER_CASES)
def test_filter_equals_grouped_row(
    sim_client: TestClient,
    sim_snapshot: Snapshot,
    measures: str,
    by: list[str],
    dim: str,
    value: str,
) -> None:
    """A filter d = x gives the rows d = x of the question also grouped by d (d dropped)."""
    names = measures.split(",")
    case = {"measures": names, "dimensions": by}
    grouped = sim_snapshot.query(engine_query(case, [*by, dim]))
    expected = grouped.filter(pl.col(dim) == value).drop(dim)
    assert expected.height > 0, "pick a value that has data"
    body = body_of(case) | {"filters": [{"dimension": dim, "op": "equals", "values": [value]}]}
    r = sim_client.post("/api/v1/query", json=body)
    assert r.status_code == 200, r.text
    assert same_rows(r.json()["data"], as_json(expected))


def test_filters_on_grouped_dimension_keep_rows(
    sim_client: TestClient, sim_snapshot: Snapshot
) -> None:
    """in / not_in on a grouped dimension keep exactly the matching rows of the unfiltered answer."""
    case = {"measures": ["on_time_ratio", "backlog_items", "complaints"], "dimensions": ["region"]}
    full = sim_snapshot.query(engine_query(case))
    picked = ["CN-GD", "CN-BJ", "CN-XZ"]
    for op, cond in (
        ("in", pl.col("region").is_in(picked)),
        ("not_in", ~pl.col("region").is_in(picked)),
    ):
        body = body_of(case) | {"filters": [{"dimension": "region", "op": op, "values": picked}]}
        r = sim_client.post("/api/v1/query", json=body)
        assert r.status_code == 200, r.text
        assert same_rows(
            r.json()["data"], as_json(full.filter(cond & pl.col("region").is_not_null()))
        )


def test_order_and_paging(sim_client: TestClient, sim_snapshot: Snapshot) -> None:
    """order sorts the whole answer (nulls last); limit/offset page it; total counts all rows."""
    case = {"measures": ["on_time_ratio"], "dimensions": ["destination"]}
    full = sim_snapshot.query(engine_query(case)).sort(
        "on_time_ratio", descending=True, nulls_last=True, maintain_order=True
    )
    pages = []
    for offset in range(0, full.height, 7):
        r = sim_client.get(
            "/api/v1/kpis/on_time_ratio",
            params={
                "by": "destination",
                "order": "on_time_ratio:desc",
                "limit": 7,
                "offset": offset,
            },
        )
        body = r.json()
        assert body["total"] == full.height and body["limit"] == 7 and body["offset"] == offset
        pages += body["data"]
    assert same_rows(pages, as_json(full))


def _normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Timestamps as instants, so '...T00:00:00+08:00' and '...T00:00:00.000000+08:00' compare."""
    out = []
    for row in rows:
        norm = dict(row)
        if isinstance(norm.get("period"), str):
            norm["period"] = dt.datetime.fromisoformat(norm["period"])
        out.append(norm)
    return out


@pytest.mark.parametrize(
    "case",
    [CASES[1], CASES[2], CASES[4], CASES[6]],
    ids=["all-by-region", "daily", "backlog", "complaints"],
)
def test_api_matches_kpi_report_cli(
    sim_client: TestClient, sim_dir: Path, case: dict[str, Any]
) -> None:
    """`kpi report --format json` prints the same rows as the API answers."""
    args = ["report", str(sim_dir), "--format", "json"]
    if case.get("measures"):
        args += ["--kpi", ",".join(case["measures"])]
    if case.get("dimensions"):
        args += ["--by", ",".join(case["dimensions"])]
    if case.get("granularity"):
        args += ["--granularity", case["granularity"], "--tz", case.get("tz", "UTC")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = orjson.loads(result.stdout)
    r = sim_client.post("/api/v1/query", json=body_of(case))
    assert same_rows(_normalise(r.json()["data"]), _normalise(printed))


def _kpi(client: TestClient, name: str, **params: Any) -> Any:
    r = client.get(f"/api/v1/kpis/{name}", params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"][0][name]


def test_drilldown_totals_match_kpis(sim_client: TestClient) -> None:
    """Backlog, late-items and complaints totals equal the KPIs they drill into."""
    total = lambda url, **p: sim_client.get(url, params=p | {"limit": 1}).json()["total"]  # noqa: E731
    assert total("/api/v1/backlog") == _kpi(sim_client, "backlog_items")
    assert total("/api/v1/backlog", region="CN-GD") == _kpi(
        sim_client, "backlog_items", region="CN-GD"
    )
    assert total("/api/v1/backlog", product="express") == _kpi(
        sim_client, "backlog_items", product="express"
    )
    assert total("/api/v1/late-items", kind="overdue") == _kpi(sim_client, "overdue_items")
    window = {"from": FROM.isoformat(), "to": TO.isoformat()}
    late = sum(
        _kpi(sim_client, k, **window)
        for k in ("late_1d_items", "late_2d_items", "late_3d_plus_items")
    )
    assert total("/api/v1/late-items", kind="delivered_late", **window) == late
    assert total("/api/v1/complaints", open="true") == _kpi(sim_client, "open_complaints")
    assert total("/api/v1/complaints", region="CN-GD", open="true") == _kpi(
        sim_client, "open_complaints", region="CN-GD"
    )
    window_c = {"from": FROM.isoformat(), "to": TO.isoformat()}
    assert total("/api/v1/complaints", **window_c) == _kpi(sim_client, "complaints", **window_c)


def test_backlog_is_oldest_first(sim_client: TestClient) -> None:
    """Backlog rows come oldest first and respect min_age_hours."""
    rows = sim_client.get("/api/v1/backlog", params={"limit": 500, "min_age_hours": 12}).json()[
        "data"
    ]
    ages = [r["age_hours"] for r in rows]
    assert ages == sorted(ages, reverse=True) and min(ages) >= 12
