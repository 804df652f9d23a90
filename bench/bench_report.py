"""Full KPI report, polars vs DuckDB, over the same Parquet data folder.

Usage::

    .venv/bin/python bench/bench_report.py --events 10000000        # ~10 M events
    .venv/bin/python bench/bench_report.py --small                   # quick smoke run
    .venv/bin/python bench/bench_report.py --data DIR --repeat 5     # an existing folder

Each engine runs in its own subprocess (``--engine polars|duckdb --data DIR``) so
peak RSS (``ru_maxrss`` of the child) is per engine; every measurement is repeated
and the median is reported. The two engines' answers are compared before timing.

The data folder comes from ``kpi simulate`` when that command is available, else
from the small synthetic generator below (same schema, same layout).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

ROOT: Final = Path(__file__).resolve().parent.parent
# The repository for ``kpi``, this folder for ``benchkit`` (a test loads this file by path).
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchkit import export_tree  # noqa: E402

from kpi.contract import (  # noqa: E402
    COMPLAINT_CATEGORIES,
    EVENT_SCHEMA,
    PROVINCES,
    s10_check_digit,
)

OUT_DIR: Final = ROOT / "bench" / "out"
SQL_FILE: Final = Path(__file__).resolve().parent / "duckdb_kpis.sql"

# --- synthetic data folder (fallback when ``kpi simulate`` is not available) -------------

_START: Final = dt.datetime(2027, 1, 11, tzinfo=dt.timezone(dt.timedelta(hours=8)))
_PRODUCTS: Final = ("express", "standard", "economy")
_PREFIX: Final = ("EE", "CP", "RR")
_REASONS: Final = ("addressee_absent", "refused", "wrong_address", "office_closed")
_CATEGORIES: Final = COMPLAINT_CATEGORIES
_N_CO: Final = 4
_N_DO: Final = 6
#: Average events per item of the synthetic generator (measured), to size a run by events.
SYNTH_EVENTS_PER_ITEM: Final = 8.2
#: Average events per item of ``kpi simulate`` (``--items 1400000`` gives 11.6 M events).
SIM_EVENTS_PER_ITEM: Final = 8.31


def _facility_ids() -> tuple[list[str], list[str], list[str], list[str | None]]:
    ids: list[str] = []
    types: list[str] = []
    regions: list[str] = []
    thresholds: list[str | None] = []
    for code in PROVINCES:
        short = code[3:]
        for kind, prefix, n in (
            ("processing", "PC", 1),
            ("collection", "CO", _N_CO),
            ("delivery", "DO", _N_DO),
        ):
            for k in range(1, n + 1):
                ids.append(f"{prefix}-{short}-{k:03d}")
                types.append(kind)
                regions.append(code)
                thresholds.append(None if k == 3 else str(200 if prefix == "PC" else 60))
    return ids, types, regions, thresholds


def _s10_ids(serials: np.ndarray, product: np.ndarray) -> pl.Series:
    """Valid S10 ids (check digit included) for integer serials."""
    digits = np.stack([(serials // 10 ** (7 - i)) % 10 for i in range(8)])
    weights = np.array([8, 6, 4, 2, 3, 5, 9, 7])[:, None]
    check = 11 - (digits * weights).sum(axis=0) % 11
    check = np.where(check == 10, 0, np.where(check == 11, 5, check))
    frame = pl.DataFrame({"s": serials, "c": check, "p": np.asarray(_PREFIX)[product]})
    assert s10_check_digit(f"{int(serials[0]):08d}") == int(check[0])
    return frame.select(
        pl.concat_str(
            pl.col("p"),
            pl.col("s").cast(pl.String).str.zfill(8),
            pl.col("c").cast(pl.String),
            pl.lit("CN"),
        )
    ).to_series()


def synth_dataset(out: Path, items: int, days: int = 30, seed: int = 0) -> int:
    """Write a synthetic data folder (events per local day, complaints, facilities); return events."""
    rng = np.random.default_rng(seed)
    start_h = _START.timestamp() / 3600
    end_h = start_h + days * 24
    n = items
    n_reg = len(PROVINCES)
    weights = np.linspace(3.0, 0.2, n_reg) ** 1.5
    product = rng.choice(3, size=n, p=[0.35, 0.5, 0.15])
    origin = rng.choice(n_reg, size=n, p=weights / weights.sum())
    dest = np.where(
        rng.random(n) < 0.28, origin, rng.choice(n_reg, size=n, p=weights / weights.sum())
    )
    same = origin == dest
    acc = np.sort(start_h + rng.random(n) * days * 24)
    u = rng.random((n, 12))
    # slot times (hours since epoch); NaN = no such event
    co_dep = acc + 1 + 7 * u[:, 0]
    arr1 = co_dep + 1 + 2 * u[:, 1]
    dep1 = arr1 + 2 + 4 * u[:, 2]
    trunk = np.where(
        product == 0, 6 + 18 * u[:, 3], np.where(product == 1, 14 + 40 * u[:, 3], 24 + 60 * u[:, 3])
    )
    arr2 = np.where(same, np.nan, dep1 + trunk)
    dep2 = arr2 + 1 + 4 * u[:, 4]
    do_arr = np.where(same, dep1, dep2) + 1 + 3 * u[:, 5]
    ofd1 = do_arr + 2 + 12 * u[:, 6]
    fail1 = u[:, 7] < np.array([0.04, 0.06, 0.08])[product]
    done1 = ofd1 + 0.3 + 4.7 * u[:, 8]
    ofd2 = np.where(fail1, done1 + 18 + 12 * u[:, 9], np.nan)
    fail2 = fail1 & (u[:, 10] < 0.2)
    done2 = ofd2 + 0.3 + 4.7 * u[:, 8]
    delivered = np.where(fail1, np.where(fail2, np.nan, done2), done1)
    returned = np.where(fail2, done2 + 2 + 28 * u[:, 11], np.nan)
    missing_acc = rng.random(n) < 0.01
    slots: list[tuple[str, np.ndarray, str]] = [
        ("accepted", np.where(missing_acc, np.nan, acc), "co"),
        ("departed", co_dep, "co"),
        ("arrived", arr1, "pc1"),
        ("departed", dep1, "pc1"),
        ("arrived", arr2, "pc2"),
        ("departed", dep2, "pc2"),
        ("arrived", do_arr, "do"),
        ("out_for_delivery", ofd1, "do"),
        ("delivery_failed", np.where(fail1, done1, np.nan), "do"),
        ("out_for_delivery", ofd2, "do"),
        ("delivery_failed", np.where(fail2, done2, np.nan), "do"),
        ("delivered", delivered, "do"),
        ("returned", returned, "do"),
    ]
    fac_ids, fac_types, fac_regions, fac_thresholds = _facility_ids()
    per_region = 1 + _N_CO + _N_DO
    co = origin * per_region + 1 + rng.integers(0, _N_CO, n)
    do = dest * per_region + 1 + _N_CO + rng.integers(0, _N_DO, n)
    fac_of = {"co": co, "pc1": origin * per_region, "pc2": dest * per_region, "do": do}
    item_id = _s10_ids(rng.permutation(np.arange(10_000_000, 10_000_000 + n)), product)
    promise = np.where(rng.random(n) < 0.05, acc + 24 * (1 + product) + 12, np.nan)
    reason_idx = rng.choice(4, size=n, p=[0.62, 0.12, 0.16, 0.10])

    parts: list[pl.DataFrame] = []
    for k, (event, t, role) in enumerate(slots):
        keep = ~np.isnan(t) & (np.round(t * 3600) / 3600 < end_h)
        idx = np.nonzero(keep)[0]
        ts_us = (np.round(t[idx] * 3600) * 1_000_000).astype(np.int64)
        acc_row = event == "accepted"
        prom = promise[idx]
        parts.append(
            pl.DataFrame(
                {
                    "_item": idx,
                    "_slot": np.full(len(idx), k, dtype=np.int64),
                    "event": np.full(len(idx), event),
                    "ts": ts_us,
                    "facility": np.asarray(fac_ids)[fac_of[role][idx]],
                    "product": np.asarray(_PRODUCTS)[product[idx]] if acc_row else None,
                    "origin": np.asarray(PROVINCES)[origin[idx]] if acc_row else None,
                    "destination": np.asarray(PROVINCES)[dest[idx]] if acc_row else None,
                    "promised_by": np.where(np.isnan(prom), -1, prom * 3.6e9).astype(np.int64)
                    if acc_row
                    else None,
                    "reason": np.asarray(_REASONS)[reason_idx[idx]]
                    if event == "delivery_failed"
                    else None,
                },
                schema_overrides={
                    "product": pl.String,
                    "origin": pl.String,
                    "destination": pl.String,
                    "promised_by": pl.Int64,
                    "reason": pl.String,
                },
            )
        )
    ev = pl.concat(parts, how="vertical").sort("ts")
    utc = pl.Datetime("us", "UTC")
    ev = ev.with_columns(
        item_id=item_id.gather(ev["_item"]),
        ts=pl.col("ts").cast(utc),
        promised_by=pl.when(pl.col("promised_by") >= 0).then(pl.col("promised_by")).cast(utc),
    ).with_columns(event_id=pl.col("item_id") + "-" + pl.col("_slot").cast(pl.String).str.zfill(2))
    # Re-sent scans: 0.3 % of events appear again (identical) in a later file.
    dup = rng.random(ev.height) < 0.003
    local_day = ((ev["ts"].dt.epoch("s").to_numpy() + 8 * 3600) // 86400).astype(np.int64)
    file_day = np.concatenate([local_day, local_day[dup] + 1])
    ev = pl.concat([ev, ev.filter(pl.Series(dup))], how="vertical").with_columns(
        _day=pl.Series(file_day)
    )
    cols = list(EVENT_SCHEMA)
    events_dir = out / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    for (day,), part in ev.group_by("_day", maintain_order=True):
        name = (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()
        part.select(cols).write_parquet(events_dir / f"{name}.parquet", statistics=True)
    n_events = ev.height

    # Complaints: 0.4 % of items, a fifth of them with a second (resolved) version.
    has_c = np.nonzero(rng.random(n) < 0.004)[0]
    m = len(has_c)
    opened = acc[has_c] + 24 + 200 * rng.random(m)
    ok = opened < end_h
    has_c, opened = has_c[ok], opened[ok]
    m = len(has_c)
    resolved = opened + 2 + 300 * rng.random(m)
    resolved = np.where(resolved < end_h, resolved, np.nan)
    two = rng.random(m) < 0.2
    cid = np.array([f"C{i:08d}" for i in range(m)])

    def _us(h: np.ndarray) -> pl.Series:
        return pl.Series(np.where(np.isnan(h), -1, np.round(h * 3600) * 1e6).astype(np.int64))

    def _frame(sel: np.ndarray, res: np.ndarray, upd: np.ndarray) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "complaint_id": cid[sel],
                "opened_at": _us(opened[sel]),
                "category": np.asarray(_CATEGORIES)[rng.integers(0, 7, len(sel))],
                "item_id": item_id.gather(has_c[sel]),
                "region": np.asarray(PROVINCES)[dest[has_c[sel]]],
                "product": np.asarray(_PRODUCTS)[product[has_c[sel]]],
                "valid": rng.random(len(sel)) < 0.6,
                "resolved_at": _us(res),
                "updated_at": _us(upd),
            }
        )

    everyone = np.arange(m)
    later = np.nonzero(two & ~np.isnan(resolved))[0]
    first = _frame(everyone, np.where(two, np.nan, resolved), opened)
    second = _frame(later, resolved[later], resolved[later])
    complaints = pl.concat([first, second], how="vertical").with_columns(
        pl.when(pl.col(c) >= 0).then(pl.col(c)).cast(utc).alias(c)
        for c in ("opened_at", "resolved_at", "updated_at")
    )
    (out / "complaints").mkdir(parents=True, exist_ok=True)
    complaints.write_parquet(out / "complaints" / "complaints.parquet")
    pl.DataFrame(
        {
            "facility": fac_ids,
            "name": [f"Facility {f}" for f in fac_ids],
            "type": fac_types,
            "region": fac_regions,
            "backlog_threshold": fac_thresholds,
        }
    ).write_csv(out / "facilities.csv")
    return n_events


def simulate_available() -> bool:
    """Whether ``kpi simulate`` can be run in this checkout."""
    kpi_bin = ROOT / ".venv" / "bin" / "kpi"
    if not kpi_bin.exists():
        return False
    probe = subprocess.run(
        [str(kpi_bin), "simulate", "--help"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0 and "--items" in probe.stdout


def count_events(data: Path) -> int:
    """Rows in the events Parquet files (before validation and de-duplication)."""
    return int(pl.scan_parquet(data / "events" / "*.parquet").select(pl.len()).collect().item())


def make_dataset(events: int, seed: int = 0, days: int = 30, force: bool = False) -> Path:
    """A cached data folder of roughly ``events`` events under bench/out/."""
    use_sim = simulate_available()
    per_item = SIM_EVENTS_PER_ITEM if use_sim else SYNTH_EVENTS_PER_ITEM
    items = max(100, round(events / per_item))
    tag = "sim" if use_sim else "synth"
    out = OUT_DIR / f"data-{tag}-{items}-{days}d-s{seed}"
    if out.exists() and (out / ".complete").exists() and not force:
        return out
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if use_sim:
        subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "kpi"),
                "simulate",
                "--out",
                str(out),
                "--items",
                str(items),
                "--days",
                str(days),
                "--seed",
                str(seed),
            ],
            check=True,
        )
    else:
        synth_dataset(out, items, days, seed)
    (out / ".complete").write_text(f"{count_events(out)}\n")
    print(f"generated {out} ({tag}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


# --- the two engines -------------------------------------------------------------------

#: The KPI questions of the report: the default (every KPI) and a grouped variant.
GROUPED_BY: Final = ("destination", "product")
GROUPED_GRANULARITY: Final = "day"
#: Whitespace stripped by polars' ``str.strip_chars()`` that plain data can contain.
_WS: Final = " \t\n\r\x0b\x0c"


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _files_list(paths: list[Path]) -> str:
    return "[" + ", ".join(_q(str(p)) for p in paths) + "]"


def render_sql(
    data: Path, *, lean: bool = False, stall_hours: float = 48.0
) -> list[tuple[str, str]]:
    """The statements of ``duckdb_kpis.sql`` for a data folder, as (name, sql) pairs.

    ``lean`` skips validation and de-duplication of events (trusts clean typed Parquet).
    """
    from string import Template

    from kpi.contract import COMPLAINT_CATEGORIES, EVENT_TYPES, UPU_ALIASES, Kind
    from kpi.sources.folder import FACILITIES_FILE, source_files
    from kpi.standards import load_standards

    standards = load_standards(data)
    names = [(e, e, i) for i, e in enumerate(EVENT_TYPES)]
    names += [(k.lower(), v, EVENT_TYPES.index(v)) for k, v in UPU_ALIASES.items()]
    cals: dict[tuple[tuple[bool, ...], tuple[dt.date, ...]], int] = {}
    std_rows: list[str] = []
    for product, std in standards.products.items():
        mask = (True,) * 6 + (False,) if std.working_days else (True,) * 7
        key = (mask, tuple(sorted(std.holidays)))
        cal = "NULL"
        if key != ((True,) * 7, ()):
            cal = str(cals.setdefault(key, len(cals) + 1))
        std_rows.append(
            f"({_q(product)}, {_q(standards.tz_of(product))}, TIME '{std.cutoff.isoformat()}', "
            f"{std.days.same_region}, {std.days.other_region}, {std.days.remote}, {cal})"
        )
    masks = [
        f"({c}, {dow + 1})" for (mask, _), c in cals.items() for dow, on in enumerate(mask) if on
    ]
    holidays = [f"({c}, DATE '{d.isoformat()}')" for (_, days), c in cals.items() for d in days]
    fac_path = data / FACILITIES_FILE
    facilities = (
        f"read_csv({_q(str(fac_path))}, all_varchar = true, header = true)"
        if fac_path.exists()
        else "(SELECT NULL::VARCHAR AS facility, NULL::VARCHAR AS type, NULL::VARCHAR AS region, "
        "NULL::VARCHAR AS backlog_threshold WHERE false)"
    )
    dedupe_sql = (
        "SELECT * EXCLUDE (_file, _row) FROM lean_events"
        if lean
        else "SELECT unnest(arg_min(validated_events, struct_pack(f := _file, r := _row))) "
        "FROM validated_events GROUP BY event_id"
    )
    values = {
        "ws": _q(_WS),
        "event_names": ", ".join(f"({_q(n)}, {_q(e)}, {s})" for n, e, s in names),
        "events_files": _files_list(source_files(data, Kind.EVENTS)),
        "complaints_files": _files_list(source_files(data, Kind.COMPLAINTS)),
        "dedupe_sql": dedupe_sql,
        "as_of": "NULL::TIMESTAMPTZ",
        "standards": ", ".join(std_rows),
        "week_masks_insert": f"INSERT INTO week_masks VALUES {', '.join(masks)};" if masks else "",
        "holidays_insert": f"INSERT INTO holidays VALUES {', '.join(holidays)};"
        if holidays
        else "",
        "remote_regions": ", ".join(_q(r) for r in standards.remote_regions) or "NULL",
        "stages": "[" + ", ".join(_q(e) for e in EVENT_TYPES) + "]",
        "categories": ", ".join(_q(c) for c in COMPLAINT_CATEGORIES),
        "facilities_source": facilities,
        "stall_hours": repr(float(stall_hours)),
    }
    text = Template(SQL_FILE.read_text()).substitute(values)
    out: list[tuple[str, str]] = []
    for chunk in text.split("\n-- @")[1:]:
        name, _, body = chunk.partition("\n")
        out.append((name.strip(), body))
    return out


def run_duckdb(
    data: Path, *, lean: bool = False, threads: int | None = None
) -> dict[str, pl.DataFrame]:
    """Run the SQL report; answers by query name (``default``, ``grouped``)."""
    import duckdb

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    answers: dict[str, pl.DataFrame] = {}
    for name, sql in render_sql(data, lean=lean):
        if name.startswith("query_"):
            answers[name.removeprefix("query_")] = con.sql(sql).pl()
        else:
            con.execute(sql)
    con.close()
    return answers


def run_polars(
    data: Path,
    stages: dict[str, float] | None = None,
    general: bool = False,
    with_stages: bool = False,
) -> dict[str, pl.DataFrame]:
    """The report through the project's own code path (reader, lifecycle, KPI query).

    ``stages`` (when given) receives the wall time of each step in seconds. With
    ``general`` the state is built from the validated rows even where the typed-Parquet
    fast path (``kpi.state_scan``) applies. Without ``with_stages`` the report is the
    end-to-end one (the stage KPIs of issue 19 left out: the report before them); with
    it, every KPI of the catalog, and the worst hubs and routes by stage.
    """
    from kpi.kpis.catalog import KPIS, STAGE_KPIS
    from kpi.kpis.query import KpiQuery, Snapshot
    from kpi.sources.folder import DataSet, load_data_dir

    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        if stages is not None:
            stages[name] = now - clock
        clock = now

    ds = load_data_dir(data)
    if general:
        ds = DataSet(ds.events, ds.complaints, ds.facilities, ds.standards)  # no event_files
    # As `kpi report` does: a question with stage KPIs keeps the stage scans in the pass.
    snap = Snapshot.from_dataset(ds, stages=with_stages)
    lap("snapshot (read, validate, dedupe, lifecycle)")
    STAGE_NAMES = {k.name for k in STAGE_KPIS}  # noqa: N806
    end_to_end = [k.name for k in KPIS if k.name not in STAGE_NAMES]
    default = snap.query(KpiQuery(kpis=None if with_stages else tuple(end_to_end)))
    lap("query default")
    fits = [k.name for k in KPIS if set(GROUPED_BY) <= set(k.dimensions) and k.windowed]
    grouped = snap.query(
        KpiQuery(
            kpis=tuple(n for n in fits if with_stages or n in end_to_end),
            by=GROUPED_BY,
            granularity=GROUPED_GRANULARITY,
        )
    )
    lap("query grouped")
    answers = {
        "default": default.select(end_to_end),
        "grouped": grouped.select(c for c in grouped.columns if c not in STAGE_NAMES),
    }
    if with_stages:
        answers["dwell"] = snap.query(KpiQuery(kpis=("dwell_hours_p90",), by=("facility",)))
        answers["legs"] = snap.query(
            KpiQuery(kpis=("leg_hours_p90",), by=("from_region", "to_region"))
        )
        lap("query stages by facility and region pair")
    return answers


def compare_answers(ours: pl.DataFrame, theirs: pl.DataFrame, rel: float = 1e-9) -> list[str]:
    """Differences between two answers of the same question (empty when they agree).

    Rows are matched by position after sorting by the key columns (the non-KPI
    string/time columns); integers must be equal, floats equal within ``rel``.
    """
    problems: list[str] = []
    if ours.columns != theirs.columns:
        return [f"columns differ: {ours.columns} vs {theirs.columns}"]
    if ours.height != theirs.height:
        return [f"row counts differ: {ours.height} vs {theirs.height}"]
    try:
        theirs = theirs.cast(dict(ours.schema))  # type: ignore[arg-type]
    except pl.exceptions.PolarsError as exc:
        return [f"cannot cast to our schema: {exc}"]
    keys = [c for c, t in ours.schema.items() if t == pl.String or isinstance(t, pl.Datetime)]
    if keys:
        ours = ours.sort(keys, nulls_last=True)
        theirs = theirs.sort(keys, nulls_last=True)
    for col, dtype in ours.schema.items():
        a, b = ours[col], theirs[col]
        if a.null_count() != b.null_count() or not (a.is_null() == b.is_null()).all():
            problems.append(f"{col}: nulls differ ({a.null_count()} vs {b.null_count()})")
            continue
        if dtype.is_float():
            both = pl.DataFrame({"a": a, "b": b}).drop_nulls()
            bad = both.filter(
                (pl.col("a") - pl.col("b")).abs()
                > rel * pl.max_horizontal(pl.col("a").abs(), pl.col("b").abs(), pl.lit(1.0))
            )
            if bad.height:
                problems.append(f"{col}: {bad.height} values differ, e.g. {bad.row(0)}")
        elif not a.equals(b):
            diff = pl.DataFrame({"a": a, "b": b}).filter(pl.col("a").ne_missing(pl.col("b")))
            problems.append(f"{col}: {diff.height} values differ, e.g. {diff.row(0)}")
    return problems


# --- measuring ----------------------------------------------------------------------------

#: polars = the project's pipeline (the typed-Parquet fast path where its proofs hold);
#: polars-general = the same with the state always built from the validated rows;
#: duckdb = the SQL with the same validation and de-duplication; duckdb-lean = the SQL
#: trusting clean typed Parquet (no validation, no de-duplication), the fastest SQL that
#: gives the same numbers on generator data.
#: polars-stages = polars with every stage KPI of the catalog too (the report after
#: issue 19), plus dwell p90 by facility and leg p90 by region pair.
ENGINES: Final = ("polars", "polars-stages", "polars-general", "duckdb-lean", "duckdb")


#: The children's environment (``--threads`` sets polars' thread pool in it).
CHILD_ENV: Final = dict(os.environ)


@dataclass
class Run:
    """One measured run of one engine in its own process."""

    engine: str
    seconds: float  # wall time of the work inside the child (imports excluded)
    cpu_seconds: float  # user + system CPU time of the whole child process
    peak_rss_mb: float  # ru_maxrss of the child process
    stages: dict[str, float]


def child_main(engine: str, data: Path, out: Path | None) -> None:
    """Run one engine once (in this process) and print its timing as JSON."""
    import duckdb  # noqa: F401  (imported before the clock starts, like polars)

    import kpi.kpis.query  # noqa: F401

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    if engine.startswith("polars"):
        answers = run_polars(
            data,
            stages,
            general=engine == "polars-general",
            with_stages=engine == "polars-stages",
        )
    else:
        answers = run_duckdb(data, lean=engine == "duckdb-lean")
    seconds = time.perf_counter() - t0
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in answers.items():
            frame.write_parquet(out / f"{engine}-{name}.parquet")
    print(json.dumps({"seconds": seconds, "stages": stages}))


def measure(
    engine: str, data: Path, out: Path | None = None, tree: Path | None = None, label: str = ""
) -> Run:
    """Run one engine in a fresh subprocess; wall time, CPU time and peak RSS of that child.

    With ``tree`` (a checkout of another commit) the child is that tree's own copy of this
    script, so it imports that tree's ``kpi``; the run is labelled ``engine@label``."""
    script = (tree / "bench" / "bench_report.py") if tree else Path(__file__).resolve()
    cmd = [sys.executable, str(script), "--child", engine, "--data", str(data)]
    if out is not None:
        cmd += ["--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=CHILD_ENV)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} run failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return Run(
        engine=f"{engine}@{label}" if tree else engine,
        seconds=float(result["seconds"]),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        stages={k: float(v) for k, v in result["stages"].items()},
    )


