"""The benchmark's DuckDB SQL gives the same numbers as the polars KPI functions.

Keeps ``bench/duckdb_kpis.sql`` honest: on a small synthetic folder both SQL variants
(``lean`` and the one with validation and de-duplication) must match the polars
report exactly (floats to 1e-9 relative), and on a folder with messy rows (padded
strings, aliases, rejects, conflicting duplicate event ids, ties) the validating
variant must still match.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

pytest.importorskip("duckdb")

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_report.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clean_dir(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    bench.synth_dataset(out, items=3_000, days=10, seed=7)
    return out


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _events(rows: list[dict[str, Any]]) -> pl.DataFrame:
    columns = ("event_id", "item_id", "event", "ts", "facility", "product", "origin",
               "destination", "promised_by", "reason")  # fmt: skip
    schema: dict[str, Any] = dict.fromkeys(columns, pl.String)
    schema["ts"] = schema["promised_by"] = pl.Datetime("us", "UTC")
    return pl.DataFrame([{c: r.get(c) for c in columns} for r in rows], schema=schema)


def _ev(
    event_id: str, item: str, event: str, ts: str, facility: str | None = "DO-SH-001", **kw: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": event_id,
        "item_id": item,
        "event": event,
        "ts": _utc(ts),
        "facility": facility,
    }
    if event.strip().lower() in ("accepted", "ema"):
        row |= {"product": "standard", "origin": "CN-BJ", "destination": "CN-SH"}
    if event.strip().lower() in ("delivery_failed", "emh"):
        row["reason"] = "addressee_absent"
    return row | kw


@pytest.fixture(scope="module")
def messy_dir(clean_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean folder plus files of awkward rows, read before and after the others."""
    out = tmp_path_factory.mktemp("messy")
    for sub in ("events", "complaints"):
        (out / sub).mkdir()
        for f in (clean_dir / sub).iterdir():
            (out / sub / f.name).write_bytes(f.read_bytes())
    (out / "facilities.csv").write_bytes((clean_dir / "facilities.csv").read_bytes())
    first_clean = pl.read_parquet(sorted((clean_dir / "events").iterdir())[0])
    accepted = first_clean.filter(pl.col("event") == "accepted").row(0, named=True)
    early = [  # read first: wins over the same event_id in the generated files
        {**accepted, "product": "express", "destination": "CN-XZ"},
        _ev("X-1", "MESSY-A", "accepted", "2027-01-11T01:00:00"),
        _ev("X-1", "MESSY-A", "accepted", "2027-01-11T00:00:00"),  # duplicate id: dropped
    ]
    late = [
        {**accepted, "product": "economy"},  # duplicate of a generated event: dropped
        _ev("X-2", "  MESSY-B ", " Accepted ", "2027-01-12T03:00:00", origin=" CN-SH"),
        _ev("X-3", "MESSY-B", "ema", "2027-01-12T03:00:00", product="express"),  # tie: X-2 < X-3
        _ev("X-4", "MESSY-B", "EMB", "2027-01-13T05:00:00", "PC-SH-01"),
        _ev(
            "X-5", "MESSY-B", "arrived", "2027-01-13T05:00:00", "PC-SH-02"
        ),  # tie: greater facility
        _ev("X-6", "MESSY-C", "delivered ", "2027-01-12T09:00:00"),  # never accepted
        _ev("X-7", "MESSY-C", "EMH", "2027-01-12T09:00:00"),  # attempt tie: failure first
        _ev("  ", "MESSY-D", "accepted", "2027-01-12T09:00:00"),  # blank id: rejected
        _ev("X-8", "MESSY-D", "teleported", "2027-01-12T09:00:00"),  # unknown event
        _ev("X-9", "MESSY-D", "arrived", "2027-01-12T09:00:00", facility=None),  # no facility
        _ev("X-10", "MESSY-D", "accepted", "2027-01-12T09:00:00", product=None),
        _ev("X-11", "MESSY-D", "delivery_failed", "2027-01-12T10:00:00", reason=" "),
        _ev(
            "X-12",
            "MESSY-E",
            "accepted",
            "2027-01-14T10:00:00",
            promised_by=_utc("2027-01-15T00:00:00"),
        ),
        _ev("X-13", "MESSY-E", "delivered", "2027-01-15T10:00:00"),
    ]
    _events(early).write_parquet(out / "events" / "0000-early.parquet")
    _events(late).write_parquet(out / "events" / "zzzz-late.parquet")
    complaints = pl.read_parquet(clean_dir / "complaints" / "complaints.parquet")
    extra = complaints.head(3).with_columns(
        pl.col("category").str.to_uppercase().str.pad_start(9),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("updated_at"),  # older than any version
        pl.lit(True).alias("valid"),
    )
    pl.concat([extra, complaints.slice(3)], how="vertical").write_parquet(
        out / "complaints" / "complaints.parquet"
    )
    return out


def _assert_same(bench: ModuleType, data: Path, lean: bool) -> None:
    ours = bench.run_polars(data)
    theirs = bench.run_duckdb(data, lean=lean)
    assert set(ours) == set(theirs) == {"default", "grouped"}
    for name in ours:
        assert ours[name].height > 0
        assert bench.compare_answers(ours[name], theirs[name]) == [], name


@pytest.mark.parametrize("lean", [False, True], ids=["validating", "lean"])
def test_sql_matches_polars_on_generated_data(
    bench: ModuleType, clean_dir: Path, lean: bool
) -> None:
    _assert_same(bench, clean_dir, lean)


def test_validating_sql_matches_polars_on_messy_rows(bench: ModuleType, messy_dir: Path) -> None:
    _assert_same(bench, messy_dir, lean=False)
    # The messy rows are really there: the lean SQL (no validation) disagrees.
    ours = bench.run_polars(messy_dir)["default"]
    lean = bench.run_duckdb(messy_dir, lean=True)["default"]
    assert bench.compare_answers(ours, lean) != []


def test_compare_answers_reports_differences(bench: ModuleType) -> None:
    a = pl.DataFrame({"k": ["x", "y"], "n": [1, 2], "r": [0.5, None]})
    assert bench.compare_answers(a, a) == []
    assert bench.compare_answers(a, a.with_columns(pl.col("n") + 1))
    assert bench.compare_answers(a, a.with_columns(pl.col("r") * 1.001))
    assert bench.compare_answers(a, a.head(1))


def test_summary_pairs_the_interleaved_runs(bench: ModuleType) -> None:
    """Medians per engine, and the spread of same-round ratios (hand-computed)."""

    def run(engine: str, seconds: float, rss: float) -> Any:
        return bench.Run(engine, seconds, 2 * seconds, rss, {})

    runs = [
        *(run("polars", 3.0, 800), run("duckdb-lean", 4.0, 900)),  # round 1: 0.75
        *(run("polars", 2.0, 700), run("duckdb-lean", 4.0, 1000)),  # round 2: 0.50
        *(run("polars", 4.5, 750), run("duckdb-lean", 5.0, 950)),  # round 3: 0.90
    ]
    table = bench.summarize(runs, ["polars", "duckdb-lean"])
    lean = table["duckdb-lean"]
    assert lean["median_s"] == 4.0 and lean["median_peak_rss_mb"] == 950
    assert lean["time_ratio_polars_over_this"] == 3.0 / 4.0
    assert lean["rss_ratio_polars_over_this"] == 750 / 950
    assert lean["time_ratio_paired_min_max"] == [0.5, 0.9]
    assert table["polars"]["time_ratio_paired_min_max"] == [1.0, 1.0]
