"""House defaults of the dashboards: datasource, variables, colours, links and panel shapes.

Every dashboard module builds its panels through these helpers (on grafana-foundation-sdk's
builders), so colours follow meaning everywhere: green is fine, orange a warning, red bad,
whichever direction is bad, and a panel without a meaning is drawn in a neutral colour.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

from exporters import catalog as cat
from exporters.mixin.config import Band, MixinConfig
from exporters.mixin.promql import by, sel

TAGS: Final = ["postal-kpi"]
GRID_WIDTH: Final = 24
DATASOURCE: Final = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE: Final = "$__rate_interval"

# Colours: severity rank 0 (fine), 1 (warning), 2 (bad); NEUTRAL carries no meaning.
GOOD: Final = "green"
WARN: Final = "orange"
BAD: Final = "red"
NEUTRAL: Final = "blue"

# Template-variable matchers. Recorded series keep ``job`` but not ``instance``.
JOB: Final = 'job=~"$job"'
INSTANCE: Final = 'instance=~"$instance"'
REGION: Final = 'region=~"$region"'
DEST: Final = 'destination=~"$region"'
FACILITY: Final = 'facility=~"$facility"'
PRODUCT: Final = 'product=~"$product"'
CATEGORY: Final = 'category=~"$category"'

#: Grafana's time range as the analyst API reads it (ISO 8601, UTC).
FROM_ISO: Final = "${__from:date:iso}"
TO_ISO: Final = "${__to:date:iso}"


# --- thresholds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Steps:
    """Threshold steps: a base colour and (value, colour) steps in increasing value."""

    base: str
    steps: tuple[tuple[float, str], ...] = ()

    def build(self) -> db.ThresholdsConfig:
        """The SDK thresholds."""
        return (
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    dm.Threshold(value=None, color=self.base),
                    *(dm.Threshold(value=v, color=c) for v, c in self.steps),
                ]
            )
        )

    @property
    def meaningful(self) -> bool:
        """Whether the panel has a threshold to draw."""
        return bool(self.steps)


NO_MEANING: Final = Steps(NEUTRAL)


def band(b: Band) -> Steps:
    """Green, then orange at the warning and red at the critical value, in the bad direction."""
    if b.high_is_bad:
        return Steps(GOOD, ((b.warning, WARN), (b.critical, BAD)))
    return Steps(BAD, ((b.critical, WARN), (b.warning, GOOD)))


def above_bad(limit: float) -> Steps:
    """Green below ``limit``, red from it on."""
    return Steps(GOOD, ((limit, BAD),))


def below_bad(limit: float) -> Steps:
    """Red below ``limit``, green from it on."""
    return Steps(BAD, ((limit, GOOD),))


def ramp_up(*limits: tuple[float, str]) -> Steps:
    """Green base and the given (value, colour) steps, sorted by value."""
    return Steps(GOOD, tuple(sorted(limits)))


# --- queries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False

    def build(self, ref_id: str) -> pb.Dataquery:
        """The SDK query."""
        q = (
            pb.Dataquery()
            .expr(self.expr)
            .ref_id(ref_id)
            .datasource(DATASOURCE)
            .legend_format(self.legend or "__auto")
        )
        q = q.instant() if self.instant else q.range()
        if self.table:
            q = q.format(pm.PromQueryFormat.TABLE)
        return q


def sum_rate(labels: Sequence[str], selector: str, window: str = RATE) -> str:
    """``sum by (labels) (rate(selector[window]))``."""
    grouping = f" {by(*labels)}" if labels else ""
    return f"sum{grouping} (rate({selector}[{window}]))"


def per_hour(expr: str) -> str:
    """A per-second rate as a per-hour one."""
    return f"{expr} * {cat.HOUR:g}"


def ratio(numerator: str, denominator: str) -> str:
    """Two aggregations divided, one per line."""
    return f"{numerator}\n/\n{denominator}"


def topk(config: MixinConfig, expr: str) -> str:
    """The configured number of largest series."""
    return f"topk({config.top_n}, {expr})"


def effective_threshold(config: MixinConfig) -> str:
    """Each facility's backlog threshold, the default where none is configured.

    Restricted to the facilities the region and facility variables select (the threshold
    gauge itself has no region label, so the backlog gauge carries the filter).
    """
    selected = f"max by (facility) ({sel(cat.BACKLOG_ITEMS.name, JOB, INSTANCE, REGION, FACILITY)})"
    configured = f"max by (facility) ({sel(cat.BACKLOG_THRESHOLD.name, JOB, INSTANCE, FACILITY)})"
    return (
        f"(\n  {configured}\n  or on (facility)\n"
        f"  0 * {selected} + {config.default_backlog_threshold}\n)\n"
        f"and on (facility)\n{selected}"
    )


# --- links -----------------------------------------------------------------------------


def api_link(
    config: MixinConfig, title: str, path: str, params: dict[str, str], window: str = "range"
) -> db.DashboardLink:
    """A data link to an analyst-API list carrying the panel's values and time range.

    ``window``: ``range`` passes Grafana's time range as ``from``/``to``; ``as_of`` passes its
    end as the snapshot instant (lists of what waits now have no period).
    """
    query = dict(params)
    if window == "range":
        query |= {"from": FROM_ISO, "to": TO_ISO}
    else:
        query |= {"as_of": TO_ISO}
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return db.DashboardLink(title).url(f"{config.api_url}/api/v1/{path}?{text}").target_blank(True)


def dashboard_link(title: str, uid: str, params: str = "") -> db.DashboardLink:
    """A data link to another dashboard keeping the time range."""
    return db.DashboardLink(title).url(f"/d/{uid}/{uid}?{params}${{__url_time_range}}")


# --- panels ----------------------------------------------------------------------------

_REFS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Common:
    """What every panel has."""

    title: str
    description: str
    unit: str
    queries: tuple[Q, ...]
    steps: Steps = NO_MEANING
    links: tuple[db.DashboardLink, ...] = ()
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    decimals: int | None = None


def _apply(panel: Any, c: Common) -> Any:
    panel = (
        panel.title(c.title)
        .description(c.description)
        .datasource(DATASOURCE)
        .unit(c.unit)
        .span(c.width)
        .height(c.height)
        .thresholds(c.steps.build())
        .targets([q.build(_REFS[i]) for i, q in enumerate(c.queries)])
    )
    if c.links:
        panel = panel.data_links(list(c.links))
    for name in ("min", "max", "decimals"):
        value = getattr(c, name)
        if value is not None:
            panel = getattr(panel, name)(value)
    return panel


def ts(
    c: Common,
    *,
    stacked: bool = False,
    dashed: str = "",
    overrides: Iterable[tuple[str, list[dm.DynamicConfigValue]]] = (),
) -> timeseries.Panel:
    """A time series; its thresholds, when it has any, are drawn as dashed lines."""
    panel: timeseries.Panel = _apply(timeseries.Panel(), c)
    panel = (
        panel.line_width(1)
        .fill_opacity(30 if stacked else 10)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(
            cb.StackingConfig().mode(cm.StackingMode.NORMAL if stacked else cm.StackingMode.NONE)
        )
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)
        )
        .thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(
                cm.GraphThresholdsStyleMode.DASHED
                if c.steps.meaningful
                else cm.GraphThresholdsStyleMode.OFF
            )
        )
    )
    if dashed:
        panel = panel.override_by_regexp(
            dashed,
            [
                dm.DynamicConfigValue(
                    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                ),
                dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                dm.DynamicConfigValue(
                    id_val="custom.stacking", value={"mode": "none", "group": "A"}
                ),
            ],
        )
    for name, props in overrides:
        panel = panel.override_by_name(name, props)
    return panel


def _reduce() -> cb.ReduceDataOptions:
    return cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def big(
    c: Common,
    *,
    mappings: Sequence[dm.ValueMapping] = (),
    overrides: Iterable[tuple[str, list[dm.DynamicConfigValue]]] = (),
) -> stat.Panel:
    """A stat: the value coloured by its thresholds (neutral when it has none)."""
    panel: stat.Panel = _apply(stat.Panel(), c)
    panel = (
        panel.reduce_options(_reduce())
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .text_mode(cm.BigValueTextMode.AUTO)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
    )
    if mappings:
        panel = panel.mappings(list(mappings))
    for name, props in overrides:
        panel = panel.override_by_name(name, props)
    return panel


def bars(c: Common) -> bargauge.Panel:
    """A horizontal bar gauge, one bar per series."""
    panel: bargauge.Panel = _apply(bargauge.Panel(), c)
    return (
        panel.reduce_options(_reduce())
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(True)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
    )


def grid(
    c: Common,
    *,
    hide: Sequence[str] = ("Time", "__name__", "job"),
    merge: Sequence[str] = (),
    column_units: dict[str, str] | None = None,
) -> table.Panel:
    """An instant table without Prometheus' bookkeeping columns.

    ``merge``: one column name per query; the queries' rows are joined on their labels and
    each query's value column (``Value #A``, ...) renamed.
    """
    panel: table.Panel = _apply(table.Panel(), c)
    panel = panel.cell_height(cm.TableCellHeight.SM)
    if merge:
        panel = panel.with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
    rename = {f"Value #{_REFS[i]}": name for i, name in enumerate(merge)}
    panel = panel.with_transformation(
        dm.DataTransformerConfig(
            id_val="organize",
            options={"excludeByName": dict.fromkeys(hide, True), "renameByName": rename},
        )
    )
    for name, unit in (column_units or {}).items():
        panel = panel.override_by_name(name, [dm.DynamicConfigValue(id_val="unit", value=unit)])
    return panel


def health_mappings(ok: str, down: str) -> list[dm.ValueMapping]:
    """Value mappings of a 0/1 health value: 1 reads ``ok`` in green, 0 ``down`` in red."""
    return [
        dm.ValueMap(
            options={
                "0": dm.ValueMappingResult(text=down, color=BAD, index=0),
                "1": dm.ValueMappingResult(text=ok, color=GOOD, index=1),
            }
        ),
        dm.SpecialValueMap(
            options=dm.DashboardSpecialValueMapOptions(
                match=dm.SpecialValueMatch.NULL,
                result=dm.ValueMappingResult(text=f"{down} (no data)", color=BAD, index=2),
            )
        ),
    ]


def thresholds_override(steps: Steps) -> list[dm.DynamicConfigValue]:
    """An override's properties setting a field's thresholds."""
    built = steps.build().build()
    return [dm.DynamicConfigValue(id_val="thresholds", value=built)]


# --- variables -------------------------------------------------------------------------


def _all() -> dm.VariableOption:
    return dm.VariableOption(selected=True, text=["All"], value=["$__all"])


def query_var(name: str, label: str, query: str) -> db.QueryVariable:
    """A multi-select label_values variable with All (``.*``)."""
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": f"{name}-values"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(_all())
    )


def variables(config: MixinConfig, *extra: str) -> list[db.QueryVariable | db.DatasourceVariable]:
    """Datasource, job and instance, then the requested extra variables in order."""
    build = cat.EXPORTER_BUILD_INFO.series
    known = {
        "region": ("Region", f"label_values({sel(cat.BACKLOG_ITEMS.name, JOB)}, region)"),
        "facility": (
            "Facility",
            f"label_values({sel(cat.BACKLOG_ITEMS.name, JOB, REGION)}, facility)",
        ),
        "product": ("Product", f"label_values({sel(cat.ITEMS_IN_NETWORK.name, JOB)}, product)"),
        "category": (
            "Complaint category",
            f"label_values({sel(cat.COMPLAINTS.series, JOB, REGION)}, category)",
        ),
    }
    job = (
        db.QueryVariable("job")
        .label("Job")
        .datasource(DATASOURCE)
        .query({"query": f"label_values({build}, job)", "refId": "job-values"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(False)
        .include_all(False)
        .current(dm.VariableOption(selected=True, text=config.job, value=config.job))
    )
    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        job,
        query_var("instance", "Instance", f"label_values({sel(build, JOB)}, instance)"),
        *(query_var(name, *known[name]) for name in extra),
    ]


# --- dashboards ------------------------------------------------------------------------


def alerts_annotation(config: MixinConfig) -> db.AnnotationQuery:
    """Firing ``Postal*`` alerts marked on every time series."""
    return (
        db.AnnotationQuery()
        .name("Firing Postal alerts")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(BAD)
        .expr(f'ALERTS{{alertstate="firing", alertname=~"Postal.+", {JOB}}}')
    )


#: Prometheus-specific annotation fields the SDK's generic model does not carry.
ALERT_ANNOTATION_EXTRA: Final = {
    "step": "1m",
    "titleFormat": "{{alertname}} ({{severity}})",
    "tagKeys": "severity,facility,region,destination,product",
    "useValueForTime": False,
}


def board(
    config: MixinConfig,
    uid: str,
    title: str,
    description: str,
    variables_: Sequence[db.QueryVariable | db.DatasourceVariable],
    links: Sequence[db.DashboardLink] = (),
) -> db.Dashboard:
    """A dashboard with the house settings: tags, shared crosshair, refresh, annotations."""
    builtin = (
        db.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
        .built_in(1)
    )
    dashboards_menu = (
        db.DashboardLink("Postal dashboards")
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(TAGS)
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    )
    api_session = (
        db.DashboardLink("API sign-in (drill-down links)")
        .type(dm.DashboardLinkType.LINK)
        .url(f"{config.api_url}/session")
        .target_blank(True)
        .icon("external link")
        .tooltip("Sign in once with an API key so the drill-down links open (read-only)")
    )
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("browser")
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("1m")
        .time("now-24h", "now")
        .version(1)
        .annotations([builtin, alerts_annotation(config)])
        .links([dashboards_menu, api_session, *links])
        .variables(list(variables_))
    )


def row(title: str) -> db.Row:
    """A row header (rows hold no panels here: the panels follow it on the grid)."""
    return db.Row(title).collapsed(False)


def _layout(panels: list[dict[str, Any]]) -> None:
    """Pack panels left to right under their row, a new line when one does not fit.

    (The SDK's builder places a panel where the previous one ended even when it is too
    wide for the rest of the line.)
    """
    x = y = line = 0
    for panel in panels:
        pos = panel["gridPos"]
        if panel["type"] == "row" or x + pos["w"] > GRID_WIDTH:
            x, y, line = 0, y + line, 0
        pos["x"], pos["y"] = x, y
        if panel["type"] == "row":
            y += pos["h"]
            continue
        x += pos["w"]
        line = max(line, pos["h"])


@dataclass(frozen=True)
class Note:
    """What an operator asks a panel, and the alerts whose runbooks go with it."""

    question: str
    alerts: tuple[str, ...] = ()


def note(question: str, *alerts: str) -> Note:
    """A panel's question (it ends in '?') and related alert names."""
    if not question.endswith("?"):
        raise ValueError(f"a question ends with '?': {question!r}")
    return Note(question, alerts)


