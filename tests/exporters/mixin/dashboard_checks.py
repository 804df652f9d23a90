"""Checks of dashboard JSON that would have caught issue 14's defects, over every dashboard.

Each check takes plain JSON (dicts, as Grafana reads the files) and returns the problems
it found as readable strings; the tests run them on the committed dashboards (no problem)
and on the dashboards as they were before issue 14 (the defects it reported).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from exporters import catalog as cat
from exporters.mixin.promql import metric_names

Board = Mapping[str, Any]

#: Colours by severity; neutral colours carry no meaning.
RANK: Final = {"green": 0, "yellow": 1, "orange": 1, "red": 2}
NEUTRAL: Final = {"blue", "text", "transparent", "purple"}
#: Dashboard variable -> the labels it filters.
VARIABLE_LABELS: Final = {
    "region": ("region", "destination"),
    "product": ("product",),
    "facility": ("facility",),
    "category": ("category",),
}
#: Labels that make a panel a facility, region or complaint-category breakdown.
DRILL_LABELS: Final = ("facility", "region", "destination", "category")
WINDOW_TITLE: Final = re.compile(
    r"\((now|last scrape|\d+ ?(m|h|d|hours?|days?|minutes?)|\d+[smhdw])\)$"
)
SINGLE_VALUE_TYPES: Final = ("stat", "gauge", "bargauge", "table")
_BY: Final = re.compile(r"\bby\s*\(([^)]*)\)")
_LEGEND_LABEL: Final = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def panels(board: Board) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows excluded, collapsed rows' panels included)."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def where(board: Board, panel: Mapping[str, Any]) -> str:
    """``uid/title`` for messages."""
    return f"{board['uid']}/{panel.get('title')}"


def exprs(panel: Mapping[str, Any]) -> list[str]:
    """The panel's PromQL expressions."""
    return [t.get("expr", "") for t in panel.get("targets", [])]


def breakdown(panel: Mapping[str, Any]) -> set[str]:
    """Labels the panel shows one series or row per (outermost ``by`` and legends)."""
    labels: set[str] = set()
    for target in panel.get("targets", []):
        labels |= set(_LEGEND_LABEL.findall(target.get("legendFormat", "")))
        found = _BY.findall(target.get("expr", ""))
        if found and target.get("format") == "table":
            labels |= {x.strip() for x in found[0].split(",") if x.strip()}
    return labels


def _step_lists(panel: Mapping[str, Any]) -> Iterator[list[dict[str, Any]]]:
    config = panel.get("fieldConfig", {})
    steps = config.get("defaults", {}).get("thresholds", {}).get("steps")
    # Grafana draws its own green/red-at-80 default when a panel has no thresholds.
    yield (
        steps
        if steps is not None
        else [{"color": "green", "value": None}, {"color": "red", "value": 80}]
    )
    for override in config.get("overrides", []):
        for prop in override.get("properties", []):
            if prop.get("id") == "thresholds":
                yield prop["value"]["steps"]


def threshold_colours(boards: Sequence[Board]) -> list[str]:
    """Colours follow meaning: steps monotone in the bad direction; a lone colour is neutral."""
    problems = []
    for board in boards:
        for panel in panels(board):
            for steps in _step_lists(panel):
                colours = [s["color"] for s in steps]
                if len(colours) == 1:
                    if colours[0] not in NEUTRAL:
                        problems.append(
                            f"{where(board, panel)}: always {colours[0]} whatever the value"
                        )
                    continue
                unknown = [c for c in colours if c not in RANK]
                if unknown:
                    problems.append(f"{where(board, panel)}: colours {unknown} have no severity")
                    continue
                ranks = [RANK[c] for c in colours]
                rising = all(a <= b for a, b in itertools.pairwise(ranks))
                falling = all(a >= b for a, b in itertools.pairwise(ranks))
                if not (rising or falling) or min(ranks) != 0 or max(ranks) == 0:
                    problems.append(
                        f"{where(board, panel)}: steps {colours} are not green-to-bad in one "
                        "direction"
                    )
                values = [s["value"] for s in steps[1:]]
                if steps[0]["value"] is not None or values != sorted(values):
                    problems.append(f"{where(board, panel)}: step values {values} not increasing")
    return problems