def check_parity(out: Path, engines: list[str]) -> dict[str, list[str]]:
    """Compare every engine's answers (written by the first runs) with polars'."""
    problems: dict[str, list[str]] = {}
    for engine in engines:
        if engine == "polars":
            continue
        found: list[str] = []
        for name in ("default", "grouped"):
            if not (out / f"{engine}-{name}.parquet").exists():
                continue
            ours = pl.read_parquet(out / f"polars-{name}.parquet")
            theirs = pl.read_parquet(out / f"{engine}-{name}.parquet")
            found += [f"{name}: {p}" for p in compare_answers(ours, theirs)]
        problems[engine] = found
    return problems


def check_old_parity(out: Path, old_out: Path, engines: list[str]) -> list[str]:
    """Compare every answer of this tree with the same engine's answer of the old tree."""
    found: list[str] = []
    for engine in engines:
        for path in sorted(old_out.glob(f"{engine}-*.parquet")):
            if (out / path.name).exists():
                problems = compare_answers(pl.read_parquet(out / path.name), pl.read_parquet(path))
                found += [f"{path.stem}: {p}" for p in problems]
    return found


def old_tree(ref: str) -> Path:
    """A checkout of commit ``ref`` of this repository (``git archive``), made once."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-report-{commit}"
    if not (tree / "bench" / "bench_report.py").exists():
        shutil.rmtree(tree, ignore_errors=True)  # a half-written copy
    return export_tree(commit, tree)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarize(runs: list[Run], engines: list[str]) -> dict[str, dict[str, Any]]:
    """Median time, CPU and peak RSS per engine, and ratios polars / engine."""
    table: dict[str, dict[str, Any]] = {}
    for engine in engines:
        mine = [r for r in runs if r.engine == engine]
        table[engine] = {
            "runs": len(mine),
            "seconds": [round(r.seconds, 3) for r in mine],
            "median_s": _median([r.seconds for r in mine]),
            "median_cpu_s": _median([r.cpu_seconds for r in mine]),
            "median_peak_rss_mb": _median([r.peak_rss_mb for r in mine]),
        }
        # CPU over the end-to-end report of the same tree, per round (same load) too.
        _, at, ref = engine.partition("@")
        base = [r for r in runs if r.engine == "polars" + at + ref]
        if base and mine:
            table[engine]["cpu_over_polars"] = table[engine]["median_cpu_s"] / _median(
                [r.cpu_seconds for r in base]
            )
            table[engine]["cpu_over_polars_per_round"] = [
                round(r.cpu_seconds / b.cpu_seconds, 3) for r, b in zip(mine, base, strict=False)
            ]
        if mine and mine[0].stages:
            table[engine]["stages_median_s"] = {
                k: _median([r.stages[k] for r in mine]) for k in mine[0].stages
            }
    ours = table.get("polars")
    if ours:
        polars_runs = [r for r in runs if r.engine == "polars"]
        for engine, row in table.items():
            row["time_ratio_polars_over_this"] = ours["median_s"] / row["median_s"]
            row["rss_ratio_polars_over_this"] = (
                ours["median_peak_rss_mb"] / row["median_peak_rss_mb"]
            )
            # Runs are interleaved: the i-th runs of two engines saw the same machine
            # load, so their ratios show how much of a median ratio is noise.
            mine = [r for r in runs if r.engine == engine]
            paired = [p.seconds / r.seconds for p, r in zip(polars_runs, mine, strict=False)]
            row["time_ratio_paired_min_max"] = [min(paired), max(paired)] if paired else None
    return table


def print_table(table: dict[str, dict[str, Any]], stream: Any = sys.stdout) -> None:
    """The summary as a markdown table."""
    print(
        "| engine | runs | median time (s) | CPU (s) | peak RSS (MB) | polars time / this "
        "| same-round runs: polars time / this | polars RSS / this "
        "| CPU / polars of the same tree (per round) |",
        file=stream,
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|", file=stream)
    for engine, row in table.items():
        paired = row.get("time_ratio_paired_min_max")
        spread = f"{paired[0]:.2f}-{paired[1]:.2f}" if paired else "-"
        print(
            f"| {engine} | {row['runs']} | {row['median_s']:.2f} | {row['median_cpu_s']:.1f} "
            f"| {row['median_peak_rss_mb']:.0f} | {row.get('time_ratio_polars_over_this', math.nan):.2f} "
            f"| {spread} | {row.get('rss_ratio_polars_over_this', math.nan):.2f} "
            f"| {row.get('cpu_over_polars', math.nan):.2f} "
            f"({', '.join(f'{x:.2f}' for x in row.get('cpu_over_polars_per_round', []))}) |",
            file=stream,
        )
    stages = table.get("polars", {}).get("stages_median_s")
    if stages:
        print(
            "\npolars stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()),
            file=stream,
        )


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) a data folder, check parity, time every engine, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=10_000_000, help="approximate events to generate"
    )
    parser.add_argument(
        "--small", action="store_true", help="200k events, 2 repetitions: a smoke run"
    )
    parser.add_argument("--data", type=Path, help="use this data folder instead of generating one")
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine (median reported)")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument(
        "--old-ref",
        help="also run each polars engine with the code of this commit (git archive), "
        "interleaved, labelled engine@REF, and check its answers equal this tree's",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="POLARS_MAX_THREADS of every child: on a machine loaded far beyond its cores, "
        "1 makes the CPU time the work done rather than threads waiting for a core",
    )
    args = parser.parse_args(argv)
    if args.threads:
        CHILD_ENV["POLARS_MAX_THREADS"] = str(args.threads)
    if args.small:
        args.events, args.repeat = 200_000, 2
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {unknown}")
    data = args.data or make_dataset(args.events, seed=args.seed)
    n_events = count_events(data)
    print(f"data: {data} ({n_events:,} event rows)", file=sys.stderr)
    out = OUT_DIR / "answers" / data.name
    shutil.rmtree(out, ignore_errors=True)
    runs: list[Run] = []
    tree = old_tree(args.old_ref) if args.old_ref else None
    old_out = out / "old"
    olds = [e for e in engines if e.startswith("polars")] if tree else []
    for i in range(args.repeat):
        # Interleaved, so drifting machine load hits every engine (and both trees).
        plan = [(e, None) for e in engines] + [(e, tree) for e in olds]
        for engine, where in plan:
            dest = (old_out if where else out) if i == 0 else None
            run = measure(engine, data, dest, where, args.old_ref or "")
            runs.append(run)
            print(
                f"  run {i + 1}/{args.repeat} {run.engine:12s} {run.seconds:7.2f} s  "
                f"cpu {run.cpu_seconds:6.1f} s  peak RSS {run.peak_rss_mb:7.0f} MB",
                file=sys.stderr,
            )
        if i == 0 and tree:
            found = check_old_parity(out, old_out, olds)
            status = "same numbers" if not found else "DIFFERENT: " + "; ".join(found[:5])
            print(f"parity this tree vs {args.old_ref}: {status}", file=sys.stderr)
            if found:
                return 1
        if i == 0 and "polars" in engines:
            for engine, found in check_parity(out, engines).items():
                status = "same numbers" if not found else "DIFFERENT: " + "; ".join(found[:5])
                print(f"parity polars vs {engine}: {status}", file=sys.stderr)
                if found:
                    return 1
    table = summarize(runs, engines + [f"{e}@{args.old_ref}" for e in olds])
    threads = f", POLARS_MAX_THREADS={args.threads}" if args.threads else ""
    print(
        f"\n{n_events:,} event rows, {os.cpu_count()} cores{threads}, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print_table(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"data": str(data), "events": n_events, "summary": table}, indent=2)
        )
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        _argv = sys.argv
        child_main(
            _argv[_argv.index("--child") + 1],
            Path(_argv[_argv.index("--data") + 1]),
            Path(_argv[_argv.index("--out") + 1]) if "--out" in _argv else None,
        )
    else:
        sys.exit(main())
