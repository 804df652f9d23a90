"""The real stack: ``kpi simulate`` data → ``kpi exporter`` → Debian Prometheus with our rules.

One exporter and one Prometheus are shared by the module (``tests/stack_helpers.py``).
The generated rules, alerts and dashboards are checked against the *real* exporter's
series (``tests/exporters/mixin`` checks them against a synthetic exposition), and
the numbers against the KPI engine (``Snapshot.query``), an independent path from
the exporter's counters and Prometheus' aggregation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest
import yaml

from exporters import catalog as cat
from kpi.contract import PROVINCES
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.simulate import INCIDENT_SLOW_HUB
from kpi.sources.folder import load_data_dir
from tests import promkit
from tests.exporters.mixin.dashboard_checks import panels
from tests.stack_helpers import REPO, RULE_FILES, Stack, run_stack

pytestmark = pytest.mark.prometheus

BACKLOG_ALERT = "PostalFacilityBacklogHigh"
#: The alert's threshold for a facility without one (see prometheus/alerts.yml).
DEFAULT_BACKLOG_THRESHOLD = 5000
#: The overview's headline panels, by title.
#: Series only Kafka shards export (`kpi exporter --kafka`); this stack follows files, so
#: their panels must evaluate but may be empty (tests/exporters/kafka covers them).
KAFKA_ONLY = (cat.KAFKA_LAG.name, cat.KAFKA_LAG_AGE.name, cat.KAFKA_PARTITIONS.name)
HEADLINE_PANELS = (
    "On-time ratio by product vs objective (1 day)",
    "Volume: accepted and delivered per hour",
    "Items in network and overdue",
    "Backlog hot spots (now)",
    "Complaints per million items by region (1 day)",
)
#: Grafana variables -> values: everything, and one concrete choice that has data.
ALL_VALUES = {
    "job": cat.EXPORTER_JOB,
    "instance": ".*",
    "region": ".*",
    "facility": ".*",
    "product": ".*",
    "category": ".*",
    "__rate_interval": "1m",
}


@dataclass
class Engine:
    """The KPI engine's answers for the complete data set, as of its newest event."""

    snap: Snapshot
    #: facility -> (backlog_items, backlog_threshold_items or None)
    backlog: dict[str, tuple[int, int | None]]
    #: facility -> (facility_type, region) from facilities.csv
    facilities: dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="module")
def engine(stack: Stack) -> Engine:
    snap = Snapshot.from_dataset(load_data_dir(stack.data), stack.latest_event)
    frame = snap.query(
        KpiQuery(kpis=("backlog_items", "backlog_threshold_items"), by=("facility",))
    )
    backlog = {
        r["facility"]: (r["backlog_items"], r["backlog_threshold_items"])
        for r in frame.iter_rows(named=True)
    }
    csv = pl.read_csv(stack.data / "facilities.csv", infer_schema=False)
    facilities = {r["facility"]: (r["type"], r["region"]) for r in csv.iter_rows(named=True)}
    return Engine(snap, backlog, facilities)


