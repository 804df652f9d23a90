"""Dashboards: regenerated unchanged, lint-clean (dashboard-linter rules), every query valid,
and free of the defects issue 14 reported (checked on the JSON, against the pre-issue files)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporters import catalog as cat
from exporters.mixin import alerts, dashboards, render, rules
from exporters.mixin.config import MixinConfig
from exporters.mixin.dashboards import overview
from exporters.mixin.promql import metric_names
from tests import promkit
from tests.exporters.mixin import dashboard_checks as checks
from tests.exporters.mixin.synthetic import OVER, REPO, Live

BUILTIN_SERIES = {"up", "ALERTS", "scrape_duration_seconds", "scrape_samples_scraped"}
#: Concrete values for Grafana variables when a query is checked outside Grafana.
VARIABLES = {
    "job": cat.EXPORTER_JOB,
    "instance": ".*",
    "region": ".*",
    "facility": ".*",
    "product": ".*",
    "category": ".*",
    "__rate_interval": "1m",
    "datasource": "Prometheus",
}
EXPECTED_UIDS = {
    "postal-overview",
    "postal-facility-backlog",
    "postal-timeliness",
    "postal-complaints",
    "postal-exporter-health",
    "postal-network-flow",
}


def _boards() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((REPO / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        out[path.name] = board
    return out


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(board["uid"], p) for board in _boards().values() for p in checks.panels(board)]


def _exprs() -> list[tuple[str, str]]:
    return [
        (f"{uid}/{panel['title']}", target["expr"])
        for uid, panel in _panels()
        for target in panel["targets"]
    ]


def test_committed_dashboards_equal_regeneration() -> None:
    generated = {
        rel: text for rel, text in render.generate().items() if rel.startswith("dashboards/")
    }
    on_disk = {f"dashboards/{p.name}": p.read_text() for p in (REPO / "dashboards").glob("*.json")}
    assert on_disk == generated


def test_uids_are_stable_and_files_named_after_them() -> None:
    boards = _boards()
    assert {b["uid"] for b in boards.values()} == EXPECTED_UIDS
    for name, board in boards.items():
        assert name == f"{board['uid']}.json"
        assert board["title"].startswith("Postal / ")
        ids = [p["id"] for p in board["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        assert len(ids) == len(set(ids))


def test_every_panel_has_title_description_unit_and_templated_datasource() -> None:
    for uid, panel in _panels():
        where = f"{uid}/{panel.get('title')}"
        assert panel["title"].strip(), where
        assert len(panel["description"].strip()) > 10, where
        assert panel["fieldConfig"]["defaults"]["unit"], where
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], where


def test_panels_fit_the_grid_without_overlap() -> None:
    for board in _boards().values():
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
            area = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not cells & area, f"{board['uid']}/{panel['title']} overlaps"
            cells |= area


# --- the defects of issue 14: generic checks over every dashboard -----------------------------

BEFORE = REPO / "tests/fixtures/before-issue-14"
CONFIG = MixinConfig()


def _before() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((BEFORE / "dashboards").glob("*.json"))]


def _yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _anchors() -> set[str]:
    text = (REPO / "docs/runbooks.md").read_text()
    return {m.lower() for m in re.findall(r"^## (\w+)$", text, re.MULTILINE)}


RULES = _yaml(REPO / "prometheus/rules.yml")
ALERTS = _yaml(REPO / "prometheus/alerts.yml")

#: check name -> (run it on a list of boards, a problem it must find in the pre-issue files).
CHECKS: dict[str, tuple[Any, str]] = {
    "colours follow meaning": (
        checks.threshold_colours,
        "postal-timeliness/On-time SLO error budget remaining: steps ['green', 'orange', 'green']",
    ),
    "neutral panels are not green": (
        checks.threshold_colours,
        "postal-exporter-health/Items tracked: always green",
    ),
    "thresholds drawn on time series": (
        checks.thresholds_drawn,
        "postal-facility-backlog/Oldest waiting item: thresholds not drawn",
    ),
    "0/1 health values mapped": (
        checks.health_value_mappings,
        "postal-exporter-health/Up: 0/1 health value without a red 0 mapping",
    ),
    "no unused variable": (checks.unused_variables, ""),
    "a variable per breakdown": (
        checks.missing_variables,
        "postal-complaints/Complaints per hour by category: by ('category',) without a "
        "$category variable",
    ),
    "selectors honour the variables": (checks.unfiltered_selectors, ""),
    "facility views bounded": (
        checks.unbounded_facility_views,
        "postal-facility-backlog/Waiting items vs threshold: one series per facility",
    ),
    "single values say their window": (
        checks.single_values_say_window,
        "postal-overview/72-hour on-time rate: a single value over $__rate_interval",
    ),
    "every recording rule consumed": (
        lambda boards: checks.unconsumed_recording_rules(RULES, ALERTS, boards),
        "recording rule postal:items_delivered_within_72h:ratio_rate1d has no consumer",
    ),
    "rows": (
        lambda boards: checks.rows(boards, overview.ROWS[:4]),
        "postal-overview: panels outside rows",
    ),
    "firing alerts annotated": (
        checks.alert_annotations,
        "postal-overview: firing Postal alerts are not annotated",
    ),
    "drill-down links with time range": (
        lambda boards: checks.drill_down_links(boards, CONFIG.api_url),
        "postal-complaints/Open complaints by region: by ['region'] without an API link",
    ),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_committed_dashboards_pass_the_check(name: str) -> None:
    check, _ = CHECKS[name]
    assert check(list(_boards().values())) == []


@pytest.mark.parametrize("name", [n for n, (_, found) in CHECKS.items() if found])
def test_check_finds_the_reported_defect_in_the_pre_issue_dashboards(name: str) -> None:
    # The check is not vacuous: it flags the defect issue 14 reported in the old files.
    check, expected = CHECKS[name]
    problems = check(_before())
    assert any(p.startswith(expected) for p in problems), problems


def test_overview_rows_in_order() -> None:
    board = _boards()["postal-overview.json"]
    titles = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert titles[:4] == ["Headlines", "Timeliness", "Backlog", "Complaints"]


def test_runbook_urls_absolute_from_one_base() -> None:
    base = "http://127.0.0.1:8000/runbooks"
    assert checks.runbook_urls(ALERTS, base, _anchors()) == []
    before = checks.runbook_urls(_yaml(BEFORE / "alerts.yml"), base, _anchors())
    assert any("docs/runbooks.md#" in p for p in before), before
    # One setting moves every link.
    moved = MixinConfig(runbook_base_url="https://wiki.example.org/postal/runbooks/")
    urls = {a.runbook_url for a in alerts.all_alerts(moved)}
    assert all(u.startswith("https://wiki.example.org/postal/runbooks#") for u in urls), urls
    with pytest.raises(ValueError, match="absolute"):
        MixinConfig(runbook_base_url="docs/runbooks.md")


def test_stalled_items_described_by_destination() -> None:
    # The metric is by the item's destination, not by the region of its last event.
    stalled = [
        (uid, p)
        for uid, p in _panels()
        if cat.ITEMS_STALLED.name in " ".join(t["expr"] for t in p["targets"])
    ]
    assert stalled
    for uid, panel in stalled:
        assert "destination" in panel["description"], f"{uid}/{panel['title']}"
        assert "last event" not in panel["description"], f"{uid}/{panel['title']}"


def test_thresholds_come_from_the_config() -> None:
    # Moving a config value moves the panels' steps: no number is written into a panel.
    cfg = MixinConfig(backlog_oldest_warning_seconds=1111, backlog_oldest_critical_seconds=2222)
    boards = {b["uid"]: b for b in dashboards.all_dashboards(cfg)}
    oldest = [
        p
        for p in checks.panels(boards["postal-facility-backlog"])
        if p["title"].startswith("Oldest waiting item")
    ]
    assert len(oldest) == 2
    for panel in oldest:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None, 1111, 2222]
    budget = MixinConfig().budget_remaining
    board = {b["uid"]: b for b in dashboards.all_dashboards(MixinConfig())}["postal-timeliness"]
    panel = next(p for p in checks.panels(board) if "budget remaining" in p["title"])
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    # Low is bad: red base, orange from the critical share, green from the warning share.
    assert steps == [
        {"value": None, "color": "red"},
        {"value": budget.critical, "color": "orange"},
        {"value": budget.warning, "color": "green"},
    ]


def test_template_variables() -> None:
    for board in _boards().values():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("job", "instance"):
            assert variables[name]["type"] == "query"
            assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables["job"]["current"]["value"] == cat.EXPORTER_JOB
    overview = _boards()["postal-overview.json"]
    assert {"region", "product"} <= {v["name"] for v in overview["templating"]["list"]}
    facility = _boards()["postal-facility-backlog.json"]
    assert {"region", "facility"} <= {v["name"] for v in facility["templating"]["list"]}


def test_every_rate_and_increase_uses_rate_interval() -> None:
    calls = 0
    for where, expr in _exprs():
        for match in re.finditer(r"\b(rate|increase|irate)\s*\(", expr):
            # The range of the call's selector is the first [...] after the call opens.
            window = re.search(r"\[([^\]]*)\]", expr[match.end() :])
            assert window is not None, where
            assert window.group(1) == "$__rate_interval", f"{where}: [{window.group(1)}]"
            calls += 1
    assert calls > 20


def test_every_query_filters_the_job_variable() -> None:
    for where, expr in _exprs():
        for selector in re.finditer(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}", expr):
            if selector.group(1) in ("ALERTS",):
                continue
            assert 'job=~"$job"' in selector.group(2), f"{where}: {selector.group(0)}"


def test_every_referenced_metric_exists() -> None:
    known = cat.series_names() | rules.recorded_names(MixinConfig()) | BUILTIN_SERIES
    used: set[str] = set()
    for where, expr in _exprs():
        names = metric_names(expr)
        assert names, where
        assert not names - known, f"{where}: {names - known}"
        used |= names
    # Every exporter metric is shown, directly or through a recording rule.
    shown = used | _covered_by_recording()
    unused = [m.name for m in cat.METRICS if not set(m.series_names) & shown]
    assert unused == []


def _covered_by_recording() -> set[str]:
    data = yaml.safe_load((REPO / "prometheus/rules.yml").read_text())
    return {n for g in data["groups"] for r in g["rules"] for n in metric_names(r["expr"])}


def test_overview_links_to_facility_dashboard_and_api() -> None:
    board = _boards()["postal-overview.json"]
    urls = [link.get("url") for link in board["links"]]
    assert any((u or "").startswith(f"/d/{dashboards.UID_FACILITY}/") for u in urls)
    assert "http://127.0.0.1:8000/session" in urls  # where the drill-down links sign in
    hot_spots = next(p for p in board["panels"] if p["title"] == "Backlog hot spots (now)")
    links = [link["url"] for link in hot_spots["fieldConfig"]["defaults"]["links"]]
    assert (
        "http://127.0.0.1:8000/api/v1/backlog?facility=${__data.fields.facility}"
        "&as_of=${__to:date:iso}"
    ) in links
    assert any("var-facility=${__data.fields.facility}" in u for u in links)
    seventy_two = next(p for p in board["panels"] if p["title"] == "72-hour on-time rate (1 day)")
    # The recorded 1-day counts of the 72 h bucket, not a rate over minutes.
    assert rules.WITHIN_72H_DELIVERED in seventy_two["targets"][0]["expr"]


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    # promtool has no "parse this expression" verb: check a rule file holding them all.
    exprs = _exprs()
    rule_file = tmp_path / "dashboard-exprs.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard-lint",
                        "rules": [
                            {"record": f"lint:expr:{i}", "expr": promkit.substitute(e, VARIABLES)}
                            for i, (_, e) in enumerate(exprs)
                        ],
                    }
                ]
            }
        )
    )
    result = promkit.promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    # The parse check above would pass vacuously if promtool accepted anything.
    rule_file = tmp_path / "bad.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "a:b:c", "expr": "sum(rate(x[1m])"}]}]}
        )
    )
    assert promkit.promtool("check", "rules", rule_file).returncode != 0


# --- live ------------------------------------------------------------------------------------


def test_live_every_panel_query_evaluates(live: Live) -> None:
    # Wait until the short-`for` backlog alert fires, so ALERTS has data too.
    live.prom.wait_for(
        lambda: live.prom.query('ALERTS{alertstate="firing"}'), timeout=30, what="a firing alert"
    )
    empty = []
    for where, expr in _exprs():
        result = live.prom.query(promkit.substitute(expr, VARIABLES))  # raises on error
        if not result:
            empty.append(where)
    # Every panel of the synthetic stack shows data except those whose inputs are zero by
    # construction (no complaint past its deadline has a non-zero value, but it exists).
    assert empty == [], empty


def test_live_hot_spot_table_names_the_facility_over_threshold(live: Live) -> None:
    board = _boards()["postal-overview.json"]
    panel = next(p for p in board["panels"] if p["title"] == "Backlog hot spots (now)")
    result = live.prom.query(promkit.substitute(panel["targets"][0]["expr"], VARIABLES))
    top = max(result, key=lambda r: float(r["value"][1]))
    assert top["metric"]["facility"] == OVER
    assert float(top["value"][1]) == 6000


@pytest.mark.parametrize(
    "variable", ["job", "instance", "region", "facility", "product", "category"]
)
def test_live_variable_queries_return_values(live: Live, variable: str) -> None:
    for board in _boards().values():
        for v in board["templating"]["list"]:
            if v["name"] != variable:
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", v["definition"])
            assert match, v["definition"]
            selector = promkit.substitute(match.group(1), VARIABLES)
            result = live.prom.query(f"group by ({match.group(2)}) ({selector})")
            assert [r["metric"].get(match.group(2)) for r in result if r["metric"]], v["definition"]


def test_every_panel_says_its_question_and_the_docs_page_lists_it() -> None:
    page = (REPO / "docs/dashboards.md").read_text()
    for board in _boards().values():
        assert f"## {board['title']}" in page
        for panel in checks.panels(board):
            question, mark, _ = panel["description"].partition("? ")
            assert mark and len(question) > 10, f"{board['uid']}/{panel['title']}"
            assert f"| {panel['title']} | **{question}?**" in page, panel["title"]
            for link in panel.get("links", []):
                assert link["url"].startswith("http://127.0.0.1:8000/runbooks#"), link
    assert "Network flow (planned)" in page


def test_sdk_build_matches_the_grafana_image() -> None:
    # The SDK's schema is per Grafana version: the pinned build must be the compose image's.
    pin = re.search(
        r'"grafana-foundation-sdk==\d+!(\d+\.\d+)\.\d+"', (REPO / "pyproject.toml").read_text()
    )
    image = re.search(
        r"image: grafana/grafana:(\d+\.\d+)\.\d+", (REPO / "docker-compose.yml").read_text()
    )
    assert pin and image
    assert pin.group(1) == image.group(1)


def test_live_alerts_panel_shows_the_selected_regions_alerts_only(live: Live) -> None:
    # The slow hub (CN-GD) fires facility alerts; the overview's alert list must show them
    # with CN-GD selected, not with CN-BJ, and show the alerts about no place with both.
    live.prom.wait_for(
        lambda: live.prom.query(f'ALERTS{{alertstate="firing", facility="{OVER}"}}'),
        timeout=30,
        what="a firing alert of the slow hub",
    )

    def shown(region: str) -> list[dict[str, str]]:
        expr = promkit.substitute(overview.firing_alerts(), VARIABLES | {"region": region})
        return [r["metric"] for r in live.prom.query(expr)]

    everywhere = [r["metric"] for r in live.prom.query('ALERTS{alertstate="firing"}')]
    places = ("region", "destination", "from_region", "to_region")
    nowhere = sorted(a["alertname"] for a in everywhere if not any(p in a for p in places))
    gd, bj = shown("CN-GD"), shown("CN-BJ")
    assert any(a.get("facility") == OVER for a in gd)
    assert not any(a.get("facility") == OVER for a in bj)
    for region, alerts_ in (("CN-GD", gd), ("CN-BJ", bj)):
        for a in alerts_:
            at = [a[p] for p in places if p in a]
            assert not at or region in at, (region, a)
        assert sorted(a["alertname"] for a in alerts_ if not any(p in a for p in places)) == (
            nowhere
        )
