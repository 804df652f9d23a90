"""Dashboards: regenerated unchanged, lint-clean (dashboard-linter rules), and every query valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporters import catalog as cat
from exporters.mixin import dashboards, render, rules
from exporters.mixin.config import MixinConfig
from exporters.mixin.promql import metric_names
from tests import promkit
from tests.exporters.mixin.synthetic import OVER, REPO, Live

BUILTIN_SERIES = {"up", "ALERTS", "scrape_duration_seconds", "scrape_samples_scraped"}
#: Concrete values for Grafana variables when a query is checked outside Grafana.
VARIABLES = {
    "job": cat.EXPORTER_JOB,
    "instance": ".*",
    "region": ".*",
    "facility": ".*",
    "product": ".*",
    "__rate_interval": "1m",
    "datasource": "Prometheus",
}
EXPECTED_UIDS = {
    "postal-overview",
    "postal-facility-backlog",
    "postal-timeliness",
    "postal-complaints",
    "postal-exporter-health",
}


def _boards() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((REPO / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        out[path.name] = board
    return out


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(board["uid"], p) for board in _boards().values() for p in board["panels"]]


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
    urls = [link["url"] for link in board["links"]]
    assert any(u.startswith(f"/d/{dashboards.UID_FACILITY}/") for u in urls)
    assert "http://127.0.0.1:8000/api/v1/late-items" in urls
    hot_spots = next(p for p in board["panels"] if p["title"] == "Backlog hot spots")
    links = [link["url"] for link in hot_spots["fieldConfig"]["defaults"]["links"]]
    assert "http://127.0.0.1:8000/api/v1/backlog?facility=${__data.fields.facility}" in links
    assert any("var-facility=${__data.fields.facility}" in u for u in links)
    seventy_two = next(p for p in board["panels"] if p["title"] == "72-hour on-time rate")
    assert 'le="259200.0"' in seventy_two["targets"][0]["expr"]


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
    panel = next(p for p in board["panels"] if p["title"] == "Backlog hot spots")
    result = live.prom.query(promkit.substitute(panel["targets"][0]["expr"], VARIABLES))
    top = max(result, key=lambda r: float(r["value"][1]))
    assert top["metric"]["facility"] == OVER
    assert float(top["value"][1]) == 6000


@pytest.mark.parametrize("variable", ["job", "instance", "region", "facility", "product"])
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