def _rule_exprs() -> list[tuple[str, str]]:
    out = []
    for rel in RULE_FILES:
        for group in yaml.safe_load((REPO / rel).read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or f"{rule['alert']}/{rule['labels']['severity']}"
                out.append((f"{group['name']}/{name}", rule["expr"]))
    return out


def _board(uid: str) -> dict[str, Any]:
    board: dict[str, Any] = json.loads((REPO / "dashboards" / f"{uid}.json").read_text())
    return board


def _panel_exprs() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, target expr) of every panel target."""
    return [
        (path.stem, panel["title"], target["expr"])
        for path in sorted((REPO / "dashboards").glob("*.json"))
        for panel in panels(json.loads(path.read_text()))
        for target in panel["targets"]
    ]


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result]


# --- 1. every expression evaluates on the real exporter's series --------------------------


def test_every_rule_and_alert_expression_evaluates(stack: Stack) -> None:
    exprs = _rule_exprs()
    assert len(exprs) > 40
    errors = []
    for where, expr in exprs:
        try:
            stack.prom.query(expr)
        except promkit.PromQLError as exc:
            errors.append(f"{where}: {exc}")
    assert errors == []


def test_every_rule_group_is_healthy_and_every_recording_rule_records(stack: Stack) -> None:
    expected_groups = {
        g["name"] for rel in RULE_FILES for g in yaml.safe_load((REPO / rel).read_text())["groups"]
    }

    def evaluated() -> list[dict[str, Any]]:
        groups = stack.prom.rule_groups()
        rules = [r for g in groups for r in g["rules"]]
        return groups if all(r["health"] != "unknown" for r in rules) else []

    groups = stack.prom.wait_for(evaluated, timeout=10, what="every rule evaluated once")
    assert {g["name"] for g in groups} == expected_groups
    unhealthy = [
        f"{g['name']}/{r['name']}: {r['health']} {r.get('lastError', '')}"
        for g in groups
        for r in g["rules"]
        if r["health"] != "ok" or r.get("lastError")
    ]
    assert unhealthy == []
    # Every recording rule matches the real exporter's labels: it records something.
    recorded = {r["name"] for g in groups for r in g["rules"] if r["type"] == "recording"}
    empty = sorted(name for name in recorded if not stack.prom.query(f"count({name})"))
    assert empty == []


@pytest.mark.parametrize("concrete", [False, True], ids=["all-values", "concrete-values"])
def test_every_dashboard_query_evaluates(stack: Stack, concrete: bool) -> None:
    variables = dict(ALL_VALUES)
    if concrete:
        variables |= {
            "instance": stack.target,
            "region": "CN-GD",
            "facility": INCIDENT_SLOW_HUB,
            "product": "express",
            "category": "delay",
        }
    exprs = _panel_exprs()
    assert len(exprs) > 40
    errors, empty = [], []
    for uid, title, expr in exprs:
        query = promkit.substitute(expr, variables)
        assert "$" not in query, f"{uid}/{title}: unsubstituted variable in {query}"
        try:
            result = stack.prom.query(query, at=stack.settled_at)
        except promkit.PromQLError as exc:
            errors.append(f"{uid}/{title}: {exc}")
            continue
        if any(name in expr for name in KAFKA_ONLY):
            continue
        if not result and (not concrete or (uid == "postal-overview" and title in HEADLINE_PANELS)):
            empty.append(f"{uid}/{title}: {query}")
    assert errors == []
    # Every panel shows data on the simulated peak with the defaults (All); the headline
    # panels also with a concrete selection.
    assert empty == []


def _facility_region(stack: Stack) -> dict[str, str]:
    csv = pl.read_csv(stack.data / "facilities.csv", infer_schema=False)
    return {r["facility"]: r["region"] for r in csv.iter_rows(named=True)}


def test_every_dashboard_query_honours_the_region(stack: Stack) -> None:
    # With one region selected no panel shows another region's facilities, regions or
    # destinations (the old threshold query ignored $region and drew every facility).
    region = stack.prom.query(
        f"topk(1, sum by (region) ({cat.BACKLOG_ITEMS.series}))", at=stack.settled_at
    )[0]["metric"]["region"]
    where = _facility_region(stack)
    leaks = []
    for uid, title, expr in _panel_exprs():
        query = promkit.substitute(expr, ALL_VALUES | {"region": region})
        for series in stack.prom.query(query, at=stack.settled_at):
            labels = series["metric"]
            shown = {labels.get("region"), labels.get("destination")} - {None}
            if "facility" in labels:
                shown.add(where[labels["facility"]])
            if shown - {region}:
                leaks.append(f"{uid}/{title}: {labels}")
    assert leaks == []


def test_threshold_series_include_the_default(stack: Stack, engine: Engine) -> None:
    # "Waiting items vs threshold": each facility drawn has its threshold line, the
    # default one where the facility has none configured.
    board = _board("postal-facility-backlog")
    panel = next(p for p in panels(board) if p["title"].startswith("Waiting items vs threshold"))
    unset = max(
        (f for f, (b, thr) in engine.backlog.items() if thr is None and b > 0),
        key=lambda f: engine.backlog[f][0],
    )
    for choice in (".*", unset):
        items, thresholds = (
            stack.prom.query(
                promkit.substitute(t["expr"], ALL_VALUES | {"facility": choice}),
                at=stack.settled_at,
            )
            for t in panel["targets"]
        )
        drawn = {r["metric"]["facility"] for r in items}
        assert len(drawn) == (10 if choice == ".*" else 1)
        limits = {r["metric"]["facility"]: float(r["value"][1]) for r in thresholds}
        assert set(limits) == drawn
        for facility in drawn:
            configured = engine.backlog[facility][1]
            expected = DEFAULT_BACKLOG_THRESHOLD if configured is None else configured
            assert limits[facility] == expected, facility
    assert limits == {unset: DEFAULT_BACKLOG_THRESHOLD}


def test_headline_panels_show_data(stack: Stack, engine: Engine) -> None:
    by_title = {p["title"]: p for p in panels(_board("postal-overview"))}
    assert set(HEADLINE_PANELS) <= set(by_title)
    results: dict[str, list[list[dict[str, Any]]]] = {}
    for title in HEADLINE_PANELS:
        results[title] = [
            stack.prom.query(promkit.substitute(t["expr"], ALL_VALUES), at=stack.settled_at)
            for t in by_title[title]["targets"]
        ]
        for i, result in enumerate(results[title]):
            assert result, f"{title}: target {i} returned no data"

    ratio, objective = results["On-time ratio by product vs objective (1 day)"]
    products = {"express", "standard", "economy"}
    assert {r["metric"]["product"] for r in ratio} == products
    assert all(0 <= v <= 1 + 1e-9 for v in _values(ratio)), ratio  # NaN fails too
    assert {r["metric"]["product"] for r in objective} == products
    # The held-back day arrived within the last minute: both volumes are real rates.
    accepted, delivered = results["Volume: accepted and delivered per hour"]
    assert _values(accepted)[0] > 0 and _values(delivered)[0] > 0
    in_network, overdue = results["Items in network and overdue"]
    network = engine.snap.query(KpiQuery(kpis=("in_network_items", "overdue_items"))).row(
        0, named=True
    )
    assert _values(in_network) == [network["in_network_items"]]
    assert _values(overdue) == [network["overdue_items"]]
    (hot_spots,) = results["Backlog hot spots (now)"]
    assert len(hot_spots) == 10
    biggest = max(engine.backlog.items(), key=lambda kv: kv[1][0])
    top = max(hot_spots, key=lambda r: float(r["value"][1]))
    assert (top["metric"]["facility"], float(top["value"][1])) == (biggest[0], biggest[1][0])
    (per_million,) = results["Complaints per million items by region (1 day)"]
    assert {r["metric"].get("region") for r in per_million} <= set(PROVINCES)
    finite = [v for v in _values(per_million) if math.isfinite(v)]
    assert finite and all(v >= 0 for v in finite)


# --- 2. Prometheus and the KPI engine agree --------------------------------------------------


def test_prometheus_totals_equal_the_engine(stack: Stack, engine: Engine) -> None:
    prom = stack.prom
    # The exporter's as-of (--as-of latest) is the newest event, the engine's as-of too.
    assert prom.value(f"max({cat.EXPORTER_LAST_EVENT_TIMESTAMP.series})") == (
        stack.latest_event.timestamp()
    )
    assert engine.snap.as_of == stack.latest_event
    flow = engine.snap.query(KpiQuery(kpis=("accepted_items", "delivered_items"))).row(
        0, named=True
    )
    assert flow["accepted_items"] == 3000
    assert prom.value(f"sum({cat.ITEMS_ACCEPTED.series})") == flow["accepted_items"]
    assert prom.value(f"sum({cat.ITEMS_DELIVERED.series})") == flow["delivered_items"]
    per_facility = {
        r["metric"]["facility"]: float(r["value"][1])
        for r in prom.query(f"sum by (facility) ({cat.BACKLOG_ITEMS.series})")
    }
    assert per_facility == {f: float(b) for f, (b, _) in engine.backlog.items()}
    assert sum(per_facility.values()) > 0


# --- 3. the slow-hub incident fires the backlog alert ----------------------------------------


def test_slow_hub_fires_the_backlog_alert(stack: Stack, engine: Engine) -> None:
    def limit(threshold: int | None) -> int:
        return DEFAULT_BACKLOG_THRESHOLD if threshold is None else threshold

    over = {f for f, (b, thr) in engine.backlog.items() if b > limit(thr)}
    assert over == {INCIDENT_SLOW_HUB}  # the scenario, per the engine
    hub_backlog = engine.backlog[INCIDENT_SLOW_HUB][0]
    # A healthy facility: the fullest one that is still below its own threshold.
    healthy = max(
        (f for f, (b, thr) in engine.backlog.items() if thr is not None and 0 < b < thr),
        key=lambda f: engine.backlog[f][0],
    )

    def hub_alert() -> dict[str, Any] | None:
        for alert in stack.prom.alerts():
            labels = alert["labels"]
            if (
                labels.get("alertname") == BACKLOG_ALERT
                and labels.get("facility") == INCIDENT_SLOW_HUB
                and alert["state"] == "firing"
                and float(alert["value"]) == hub_backlog
            ):
                return dict(alert)
        return None

    alert = stack.prom.wait_for(hub_alert, timeout=20, what=f"{BACKLOG_ALERT} firing")
    facility_type, region = engine.facilities[INCIDENT_SLOW_HUB]
    assert alert["labels"] == {
        "alertname": BACKLOG_ALERT,
        "job": cat.EXPORTER_JOB,
        "facility": INCIDENT_SLOW_HUB,
        "facility_type": facility_type,
        "region": region,
        "severity": "critical",
    }
    description = alert["annotations"]["description"]
    assert f"Facility {INCIDENT_SLOW_HUB} ({facility_type}, {region})" in description
    assert f"holds {hub_backlog} waiting items" in description
    assert description.endswith(f"backlog?facility={INCIDENT_SLOW_HUB}")

    alerting = {
        a["labels"]["facility"]
        for a in stack.prom.alerts()
        if a["labels"]["alertname"] == BACKLOG_ALERT
    }
    assert healthy not in alerting
    assert alerting == over
    # The overview's "Active alerts" panel lists it too.
    firing = stack.prom.query(f'ALERTS{{alertstate="firing", alertname="{BACKLOG_ALERT}"}}')
    assert [r["metric"]["facility"] for r in firing] == [INCIDENT_SLOW_HUB]


def test_the_stack_ran_on_the_real_cli_data(stack: Stack) -> None:
    # Guard against a vacuous run: the data came from `kpi simulate`, the target is up.
    assert (stack.data / "facilities.csv").exists()
    assert len(list((stack.data / "events").glob("events-*.parquet"))) == 10
    (target,) = stack.prom.targets()
    assert target["health"] == "up" and target["labels"]["instance"] == stack.target
    assert stack.jumped_at < stack.settled_at <= time.time()
