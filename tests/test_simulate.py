"""The scenario generator: determinism, schema, plausible routes, visible incidents, bad rows."""

from __future__ import annotations

import csv
import hashlib
import io
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pytest
import typer
import yaml
from typer.testing import CliRunner

from kpi import contract
from kpi import simulate as sim
from kpi.events import EVENT_RULES
from kpi.standards import DEFAULT_STANDARDS, StageTargets, load_standards
from kpi_cli.simulate import ScenarioChoice, parse_start
from kpi_cli.simulate import simulate as simulate_command

ITEMS = 20_000
LOCAL = "Asia/Shanghai"


@pytest.fixture(scope="module")
def result() -> sim.SimResult:
    """A default-scenario run, in memory: big enough for incident statistics."""
    return sim.generate(sim.SimConfig(items=ITEMS, seed=7))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data folder on disk, with text feeds and malformed rows."""
    out = tmp_path_factory.mktemp("sim") / "data"
    sim.write_data_folder(sim.generate(sim.SimConfig(items=3000, seed=3, bad_rows=0.02)), out)
    return out


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _write(out: Path, seed: int) -> dict[str, str]:
    cfg = sim.SimConfig(items=2000, days=10, seed=seed, bad_rows=0.05)
    sim.write_data_folder(sim.generate(cfg), out)
    return _hashes(out)


def _slot(events: pl.DataFrame) -> pl.DataFrame:
    """Events with their lifecycle slot (event id suffix) and facility type (id prefix)."""
    return events.with_columns(
        pl.col("event_id").str.slice(-2).cast(pl.Int64).alias("slot"),
        pl.col("facility").str.slice(0, 2).alias("ftype"),
    )


def _local_day(col: str = "ts") -> pl.Expr:
    return pl.col(col).dt.convert_time_zone(LOCAL).dt.date()


# --- determinism -------------------------------------------------------------------------


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", seed=11)
    assert first == _write(tmp_path / "b", seed=11)
    assert any(k.endswith(".csv") and k.startswith("events/") for k in first)


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", seed=1)
    b = _write(tmp_path / "b", seed=2)
    events = [k for k in a if k.startswith("events/events-")]
    assert events
    assert all(a[k] != b.get(k) for k in events)


def test_rerun_replaces_generated_files(tmp_path: Path) -> None:
    sim.write_data_folder(sim.generate(sim.SimConfig(items=300, days=8, seed=1)), tmp_path)
    sim.write_data_folder(sim.generate(sim.SimConfig(items=300, days=3, seed=1)), tmp_path)
    assert len(list((tmp_path / "events").glob("events-*.parquet"))) <= 4


# --- schema ---------------------------------------------------------------------------------


def test_event_files_have_the_contract_columns(folder: Path) -> None:
    files = sorted((folder / "events").glob("events-*.parquet"))
    assert files and all(f.name.startswith("events-2027-") for f in files)
    expected = {c: (pl.String() if c == "event" else t) for c, t in contract.EVENT_SCHEMA.items()}
    for f in files:
        assert dict(pl.read_parquet_schema(f)) == expected, f.name


def test_complaints_and_facilities_schema(folder: Path) -> None:
    complaints = pl.read_parquet(folder / "complaints" / "complaints.parquet")
    expected = {
        c: (pl.String() if c == "category" else t) for c, t in contract.COMPLAINT_SCHEMA.items()
    }
    assert dict(complaints.schema) == expected
    assert set(complaints["category"].unique()) <= set(contract.COMPLAINT_CATEGORIES)

    facilities = pl.read_csv(folder / "facilities.csv", infer_schema=False)
    assert facilities.columns == list(contract.FACILITY_SCHEMA)
    typed = facilities.with_columns(pl.col("backlog_threshold").cast(pl.Int64))
    assert set(typed["type"]) == set(contract.FACILITY_TYPES)
    assert set(typed["region"]) == set(contract.PROVINCES)
    assert 200 <= typed.height <= 600
    assert 0 < typed["backlog_threshold"].null_count() < 0.1 * typed.height
    assert typed["facility"].str.contains(r"^(PC-[A-Z]{2}-\d{2}|(CO|DO)-[A-Z]{2}-\d{3})$").all()
    per_region = typed.group_by("region", "type").len()
    assert per_region.height == 31 * 3  # every region has every facility type
    # the built-in standard, plus stage targets only (checked in detail below)
    assert load_standards(folder).model_copy(update={"stages": StageTargets()}) == DEFAULT_STANDARDS


#: The event types the simulator emits (its lifecycle slots, ``kpi/simulate/routing.py``),
#: and those of the rules table it does not, with the reason. A new type in kpi/events.py
#: needs one decision here: simulate it (add its slots) or say why not.
SIMULATED = frozenset(
    {
        "accepted",
        "arrived",
        "departed",
        "out_for_delivery",
        "delivery_failed",
        "delivered",
        "returned",
    }
)
NOT_SIMULATED: dict[str, str] = {}


def test_each_type_of_the_rules_table_is_simulated_or_says_why_not() -> None:
    undecided = set(contract.EVENT_TYPES) - SIMULATED - NOT_SIMULATED.keys()
    assert not undecided, f"kpi/events.py types the simulator test does not decide: {undecided}"
    assert not SIMULATED & NOT_SIMULATED.keys()
    assert SIMULATED | NOT_SIMULATED.keys() == set(contract.EVENT_TYPES)  # no stale names
    assert {event for event, _ in sim.SLOTS} == SIMULATED


def test_every_event_type_and_the_required_fields(result: sim.SimResult) -> None:
    ev = result.events
    assert set(ev["event"].unique()) == SIMULATED
    for rule in EVENT_RULES:  # every simulated event carries the fields its type requires
        of_type = ev.filter(pl.col("event") == rule.name)
        assert of_type.height > 0 or rule.name in NOT_SIMULATED, rule.name
        missing = {f: of_type[f].null_count() for f in rule.requires}
        assert not any(missing.values()), (rule.name, missing)
    accepted = ev.filter(pl.col("event") == "accepted")
    assert accepted.height == ITEMS
    manifest = accepted.select("product", "origin", "destination")
    assert sum(manifest.null_count().row(0)) == 0
    assert set(accepted["product"]) == set(sim.PRODUCTS)
    assert ev.filter(pl.col("event") == "delivery_failed")["reason"].null_count() == 0
    assert set(ev["reason"].drop_nulls()) == set(sim.FAILURE_REASONS)
    # Explicit promises: about 5% of accepted events, none elsewhere.
    share = accepted["promised_by"].is_not_null().sum() / ITEMS
    assert 0.03 < share < 0.07
    assert ev.filter(pl.col("event") != "accepted")["promised_by"].null_count() == ev.height - ITEMS
    per_item = ev.height / ITEMS
    assert 6.5 < per_item < 9.5


def test_ids_are_valid_s10_and_unique(result: sim.SimResult) -> None:
    ev = result.events
    items = ev["item_id"].unique()
    assert items.len() == ITEMS
    assert all(contract.s10_valid(i) for i in items.to_list())
    assert set(items.str.slice(0, 2)) == set(sim.S10_PREFIX)
    assert ev["event_id"].n_unique() == ev.height


def test_explicit_promises_follow_the_default_standard(result: sim.SimResult) -> None:
    truth = result.items.filter(pl.col("explicit_promise"))
    given = result.events.filter(pl.col("promised_by").is_not_null())
    joined = given.join(truth, on="item_id", suffix="_truth")
    assert joined.height == given.height
    assert (joined["promised_by"] == joined["promised_by_truth"]).all()
    local = joined["promised_by"].dt.convert_time_zone(LOCAL)
    assert (local.dt.strftime("%H:%M:%S%.6f") == "23:59:59.999999").all()


# --- routes ------------------------------------------------------------------------------------

_ALLOWED = {
    (None, "accepted@CO"),
    ("accepted@CO", "departed@CO"),
    ("departed@CO", "arrived@PC"),
    ("arrived@PC", "departed@PC"),
    ("departed@PC", "arrived@PC"),
    ("departed@PC", "arrived@DO"),
    ("arrived@DO", "out_for_delivery@DO"),
    ("out_for_delivery@DO", "delivered@DO"),
    ("out_for_delivery@DO", "delivery_failed@DO"),
    ("delivery_failed@DO", "out_for_delivery@DO"),
    ("delivery_failed@DO", "returned@DO"),
}


def test_routes_follow_the_lifecycle(result: sim.SimResult) -> None:
    ev = (
        _slot(result.events)
        .sort("item_id", "ts", "slot")
        .with_columns(pl.concat_str("event", pl.lit("@"), "ftype").alias("key"))
        .with_columns(
            pl.col("key").shift(1).over("item_id").alias("prev"),
            pl.col("ts").diff().over("item_id").alias("gap"),
            pl.col("facility").shift(1).over("item_id").alias("prev_facility"),
        )
    )
    pairs = set(ev.select("prev", "key").unique().iter_rows())
    assert pairs <= _ALLOWED, pairs - _ALLOWED
    assert (ev["gap"].drop_nulls() > timedelta(0)).all()
    # A hub's departure is from the hub the item arrived at.
    hub_dep = ev.filter((pl.col("key") == "departed@PC") & (pl.col("prev") == "arrived@PC"))
    assert (hub_dep["facility"] == hub_dep["prev_facility"]).all()
    # Hub-and-spoke: one hub within a region, two between regions.
    hubs = ev.filter(pl.col("key") == "arrived@PC").group_by("item_id").len()
    assert hubs["len"].max() == 2
    first = ev.filter(pl.col("event") == "accepted").select("item_id", "origin", "destination")
    two = hubs.filter(pl.col("len") == 2).join(first, on="item_id")
    assert (two["origin"] != two["destination"]).all()


def test_some_items_are_still_in_the_network(result: sim.SimResult) -> None:
    end = result.config.end
    last = result.events.sort("ts").group_by("item_id").last()
    open_items = last.filter(~pl.col("event").is_in(["delivered", "returned"]))
    assert 0.01 < open_items.height / ITEMS < 0.06
    stale = open_items.filter(pl.col("ts") < end - timedelta(hours=48))
    assert stale.height > 10  # stuck: no scan for two days
    returned = last.filter(pl.col("event") == "returned").height / ITEMS
    assert 0.002 < returned < 0.03


def test_on_time_share_is_plausible(result: sim.SimResult) -> None:
    decided = result.items.filter(pl.col("delivered_at").is_not_null())
    on_time = 1 - decided["late"].mean()  # type: ignore[operator]
    assert 0.85 < on_time < 0.97


# --- volume ----------------------------------------------------------------------------------------


def _daily_accepted(events: pl.DataFrame) -> dict[date, int]:
    acc = events.filter(pl.col("event") == "accepted").group_by(_local_day().alias("d")).len()
    return dict(acc.iter_rows())


def test_festival_surge_then_dip(result: sim.SimResult) -> None:
    daily = _daily_accepted(result.events)
    early = sum(daily[date(2027, 1, 11) + timedelta(days=i)] for i in range(7)) / 7
    surge = sum(daily[date(2027, 1, 27) + timedelta(days=i)] for i in range(6)) / 6
    festival = sum(daily[date(2027, 2, 5) + timedelta(days=i)] for i in range(4)) / 4
    assert surge > 1.3 * early
    assert festival < 0.6 * early


def test_daily_cycle_is_business_hours(result: sim.SimResult) -> None:
    hours = result.events.filter(pl.col("event") == "accepted")["ts"].dt.convert_time_zone(LOCAL)
    share = hours.dt.hour().is_between(8, 19).sum() / hours.len()
    assert share > 0.75


def test_steady_scenario_has_no_surge() -> None:
    events = sim.generate(sim.SimConfig(items=5000, seed=5, scenario="steady")).events
    daily = _daily_accepted(events)
    early = sum(daily[date(2027, 1, 11) + timedelta(days=i)] for i in range(7))
    late = sum(daily[date(2027, 1, 25) + timedelta(days=i)] for i in range(7))
    assert 0.8 < late / early < 1.25


# --- incidents --------------------------------------------------------------------------------------


def _hub_stays(events: pl.DataFrame) -> pl.DataFrame:
    hub = events.filter(
        pl.col("facility").str.starts_with("PC-") & pl.col("event").is_in(["arrived", "departed"])
    )
    return hub.pivot(on="event", index=["item_id", "facility"], values="ts").with_columns(
        ((pl.col("departed") - pl.col("arrived")).dt.total_minutes() / 60).alias("dwell_h")
    )


def test_slow_hub_dwell_and_backlog(result: sim.SimResult) -> None:
    inc = result.incidents
    stays = _hub_stays(result.events).filter(
        pl.col("arrived").is_between(inc.slow_hub_degraded_from, inc.slow_hub_degraded_until)
    )
    slow = stays.filter(pl.col("facility") == sim.INCIDENT_SLOW_HUB)["dwell_h"].median()
    others = stays.filter(pl.col("facility") != sim.INCIDENT_SLOW_HUB)["dwell_h"].median()
    assert isinstance(slow, float) and isinstance(others, float)
    assert slow > 4 * others

    # At the end the hub still holds far more items than its threshold; others do not.
    last = result.events.sort("ts").group_by("item_id").last()
    held = (
        last.filter((pl.col("event") == "arrived") & pl.col("facility").str.starts_with("PC-"))
        .group_by("facility")
        .len()
        .join(result.facilities, on="facility")
    )
    row = held.filter(pl.col("facility") == sim.INCIDENT_SLOW_HUB)
    assert row["len"].item() > 2 * row["backlog_threshold"].item()
    healthy = held.filter(pl.col("facility") != sim.INCIDENT_SLOW_HUB)
    assert (healthy["len"] <= healthy["backlog_threshold"]).all()


def test_delayed_trunk_route(result: sim.SimResult) -> None:
    origin, dest = sim.INCIDENT_ROUTE
    inc = result.incidents
    route = (
        result.events.filter(pl.col("event") == "accepted")
        .filter((pl.col("origin") == origin) & (pl.col("destination") == dest))
        .select("item_id")
    )
    legs = (
        _slot(result.events.join(route, on="item_id"))
        .filter(pl.col("slot").is_in([3, 4]))  # departed first hub, arrived second hub
        .pivot(on="slot", index="item_id", values="ts")
        .drop_nulls()
        .with_columns(((pl.col("4") - pl.col("3")).dt.total_minutes() / 60).alias("trunk_h"))
    )
    hit = legs["3"].is_between(inc.route_from, inc.route_until, closed="left")
    during = legs.filter(hit)["trunk_h"].median()
    outside = legs.filter(~hit)["trunk_h"].median()
    assert isinstance(during, float) and isinstance(outside, float)
    assert legs.filter(hit).height >= 5
    assert during > outside + 15


def test_failing_delivery_office(result: sim.SimResult) -> None:
    inc = result.incidents
    window = result.events.filter(
        pl.col("ts").is_between(inc.failing_office_from, inc.failing_office_until)
        & pl.col("facility").str.starts_with("DO-")
    )
    counts = window.group_by(pl.col("facility") == sim.INCIDENT_FAILING_OFFICE).agg(
        (pl.col("event") == "delivery_failed").sum().alias("failed"),
        (pl.col("event") == "out_for_delivery").sum().alias("rounds"),
    )
    share = dict(counts.select("facility", pl.col("failed") / pl.col("rounds")).iter_rows())
    assert share[True] > 3 * share[False]


# --- complaints ---------------------------------------------------------------------------------------


def test_complaints_follow_lateness(result: sim.SimResult) -> None:
    # Independent rule: slow if delivery (or the end of the data) took over the budget.
    budget_h = {"express": 3 * 24, "standard": 6 * 24, "economy": 9 * 24}
    end = result.config.end
    ev = result.events
    acc = ev.filter(pl.col("event") == "accepted").select("item_id", "product", "ts")
    done = ev.filter(pl.col("event") == "delivered").select("item_id", pl.col("ts").alias("done"))
    items = acc.join(done, on="item_id", how="left").with_columns(
        (
            (pl.col("done").fill_null(end) - pl.col("ts")).dt.total_hours()
            > pl.col("product").replace_strict(budget_h)
        ).alias("slow")
    )
    delay = result.complaints.filter(pl.col("category") == "delay").select("item_id").unique()
    rates = (
        items.with_columns(pl.col("item_id").is_in(delay["item_id"].implode()).alias("complained"))
        .group_by("slow")
        .agg(pl.col("complained").mean(), pl.len())
    )
    rate = dict(rates.select("slow", "complained").iter_rows())
    assert rate[True] > 10 * rate[False]


def test_complaint_rates_per_million(result: sim.SimResult) -> None:
    per_item = result.complaints.group_by("item_id").len().drop_nulls()
    truth = result.items.join(per_item, on="item_id", how="left").with_columns(
        pl.col("len").fill_null(0) > 0
    )
    ppm = dict(truth.group_by("late").agg(pl.col("len").mean() * 1e6).iter_rows())
    assert 20 < ppm[False] < 1000
    assert ppm[True] > 20_000


def test_complaint_versions_and_deadlines(result: sim.SimResult) -> None:
    c = result.complaints
    versions = c.group_by("complaint_id").len()
    twice = versions.filter(pl.col("len") == 2)["complaint_id"]
    assert twice.len() > 0 and versions["len"].max() == 2
    pairs = c.filter(pl.col("complaint_id").is_in(twice.implode())).sort(
        "complaint_id", "updated_at"
    )
    firsts = pairs.group_by("complaint_id", maintain_order=True).first()
    lasts = pairs.group_by("complaint_id", maintain_order=True).last()
    assert firsts["resolved_at"].null_count() == firsts.height
    assert lasts["resolved_at"].null_count() == 0
    assert (lasts["updated_at"] > firsts["updated_at"]).all()

    latest = c.sort("updated_at").group_by("complaint_id").last()
    end = result.config.end
    overdue = timedelta(days=sim.REPLY_DEADLINE_DAYS)
    still_open = latest.filter(pl.col("resolved_at").is_null())
    assert still_open.height > 0
    late_reply = latest.filter(pl.col("resolved_at") - pl.col("opened_at") > overdue)
    open_overdue = still_open.filter(pl.col("opened_at") < end - overdue)
    assert late_reply.height + open_overdue.height > 0
    assert (latest["opened_at"] < end).all()
    items = c.filter(pl.col("item_id").is_not_null())
    regions = items.join(result.items.select("item_id", "destination"), on="item_id", how="left")
    assert (regions["region"] == regions["destination"]).all()
    assert c["complaint_id"].str.starts_with("CMP").all()


# --- text feeds and malformed rows ----------------------------------------------------------------------


def _feed_rows(path: Path) -> tuple[list[dict[str, object]], int]:
    """(parsed rows, number of unparseable lines) of a CSV or JSONL feed."""
    rows: list[dict[str, object]] = []
    broken = 0
    if path.suffix == ".csv":
        reader = csv.reader(io.StringIO(path.read_text()))
        header = next(reader)
        for values in reader:
            if len(values) != len(header):
                broken += 1
                continue
            rows.append({h: (v or None) for h, v in zip(header, values, strict=True)})
        return rows, broken
    for line in path.read_bytes().splitlines():
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            broken += 1
    return rows, broken


def _parses(ts: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(ts))
    except ValueError:
        return None


def _kind(row: dict[str, object], id_col: str) -> str:
    rid = row.get(id_col)
    if not rid:
        return f"missing_{id_col}"
    parts = str(rid).split("-")
    return parts[1] if parts[0] == "BAD" else "good"


def test_event_feeds_cover_every_defect(folder: Path) -> None:
    kinds: dict[str, list[dict[str, object]]] = {}
    all_rows: list[dict[str, object]] = []
    for rel in sim.EVENT_FEEDS:
        rows, broken = _feed_rows(folder / rel)
        assert broken >= 1, rel  # malformed_row
        all_rows += rows
        for row in rows:
            kinds.setdefault(_kind(row, "event_id"), []).append(row)
    assert set(kinds) == {"good", *sim.EVENT_DEFECTS} - {"malformed_row"}
    names = set(contract.EVENT_TYPES) | {a.lower() for a in contract.UPU_ALIASES}
    checks: dict[str, Callable[[dict[str, object]], bool]] = {
        "missing_event_id": lambda r: not r["event_id"],
        "missing_item_id": lambda r: not r["item_id"],
        "missing_facility": lambda r: not r["facility"],
        "missing_ts": lambda r: not r["ts"],
        "accepted_without_product": lambda r: r["event"] == "accepted" and not r["product"],
        "accepted_without_route": lambda r: (
            r["event"] == "accepted" and not (r["origin"] and r["destination"])
        ),
        "failed_without_reason": lambda r: r["event"] == "delivery_failed" and not r["reason"],
        "unknown_event": lambda r: str(r["event"]).lower() not in names,
        "bad_timestamp": lambda r: _parses(r["ts"]) is None,
        "timestamp_without_offset": lambda r: (
            (p := _parses(r["ts"])) is not None and p.tzinfo is None
        ),
        "bad_type": lambda r: r["promised_by"] == "soon",
    }
    for kind, check in checks.items():
        assert all(check(r) for r in kinds[kind]), kind

    good = kinds["good"]
    # Good rows: offsets everywhere, UPU aliases (also lower case), duplicates, bad S10.
    assert all(_parses(r["ts"]).tzinfo is not None for r in good)  # type: ignore[union-attr]
    events = {str(r["event"]) for r in good}
    assert events & set(contract.UPU_ALIASES)
    assert events & {a.lower() for a in contract.UPU_ALIASES}
    assert events <= names | set(contract.UPU_ALIASES)
    wrong = {str(r["item_id"]) for r in good if not contract.s10_valid(str(r["item_id"]))}
    assert 0 < len(wrong) <= sim.WRONG_CHECK_DIGIT_ITEMS
    parquet_ids = set(pl.read_parquet(folder / "events" / "events-*.parquet")["event_id"].to_list())
    good_ids = [str(r["event_id"]) for r in good]
    assert len(good_ids) > len(set(good_ids))  # the same scan sent twice
    assert set(good_ids) & parquet_ids  # scans re-sent after Parquet delivery
    bad_ids = {str(r["event_id"]) for r in all_rows if _kind(r, "event_id") != "good"} - {"None"}
    assert not bad_ids & (parquet_ids | set(good_ids))


def test_complaint_feeds_cover_every_defect(folder: Path) -> None:
    kinds: dict[str, list[dict[str, object]]] = {}
    for rel in sim.COMPLAINT_FEEDS:
        rows, broken = _feed_rows(folder / rel)
        assert broken >= 1, rel
        for row in rows:
            kinds.setdefault(_kind(row, "complaint_id"), []).append(row)
    assert {*sim.COMPLAINT_DEFECTS} - {"malformed_row"} <= set(kinds)
    checks: dict[str, Callable[[dict[str, object]], bool]] = {
        "missing_complaint_id": lambda r: not r["complaint_id"],
        "missing_region": lambda r: not r["region"],
        "missing_opened_at": lambda r: not r["opened_at"],
        "unknown_category": lambda r: r["category"] not in contract.COMPLAINT_CATEGORIES,
        "bad_timestamp": lambda r: _parses(r["opened_at"]) is None,
        "timestamp_without_offset": lambda r: (
            (p := _parses(r["opened_at"])) is not None and p.tzinfo is None
        ),
        "bad_type": lambda r: r["valid"] == "maybe",
    }
    for kind, check in checks.items():
        assert all(check(r) for r in kinds[kind]), kind


def test_feeds_keep_every_good_event(tmp_path: Path) -> None:
    res = sim.generate(sim.SimConfig(items=1500, days=10, seed=4, bad_rows=0.01))
    sim.write_data_folder(res, tmp_path)
    ids = set(pl.read_parquet(tmp_path / "events" / "events-*.parquet")["event_id"].to_list())
    for rel in sim.EVENT_FEEDS:
        rows, _ = _feed_rows(tmp_path / rel)
        ids |= {str(r["event_id"]) for r in rows if _kind(r, "event_id") == "good"}
    assert ids == set(res.events["event_id"].to_list())


# --- the command line and live mode ------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(simulate_command)
    return app


def test_cli_writes_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "data"
    args = ["--out", str(out), "--items", "400", "--days", "5", "--seed", "2"]
    res = CliRunner().invoke(_app(), [*args, "--start", "2027-01-20T00:00:00+08:00"])
    assert res.exit_code == 0, res.output
    assert (out / "facilities.csv").exists()
    assert (out / "complaints" / "complaints.parquet").exists()
    days = sorted(p.name for p in (out / "events").glob("events-*.parquet"))
    assert days[0] == "events-2027-01-20.parquet" and len(days) == 5
    bad = CliRunner().invoke(_app(), [*args, "--start", "2027-01-20T00:00:00"])
    assert bad.exit_code != 0


def test_folder_ships_its_standard_with_stage_targets(tmp_path: Path) -> None:
    """The demo's stage alerts need targets: the folder's standard is the built-in one plus
    the network's stage targets (written out here by hand, read back as plain YAML)."""
    out = tmp_path / "data"
    args = ["--out", str(out), "--items", "200", "--days", "3", "--seed", "4"]
    assert CliRunner().invoke(_app(), args).exit_code == 0
    raw = yaml.safe_load((out / "service-standards.yaml").read_text())
    assert raw["stages"] == {
        "dwell_hours": {"collection": 12.0, "processing": 6.0, "delivery": 24.0},
        "leg_hours": {"default": 24.0},
    }
    loaded = load_standards(out)
    assert loaded.products == DEFAULT_STANDARDS.products
    assert loaded.time_zone == DEFAULT_STANDARDS.time_zone
    assert loaded.remote_regions == DEFAULT_STANDARDS.remote_regions
    assert loaded.stages.dwell_target("processing") == 6.0