def thresholds_drawn(boards: Sequence[Board]) -> list[str]:
    """Every time series with a threshold draws it (custom.thresholdsStyle)."""
    problems = []
    for board in boards:
        for panel in panels(board):
            if panel.get("type") != "timeseries":
                continue
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            steps = defaults.get("thresholds", {}).get("steps", [])
            mode = defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off")
            if len(steps) > 1 and mode == "off":
                problems.append(f"{where(board, panel)}: thresholds not drawn")
    return problems


def _is_health(expr: str) -> bool:
    return "up" in metric_names(expr) or " bool " in expr or "absent(" in expr


def health_value_mappings(boards: Sequence[Board]) -> list[str]:
    """Every single-value panel of a 0/1 health value maps 0 to red text and 1 to green."""
    problems = []
    for board in boards:
        for panel in panels(board):
            if panel.get("type") not in ("stat", "gauge") or not any(
                _is_health(e) for e in exprs(panel)
            ):
                continue
            mapped: dict[str, dict[str, Any]] = {}
            for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
                if mapping.get("type") == "value":
                    mapped |= mapping.get("options", {})
            zero, one = mapped.get("0", {}), mapped.get("1", {})
            if zero.get("color") != "red" or one.get("color") != "green" or not zero.get("text"):
                problems.append(f"{where(board, panel)}: 0/1 health value without a red 0 mapping")
    return problems


def _uses(board: Board) -> str:
    """Every text of a dashboard where a variable can be used."""
    texts: list[str] = []
    for panel in panels(board):
        texts += exprs(panel)
        texts += [
            link.get("url", "")
            for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
        ]
        texts.append(str(panel.get("datasource", "")))
    texts += [a.get("expr", "") for a in board.get("annotations", {}).get("list", [])]
    for var in board.get("templating", {}).get("list", []):
        texts.append(str(var.get("query", "")))
    return "\n".join(texts)


def unused_variables(boards: Sequence[Board]) -> list[str]:
    """No dashboard variable that no query, link or other variable uses."""
    problems = []
    for board in boards:
        text = _uses(board)
        for var in board.get("templating", {}).get("list", []):
            name = var["name"]
            if not re.search(rf"\$(\{{{name}[}}:]|{name}\b)", text):
                problems.append(f"{board['uid']}: variable {name} is never used")
    return problems


def missing_variables(boards: Sequence[Board]) -> list[str]:
    """A dashboard broken down by region, product, facility or category can select them."""
    problems = []
    for board in boards:
        names = {v["name"] for v in board.get("templating", {}).get("list", [])}
        for panel in panels(board):
            for var, labels in VARIABLE_LABELS.items():
                if breakdown(panel) & set(labels) and var not in names:
                    problems.append(f"{where(board, panel)}: by {labels} without a ${var} variable")
    return problems


def unfiltered_selectors(boards: Sequence[Board]) -> list[str]:
    """Every catalog selector with a label the dashboard has a variable for filters by it."""
    problems = []
    selector = re.compile(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}")
    for board in boards:
        names = {v["name"] for v in board.get("templating", {}).get("list", [])}
        for panel in panels(board):
            for expr in exprs(panel):
                for match in selector.finditer(expr):
                    spec = cat.BY_SERIES.get(match.group(1)) or cat.BY_NAME.get(match.group(1))
                    if spec is None:
                        continue
                    for var, labels in VARIABLE_LABELS.items():
                        for label in set(labels) & set(spec.labels):
                            if var in names and f'{label}=~"${var}"' not in match.group(2):
                                problems.append(
                                    f"{where(board, panel)}: {match.group(0)} ignores ${var}"
                                )
    return problems


def unbounded_facility_views(boards: Sequence[Board]) -> list[str]:
    """Per-facility views stay readable at 380 facilities: topk/bottomk or a single facility."""
    problems = []
    for board in boards:
        single = any(
            v["name"] == "facility" and not v.get("multi") and not v.get("includeAll")
            for v in board.get("templating", {}).get("list", [])
        )
        for panel in panels(board):
            if "facility" not in breakdown(panel) or single:
                continue
            if not all(re.search(r"\b(topk|bottomk)\s*\(", e) for e in exprs(panel)):
                problems.append(f"{where(board, panel)}: one series per facility, unbounded")
    return problems