def render(
    dashboard: db.Dashboard, config: MixinConfig, notes: Mapping[str, Note]
) -> dict[str, Any]:
    """The dashboard's JSON: laid out, ids numbered in grid order, variable definitions shown,
    the alert annotation's Prometheus fields; each panel's question leads its description and
    its alerts' runbooks are panel links."""
    data: dict[str, Any] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        found = notes.get(panel["title"])
        if found is None:
            raise KeyError(f"{data['uid']}: no question for panel {panel['title']!r}")
        panel["description"] = f"{found.question} {panel['description']}"
        panel["links"] = [
            {"title": f"Runbook: {name}", "url": config.runbook(name), "targetBlank": True}
            for name in found.alerts
        ]
    unused = set(notes) - {p["title"] for p in data["panels"]}
    if unused:
        raise KeyError(f"{data['uid']}: questions for no panel: {sorted(unused)}")
    _layout(data["panels"])
    for i, panel in enumerate(data["panels"], start=1):
        panel["id"] = i
    for var in data["templating"]["list"]:
        if isinstance(var.get("query"), dict):
            var["definition"] = var["query"]["query"]
    for annotation in data["annotations"]["list"]:
        if annotation.get("expr"):
            annotation.update(ALERT_ANNOTATION_EXTRA)
    return data