def test_parse_start_and_scenarios() -> None:
    assert parse_start(None, 30) is None
    assert parse_start("2027-01-11T00:00:00Z", 30) == datetime(2027, 1, 11, tzinfo=UTC)
    now = parse_start("now", 10)
    assert now is not None and abs(now + timedelta(days=10) - datetime.now(UTC)) < timedelta(
        minutes=1
    )
    with pytest.raises(typer.BadParameter):
        parse_start("2027-01-11 08:00", 30)
    assert tuple(s.value for s in ScenarioChoice) == sim.SCENARIOS


def test_incident_constants_name_real_things() -> None:
    net = sim.build_network()
    assert sim.INCIDENT_SLOW_HUB in net.facility
    assert sim.INCIDENT_FAILING_OFFICE in net.facility
    assert set(sim.INCIDENT_ROUTE) <= set(contract.PROVINCES)
    inc = sim.incident_schedule(sim.DEFAULT_START, sim.DEFAULT_DAYS)
    assert inc.slow_hub_degraded_from.astimezone(sim.LOCAL_TZINFO) == datetime(
        2027, 1, 26, 6, tzinfo=sim.LOCAL_TZINFO
    )
    assert inc.route_from < inc.route_until <= inc.slow_hub_degraded_from


def _live_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_live_append_writes_wall_clock_events(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    run = sim.live_append(
        tmp_path, rate=400, seed=3, max_events=120, seconds_per_hour=0.01, tick=0.02
    )
    after = datetime.now(UTC)
    rows = _live_lines(run.path)
    assert run.events == len(rows) == 120
    assert run.path.parent == tmp_path / "events" and run.path.name.startswith("live-")
    assert all(list(r) == list(contract.EVENT_SCHEMA) for r in rows)
    stamps = [datetime.fromisoformat(str(r["ts"])) for r in rows]
    assert all(before - timedelta(seconds=1) <= t <= after for t in stamps)
    assert {r["event"] for r in rows} >= {"accepted", "departed", "arrived"}
    assert all(r["product"] and r["origin"] for r in rows if r["event"] == "accepted")
    assert all(contract.s10_valid(str(r["item_id"])) for r in rows)
    assert {str(r["item_id"])[:2] for r in rows} <= set(sim.S10_PREFIX_LIVE)
    assert len({r["event_id"] for r in rows}) == len(rows)


def test_live_append_stops_on_request(tmp_path: Path) -> None:
    stop = threading.Event()
    runs: list[sim.LiveRun] = []
    worker = threading.Thread(
        target=lambda: runs.append(sim.live_append(tmp_path, rate=50, stop=stop, tick=0.02))
    )
    worker.start()
    threading.Timer(0.3, stop.set).start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert runs and runs[0].events == len(_live_lines(runs[0].path))


@pytest.mark.parametrize("signals", [1, 20_000])
def test_cli_live_stops_cleanly_on_sigterm(tmp_path: Path, signals: int) -> None:
    script = (
        "import typer\n"
        "from kpi_cli.simulate import simulate\n"
        "app = typer.Typer()\n"
        "app.command()(simulate)\n"
        "app()\n"
    )
    args = ["--out", str(tmp_path), "--items", "200", "--days", "2", "--live", "--rate", "200"]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            p.stat().st_size for p in (tmp_path / "events").glob("live-*.jsonl")
        ):
            time.sleep(0.1)
        # A burst of signals (a supervisor repeating its TERM) must not deadlock the stop;
        # signals that land after the clean stop may end the process with SIGTERM itself.
        for _ in range(signals):
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in ((0, -signal.SIGTERM) if signals > 1 else (0,)), err.decode()
    (live,) = (tmp_path / "events").glob("live-*.jsonl")
    assert _live_lines(live)
    assert (tmp_path / "facilities.csv").exists()