def single_values_say_window(boards: Sequence[Board]) -> list[str]:
    """Single values name their window in the title and are not $__rate_interval noise."""
    problems = []
    for board in boards:
        for panel in panels(board):
            if panel.get("type") not in SINGLE_VALUE_TYPES:
                continue
            if not WINDOW_TITLE.search(panel.get("title", "")):
                problems.append(f"{where(board, panel)}: title does not say its window")
            if any("$__rate_interval" in e for e in exprs(panel)):
                problems.append(f"{where(board, panel)}: a single value over $__rate_interval")
    return problems


def unconsumed_recording_rules(
    rules: Mapping[str, Any], alerts: Mapping[str, Any], boards: Sequence[Board]
) -> list[str]:
    """Every recorded series is read by another rule, an alert or a dashboard."""
    records = [r["record"] for g in rules["groups"] for r in g["rules"]]
    consumers: set[str] = set()
    for data in (rules, alerts):
        for group in data["groups"]:
            for rule in group["rules"]:
                consumers |= metric_names(rule["expr"]) - {rule.get("record")}
    for board in boards:
        for panel in panels(board):
            for expr in exprs(panel):
                consumers |= metric_names(expr)
    return sorted({f"recording rule {r} has no consumer" for r in records if r not in consumers})


def rows(boards: Sequence[Board], overview_rows: Sequence[str]) -> list[str]:
    """Every dashboard is in rows; the overview's start with the expected ones, in order."""
    problems = []
    for board in boards:
        top = board.get("panels", [])
        if not top or top[0].get("type") != "row":
            problems.append(f"{board['uid']}: panels outside rows")
        titles = [p["title"] for p in top if p.get("type") == "row"]
        if board["uid"] == "postal-overview" and titles[: len(overview_rows)] != list(
            overview_rows
        ):
            problems.append(f"{board['uid']}: rows {titles}, expected {list(overview_rows)} first")
    return problems


def alert_annotations(boards: Sequence[Board]) -> list[str]:
    """Every dashboard marks firing Postal alerts (and keeps Grafana's built-in annotations)."""
    problems = []
    for board in boards:
        annotations = board.get("annotations", {}).get("list", [])
        if not any(a.get("builtIn") == 1 for a in annotations):
            problems.append(f"{board['uid']}: built-in annotations removed")
        firing = [
            a
            for a in annotations
            if a.get("enable")
            and "ALERTS{" in a.get("expr", "")
            and 'alertstate="firing"' in a["expr"]
            and 'alertname=~"Postal.+"' in a["expr"]
        ]
        if not firing:
            problems.append(f"{board['uid']}: firing Postal alerts are not annotated")
    return problems


def _is_complaint_panel(panel: Mapping[str, Any]) -> bool:
    names = {n for e in exprs(panel) for n in metric_names(e)}
    return any("complaint" in n for n in names)


def drill_down_links(boards: Sequence[Board], api_url: str) -> list[str]:
    """Facility, region and complaint breakdowns link to the API list with the time range."""
    problems = []
    for board in boards:
        for panel in panels(board):
            labels = breakdown(panel)
            if not (labels & set(DRILL_LABELS)) and not (_is_complaint_panel(panel) and labels):
                continue
            links = panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
            good = [
                link["url"]
                for link in links
                if link["url"].startswith(f"{api_url}/api/v1/")
                and any(
                    f"${{{ref}.{label}}}" in link["url"]
                    for label in labels
                    for ref in ("__field.labels", "__data.fields")
                )
                and ("${__to:date:iso}" in link["url"] or "${__from:date:iso}" in link["url"])
            ]
            if not good:
                problems.append(
                    f"{where(board, panel)}: by {sorted(labels)} without an API link carrying "
                    "the value and the time range"
                )
    return problems


def runbook_urls(alerts: Mapping[str, Any], base: str, anchors: set[str]) -> list[str]:
    """Every runbook_url is absolute, under the configured base, and its section exists."""
    problems = []
    for group in alerts["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            page, _, anchor = url.partition("#")
            if not re.match(r"https?://", url) or page != base:
                problems.append(f"{rule['alert']}: runbook_url {url} is not under {base}")
            if anchor not in anchors:
                problems.append(f"{rule['alert']}: no runbook section #{anchor}")
    return problems
