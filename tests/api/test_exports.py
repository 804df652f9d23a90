"""CSV, Parquet and Arrow exports read back with polars equal the JSON answer."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

QUERY = {
    "measures": ["on_time_ratio", "delivered_items", "transit_hours_mean"],
    "dimensions": ["destination"],
    "time_dimension": {"granularity": "day", "tz": "Asia/Shanghai"},
    "limit": 50,
    "offset": 10,
}
MEDIA = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}


def from_json(body: dict[str, Any]) -> pl.DataFrame:
    """The JSON answer as a frame typed by its column metadata."""
    types = {"string": pl.String, "integer": pl.Int64, "number": pl.Float64, "boolean": pl.Boolean}
    cols = body["columns"]
    frame = pl.DataFrame(
        body["data"],
        schema={c["name"]: types.get(c["type"], pl.String) for c in cols},
        orient="row",
    )
    stamps = [c["name"] for c in cols if c["type"] == "datetime"]
    return frame.with_columns(
        pl.col(c).map_elements(dt.datetime.fromisoformat, return_dtype=pl.Datetime("us", "UTC"))
        for c in stamps
    )


def read(fmt: str, content: bytes) -> pl.DataFrame:
    """Read an export back; CSV timestamps are parsed from their ISO text with offset."""
    if fmt == "parquet":
        return pl.read_parquet(io.BytesIO(content))
    if fmt == "arrow":
        return pl.read_ipc_stream(io.BytesIO(content))
    frame = pl.read_csv(io.BytesIO(content), schema_overrides={"destination": pl.String})
    return frame.with_columns(pl.col("period").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z"))


def utc(frame: pl.DataFrame) -> pl.DataFrame:
    """Timestamps in UTC (the instants must match; the zone label may differ)."""
    return frame.with_columns(
        pl.col(c).dt.convert_time_zone("UTC")
        for c, t in frame.schema.items()
        if isinstance(t, pl.Datetime)
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_export_round_trip(sim_client: TestClient, fmt: str) -> None:
    """The same page in each format (by `format` and by Accept) equals the JSON answer."""
    body = sim_client.post("/api/v1/query", json=QUERY).json()
    expected = utc(from_json(body))
    by_param = sim_client.post("/api/v1/query", json=QUERY | {"format": fmt})
    by_accept = sim_client.post("/api/v1/query", json=QUERY, headers={"Accept": MEDIA[fmt]})
    for r in (by_param, by_accept):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(MEDIA[fmt])
        assert r.headers["x-total-count"] == str(body["total"])
        assert r.headers["x-data-version"] == body["data_version"]
        got = utc(read(fmt, r.content))
        assert got.columns == expected.columns
        assert got.equals(expected), (got, expected)
    if fmt != "csv":
        # The binary formats keep the bucket's own time zone.
        assert read(fmt, by_param.content).schema["period"] == pl.Datetime("us", "Asia/Shanghai")


def test_get_endpoints_export(sim_client: TestClient) -> None:
    """Drill-downs and GET /kpis/{name} export too."""
    for url in (
        "/api/v1/backlog",
        "/api/v1/late-items",
        "/api/v1/complaints",
        "/api/v1/kpis/backlog_items",
    ):
        r = sim_client.get(url, params={"format": "parquet", "limit": 20})
        assert r.status_code == 200, url
        frame = pl.read_parquet(io.BytesIO(r.content))
        js = sim_client.get(url, params={"limit": 20}).json()
        assert frame.height == len(js["data"]) and frame.columns == [
            c["name"] for c in js["columns"]
        ]


def test_accept_quality_values(sim_client: TestClient) -> None:
    """The best supported Accept type wins; unknown types fall back to JSON."""
    r = sim_client.get(
        "/api/v1/kpis/backlog_items",
        headers={"Accept": "text/csv;q=0.5, application/vnd.apache.parquet"},
    )
    assert r.headers["content-type"] == MEDIA["parquet"]
    r = sim_client.get("/api/v1/kpis/backlog_items", headers={"Accept": "image/png"})
    assert r.headers["content-type"] == "application/json"
