"""Grafana dashboards as code: small typed builders that emit dashboard JSON (schema 39)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from exporters import catalog as cat
from exporters.mixin import rules as rec
from exporters.mixin.config import MixinConfig
from exporters.mixin.promql import by, eq, sel

SCHEMA_VERSION: Final = 39
TAGS: Final = ["postal-kpi"]
DATASOURCE: Final = {"type": "prometheus", "uid": "${datasource}"}
RATE: Final = "$__rate_interval"

UID_OVERVIEW: Final = "postal-overview"
UID_FACILITY: Final = "postal-facility-backlog"
UID_TIMELINESS: Final = "postal-timeliness"
UID_COMPLAINTS: Final = "postal-complaints"
UID_EXPORTER: Final = "postal-exporter-health"

# Template-variable matchers. Recorded series keep ``job`` but not ``instance``.
JOB: Final = 'job=~"$job"'
INSTANCE: Final = 'instance=~"$instance"'
REGION: Final = 'region=~"$region"'
DEST: Final = 'destination=~"$region"'
FACILITY: Final = 'facility=~"$facility"'
PRODUCT: Final = 'product=~"$product"'


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False

    def to_dict(self, ref_id: str) -> dict[str, Any]:
        """Grafana's target JSON."""
        out: dict[str, Any] = {
            "refId": ref_id,
            "datasource": dict(DATASOURCE),
            "expr": self.expr,
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "instant": self.instant,
        }
        if self.table:
            out["format"] = "table"
        return out


@dataclass(frozen=True)
class Link:
    """A panel data link or dashboard link."""

    title: str
    url: str
    blank: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Grafana's data-link JSON."""
        return {"title": self.title, "url": self.url, "targetBlank": self.blank}


@dataclass(frozen=True)
class Panel:
    """A panel; ``kind`` is a Grafana panel type (timeseries, stat, table, bargauge)."""

    kind: str
    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    #: Threshold steps (value, color) above the base green.
    thresholds: tuple[tuple[float, str], ...] = ()
    stacked: bool = False
    links: tuple[Link, ...] = ()
    #: Series whose legend matches this regex are drawn as dashed lines (thresholds, objectives).
    dashed: str = ""
    decimals: int | None = None

    def to_dict(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        """Grafana's panel JSON at grid position (x, y)."""
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        steps += [{"color": color, "value": value} for value, color in self.thresholds]
        defaults: dict[str, Any] = {
            "unit": self.unit,
            "thresholds": {"mode": "absolute", "steps": steps},
            "links": [link.to_dict() for link in self.links],
        }
        for key in ("min", "max", "decimals"):
            value = getattr(self, key)
            if value is not None:
                defaults[key] = value
        overrides: list[dict[str, Any]] = []
        options: dict[str, Any]
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 30 if self.stacked else 10,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"mode": "normal" if self.stacked else "none", "group": "A"},
            }
            options = {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
            if self.dashed:
                overrides.append(
                    {
                        "matcher": {"id": "byRegexp", "options": self.dashed},
                        "properties": [
                            {
                                "id": "custom.lineStyle",
                                "value": {"fill": "dash", "dash": [10, 10]},
                            },
                            {"id": "custom.fillOpacity", "value": 0},
                            {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
                        ],
                    }
                )
        elif self.kind in ("stat", "bargauge"):
            options = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "orientation": "horizontal" if self.kind == "bargauge" else "auto",
            }
            if self.kind == "stat":
                options |= {"colorMode": "value", "graphMode": "area", "textMode": "auto"}
            else:
                options |= {"displayMode": "gradient", "showUnfilled": True}
        elif self.kind == "table":
            options = {"showHeader": True, "cellHeight": "sm"}
        else:
            raise ValueError(f"unsupported panel type {self.kind}")
        refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        panel: dict[str, Any] = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": dict(DATASOURCE),
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": overrides},
            "options": options,
            "targets": [t.to_dict(refs[i]) for i, t in enumerate(self.targets)],
        }
        if self.kind == "table":
            # Instant table queries: hide Prometheus' bookkeeping columns.
            panel["transformations"] = [
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True, "__name__": True, "job": True}},
                }
            ]
        return panel


@dataclass(frozen=True)
class Variable:
    """A template variable: the datasource, or a label_values query."""

    name: str
    label: str
    query: str = ""
    multi: bool = True
    default: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Grafana's templating JSON."""
        if self.name == "datasource":
            return {
                "name": "datasource",
                "label": self.label,
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
                "regex": "",
                "options": [],
            }
        current = (
            {"text": self.default, "value": self.default}
            if self.default
            else {"text": ["All"], "value": ["$__all"]}
        )
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": dict(DATASOURCE),
            "query": {"query": self.query, "refId": f"{self.name}-values"},
            "definition": self.query,
            "refresh": 2,
            "sort": 1,
            "multi": self.multi,
            "includeAll": self.multi,
            "allValue": ".*" if self.multi else None,
            "current": current,
            "hide": 0,
            "options": [],
            "regex": "",
        }


@dataclass
class Dashboard:
    """A dashboard: panels are laid out left to right, wrapping at Grafana's 24 columns."""

    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    panels: list[Panel] = field(default_factory=list)
    links: tuple[Link, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Grafana's dashboard JSON."""
        laid_out = []
        x = y = row_height = 0
        for i, panel in enumerate(self.panels, start=1):
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            laid_out.append(panel.to_dict(i, x, y))
            x += panel.width
            row_height = max(row_height, panel.height)
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": TAGS,
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "1m",
            "time": {"from": "now-24h", "to": "now"},
            "timepicker": {},
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "annotations": {"list": []},
            "links": [
                {
                    "title": "Postal dashboards",
                    "type": "dashboards",
                    "tags": TAGS,
                    "asDropdown": True,
                    "includeVars": True,
                    "keepTime": True,
                    "targetBlank": False,
                    "icon": "external link",
                    "url": "",
                    "tooltip": "",
                },
                *(
                    {
                        "title": link.title,
                        "type": "link",
                        "url": link.url,
                        "targetBlank": link.blank,
                        "includeVars": False,
                        "keepTime": False,
                        "asDropdown": False,
                        "icon": "external link",
                        "tags": [],
                        "tooltip": "",
                    }
                    for link in self.links
                ),
            ],
            "templating": {"list": [v.to_dict() for v in self.variables]},
            "panels": laid_out,
        }


def variables(config: MixinConfig, *extra: str) -> tuple[Variable, ...]:
    """Datasource, job and instance, then the requested extra variables in order."""
    build = cat.EXPORTER_BUILD_INFO.series
    known = {
        "region": Variable(
            "region", "Region", f"label_values({sel(cat.BACKLOG_ITEMS.name, JOB)}, region)"
        ),
        "facility": Variable(
            "facility",
            "Facility",
            f"label_values({sel(cat.BACKLOG_ITEMS.name, JOB, REGION)}, facility)",
        ),
        "product": Variable(
            "product", "Product", f"label_values({sel(cat.ITEMS_IN_NETWORK.name, JOB)}, product)"
        ),
    }
    return (
        Variable("datasource", "Data source"),
        Variable("job", "Job", f"label_values({build}, job)", multi=False, default=config.job),
        Variable("instance", "Instance", f"label_values({sel(build, JOB)}, instance)"),
        *(known[name] for name in extra),
    )


def _per_hour(expr: str) -> str:
    return f"{expr} * 3600"


def _sum_rate(labels: tuple[str, ...], selector: str) -> str:
    grouping = f" {by(*labels)}" if labels else ""
    return f"sum{grouping} (rate({selector}[{RATE}]))"


def _link(uid: str, title: str, params: str = "") -> str:
    return f"/d/{uid}/{uid}?{params}${{__url_time_range}}"


def overview(config: MixinConfig) -> Dashboard:
    """National overview: timeliness vs objective, volume, backlog hot spots, complaints, alerts."""
    api = config.api_url
    delivered_ok = rec.on_time_delivered("1d")
    judged = rec.judged_delivered("1d")
    transit = cat.TRANSIT_TIME
    flow = (JOB, INSTANCE, PRODUCT, DEST)
    le_72h = eq("le", transit.le(cat.SECONDS_72H))
    backlog_by_facility = (
        f"sum by (facility, facility_type, region) "
        f"({sel(cat.BACKLOG_ITEMS.name, JOB, INSTANCE, REGION)})"
    )
    facility_param = "var-facility=${__data.fields.facility}&"
    board = Dashboard(
        UID_OVERVIEW,
        "Postal / National overview",
        "Peak-season national view: on-time delivery against objectives, volume, backlog "
        "hot spots, complaints and active alerts.",
        variables(config, "region", "product"),
        links=(
            Link("Facility backlog", _link(UID_FACILITY, "backlog")),
            Link("API: late items", f"{api}/api/v1/late-items", blank=True),
            Link("API: backlog items", f"{api}/api/v1/backlog", blank=True),
        ),
    )
    board.panels += [
        Panel(
            "timeseries",
            "On-time ratio by product vs objective (1 day)",
            "Share of judged deliveries (items with a promise) delivered on time over the "
            "trailing day, summed over destinations before dividing; dashed: the objective.",
            "percentunit",
            (
                Target(
                    f"sum by (product) ({sel(delivered_ok, JOB, PRODUCT, DEST)})\n/\n"
                    f"sum by (product) ({sel(judged, JOB, PRODUCT, DEST)})",
                    "{{product}}",
                ),
                Target(sel(rec.SLO_OBJECTIVE, JOB, PRODUCT), "{{product}} objective"),
            ),
            max=1,
            dashed=".*objective",
        ),
        Panel(
            "stat",
            "72-hour on-time rate",
            "Share of items delivered within 72 hours of acceptance (SPB 72小时准时率), "
            "exact from the transit-time histogram bucket at 72 h.",
            "percentunit",
            (
                Target(
                    f"{_sum_rate((), sel(transit.bucket, *flow, le_72h))}\n/\n"
                    f"{_sum_rate((), sel(transit.count, *flow))}"
                ),
            ),
            width=6,
            min=0,
            max=1,
            decimals=1,
        ),
        Panel(
            "stat",
            "Mean full-process time",
            "Mean time from acceptance to delivery of items delivered in the interval "
            "(SPB 全程时限).",
            "s",
            (
                Target(
                    f"{_sum_rate((), sel(transit.sum, *flow))}\n/\n"
                    f"{_sum_rate((), sel(transit.count, *flow))}"
                ),
            ),
            width=6,
            thresholds=((3 * cat.DAY, "orange"),),
        ),
        Panel(
            "timeseries",
            "Volume: accepted and delivered per hour",
            "Items accepted into and delivered out of the network, per hour.",
            "short",
            (
                Target(_per_hour(_sum_rate((), sel(cat.ITEMS_ACCEPTED.series, *flow))), "accepted"),
                Target(
                    _per_hour(_sum_rate((), sel(cat.ITEMS_DELIVERED.series, *flow))), "delivered"
                ),
            ),
        ),
        Panel(
            "timeseries",
            "Items in network and overdue",
            "Items accepted and not yet delivered or returned, and those already past their "
            "promised deadline.",
            "short",
            (
                Target(f"sum ({sel(cat.ITEMS_IN_NETWORK.name, *flow)})", "in network"),
                Target(f"sum ({sel(cat.ITEMS_OVERDUE.name, *flow)})", "overdue"),
            ),
        ),
        Panel(
            "table",
            "Backlog hot spots",
            "The ten facilities with the most waiting items. Click a facility for its backlog "
            "dashboard or the API's item list.",
            "short",
            (Target(f"topk(10, {backlog_by_facility})", instant=True, table=True),),
            links=(
                Link("Facility backlog dashboard", _link(UID_FACILITY, "", facility_param)),
                Link(
                    "Waiting items (API)",
                    f"{api}/api/v1/backlog?facility=${{__data.fields.facility}}",
                    blank=True,
                ),
            ),
        ),
        Panel(
            "bargauge",
            "Complaints per million items by region (1 day)",
            "Complaints opened in the trailing day per million items accepted for that "
            "region (the complaint region is the destination).",
            "short",
            (
                Target(
                    f"1e6 * sum by (region) ({sel(rec.COMPLAINTS_1D, JOB, REGION)})\n/\n"
                    f"sum by (region) ({sel(rec.ACCEPTED_BY_REGION_1D, JOB, REGION)})",
                    "{{region}}",
                ),
            ),
            thresholds=((40, "orange"), (100, "red")),
        ),
        Panel(
            "table",
            "Active alerts",
            "Postal alerts currently firing, from Prometheus' ALERTS series.",
            "none",
            (
                Target(
                    'ALERTS{alertstate="firing", alertname=~"Postal.+"}',
                    instant=True,
                    table=True,
                ),
            ),
            width=24,
        ),
    ]
    return board


def facility(config: MixinConfig) -> Dashboard:
    """Facility backlog: items per facility vs threshold, age bands, oldest item, trend."""
    scope = (JOB, INSTANCE, REGION, FACILITY)
    items = cat.BACKLOG_ITEMS.name
    return Dashboard(
        UID_FACILITY,
        "Postal / Facility backlog",
        "Backlog per facility in items and in time (oldest waiting item), by age band, "
        "against the facility's threshold, and whether it grows or drains.",
        variables(config, "region", "facility"),
        links=(Link("API: backlog items", f"{config.api_url}/api/v1/backlog", blank=True),),
        panels=[
            Panel(
                "timeseries",
                "Waiting items vs threshold",
                "Items waiting at each facility; dashed: the facility's configured threshold "
                f"(alerts use {config.default_backlog_threshold} where none is configured).",
                "short",
                (
                    Target(f"sum by (facility) ({sel(items, *scope)})", "{{facility}}"),
                    Target(
                        f"max by (facility) "
                        f"({sel(cat.BACKLOG_THRESHOLD.name, JOB, INSTANCE, FACILITY)})",
                        "{{facility}} threshold",
                    ),
                ),
                dashed=".*threshold",
                links=(
                    Link(
                        "Waiting items (API)",
                        f"{config.api_url}/api/v1/backlog?facility=${{__field.labels.facility}}",
                        blank=True,
                    ),
                ),
            ),
            Panel(
                "timeseries",
                "Waiting items by age band",
                "Waiting items stacked by how long they have waited (lt_6h ... ge_48h).",
                "short",
                (Target(f"sum by (age_band) ({sel(items, *scope)})", "{{age_band}}"),),
                stacked=True,
            ),
            Panel(
                "timeseries",
                "Oldest waiting item",
                "Age of the oldest item waiting at each facility; alerts at 24 h (warning) and "
                "48 h (critical).",
                "s",
                (
                    Target(
                        f"max by (facility) ({sel(cat.BACKLOG_OLDEST_AGE.name, *scope)})",
                        "{{facility}}",
                    ),
                ),
                thresholds=(
                    (config.backlog_oldest_warning_seconds, "orange"),
                    (config.backlog_oldest_critical_seconds, "red"),
                ),
            ),
            Panel(
                "timeseries",
                "Backlog change over the last hour",
                "Change in waiting items over the trailing hour: above zero growing, below "
                "zero draining, flat at a high level stalled.",
                "short",
                (Target(f"sum by (facility) (delta({sel(items, *scope)}[1h]))", "{{facility}}"),),
            ),
            Panel(
                "bargauge",
                "Backlog as share of threshold",
                "Waiting items divided by the facility's configured threshold (facilities "
                "with a threshold only).",
                "percentunit",
                (
                    Target(
                        f"sum by (facility) ({sel(items, *scope)})\n"
                        "/ on (facility) group_left ()\n"
                        f"max by (facility) "
                        f"({sel(cat.BACKLOG_THRESHOLD.name, JOB, INSTANCE, FACILITY)})",
                        "{{facility}}",
                    ),
                ),
                thresholds=((0.8, "orange"), (1, "red")),
            ),
            Panel(
                "timeseries",
                "Stalled items by region",
                "Items with no tracking event for longer than the stall limit, by region of "
                "their last event.",
                "short",
                (
                    Target(
                        f"sum by (region) ({sel(cat.ITEMS_STALLED.name, JOB, INSTANCE, REGION)})",
                        "{{region}}",
                    ),
                ),
            ),
        ],
    )


def timeliness(config: MixinConfig) -> Dashboard:
    """Timeliness by product and destination, transit percentiles, D+n shares, SLO budget."""
    transit = cat.TRANSIT_TIME
    flow = (JOB, INSTANCE, PRODUCT, DEST)
    api = config.api_url
    standard_targets = tuple(
        Target(
            f"{_sum_rate((), sel(transit.bucket, *flow, eq('le', transit.le(d * cat.DAY))))}\n/\n"
            f"{_sum_rate((), sel(transit.count, *flow))}",
            f"within {d} d",
        )
        for d in cat.SERVICE_STANDARD_DAYS
    )

    def budget_burn(window: str) -> str:
        return (
            f"{sel(rec.slo_errors(window), JOB, PRODUCT)}\n/ on (job, product) group_left ()\n"
            f"{sel(rec.SLO_ERROR_BUDGET, JOB, PRODUCT)}"
        )

    attempts = cat.DELIVERY_ATTEMPTS.series
    return Dashboard(
        UID_TIMELINESS,
        "Postal / Timeliness",
        "On-time delivery by product and destination, transit-time percentiles, share "
        "delivered within each service standard, first-attempt delivery and the on-time SLO.",
        variables(config, "region", "product"),
        links=(Link("API: late items", f"{api}/api/v1/late-items", blank=True),),
        panels=[
            Panel(
                "timeseries",
                "On-time ratio by product (1 hour) vs objective",
                "On-time share of judged deliveries over the trailing hour; dashed: objective.",
                "percentunit",
                (
                    Target(
                        f"sum by (product) ({sel(rec.on_time_delivered('1h'), JOB, PRODUCT, DEST)})"
                        f"\n/\nsum by (product) ({sel(rec.judged_delivered('1h'), JOB, PRODUCT, DEST)})",
                        "{{product}}",
                    ),
                    Target(sel(rec.SLO_OBJECTIVE, JOB, PRODUCT), "{{product}} objective"),
                ),
                max=1,
                dashed=".*objective",
            ),
            Panel(
                "bargauge",
                "On-time ratio by destination (1 day)",
                "On-time share of judged deliveries over the trailing day per destination "
                "region, products summed before dividing.",
                "percentunit",
                (
                    Target(
                        f"sum by (destination) ({sel(rec.on_time_delivered('1d'), JOB, PRODUCT, DEST)})"
                        f"\n/\nsum by (destination) "
                        f"({sel(rec.judged_delivered('1d'), JOB, PRODUCT, DEST)})",
                        "{{destination}}",
                    ),
                ),
                min=0,
                max=1,
                links=(
                    Link(
                        "Late items (API)",
                        f"{api}/api/v1/late-items?destination=${{__field.labels.destination}}",
                        blank=True,
                    ),
                ),
            ),
            Panel(
                "timeseries",
                "Transit time p50 / p90 by product",
                "Acceptance-to-delivery time percentiles estimated from the histogram "
                "(exact at bucket edges, interpolated between them).",
                "s",
                tuple(
                    Target(
                        f"histogram_quantile({q}, "
                        f"{_sum_rate(('le', 'product'), sel(transit.bucket, *flow))})",
                        f"{{{{product}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ),
            ),
            Panel(
                "timeseries",
                "Share delivered within D+n days",
                "Cumulative share of deliveries within each service-standard deadline "
                "(bucket edges sit exactly at 1, 2, 3, 4, 6, 7 and 10 days); the gap between "
                "curves approximates late +1/+2/+3 days. Item detail: API late-items.",
                "percentunit",
                standard_targets,
                max=1,
            ),
            Panel(
                "stat",
                "On-time SLO error budget remaining",
                f"Share of the {config.slo_period} error budget (1 - objective) not yet "
                "consumed by late deliveries, per product.",
                "percentunit",
                (Target(sel(rec.SLO_BUDGET_REMAINING, JOB, PRODUCT), "{{product}}"),),
                width=6,
                thresholds=((0.25, "orange"), (0.5, "green")),
            ),
            Panel(
                "timeseries",
                "On-time SLO burn rate",
                "How many times faster than sustainable the error budget burns (1 = exactly "
                "spent at the end of the period); pages at 14.4 (1 h) and 6 (6 h).",
                "none",
                (
                    Target(
                        budget_burn("1h"),
                        "{{product}} 1h",
                    ),
                    Target(
                        budget_burn("6h"),
                        "{{product}} 6h",
                    ),
                ),
                width=18,
                thresholds=((6, "orange"), (14.4, "red")),
            ),
            Panel(
                "timeseries",
                "First-attempt delivery ratio by product",
                "Items delivered at the first attempt / items with a first attempt.",
                "percentunit",
                (
                    Target(
                        f"{_sum_rate(('product',), sel(attempts, *flow, eq('attempt', 'first'), eq('outcome', 'delivered')))}"
                        f"\n/\n{_sum_rate(('product',), sel(attempts, *flow, eq('attempt', 'first')))}",
                        "{{product}}",
                    ),
                ),
                max=1,
            ),
            Panel(
                "timeseries",
                "Failed delivery attempts per hour by reason",
                "Failed delivery attempts per hour, by non-delivery reason.",
                "short",
                (
                    Target(
                        _per_hour(
                            _sum_rate(("reason",), sel(cat.DELIVERY_FAILURES.series, JOB, INSTANCE))
                        ),
                        "{{reason}}",
                    ),
                ),
            ),
            Panel(
                "timeseries",
                "Overdue items by product",
                "Items in the network past their promised deadline.",
                "short",
                (
                    Target(
                        f"sum by (product) ({sel(cat.ITEMS_OVERDUE.name, *flow)})", "{{product}}"
                    ),
                ),
            ),
            Panel(
                "timeseries",
                "Returns per hour by product",
                "Items returned to sender, per hour.",
                "short",
                (
                    Target(
                        _per_hour(_sum_rate(("product",), sel(cat.ITEMS_RETURNED.series, *flow))),
                        "{{product}}",
                    ),
                ),
            ),
        ],
    )


def complaints(config: MixinConfig) -> Dashboard:
    """Complaints by category and region, per million items, open and past the deadline."""
    scope = (JOB, INSTANCE, REGION)
    res = cat.COMPLAINT_RESOLUTION
    days = config.complaint_reply_days
    return Dashboard(
        UID_COMPLAINTS,
        "Postal / Complaints",
        "Complaints by category and region, complaint rates per million items, open "
        f"complaints and those past the {days}-day reply deadline.",
        variables(config, "region"),
        panels=[
            Panel(
                "timeseries",
                "Complaints per hour by category",
                "Complaints opened per hour, by category.",
                "short",
                (
                    Target(
                        _per_hour(_sum_rate(("category",), sel(cat.COMPLAINTS.series, *scope))),
                        "{{category}}",
                    ),
                ),
                stacked=True,
            ),
            Panel(
                "timeseries",
                "Complaints per million items by region (1 day)",
                "Complaints opened in the trailing day per million items accepted for the "
                "region (SPB 申诉率), and valid complaints only (有效申诉率, dashed).",
                "short",
                (
                    Target(
                        f"1e6 * sum by (region) ({sel(rec.COMPLAINTS_1D, JOB, REGION)})\n/\n"
                        f"sum by (region) ({sel(rec.ACCEPTED_BY_REGION_1D, JOB, REGION)})",
                        "{{region}}",
                    ),
                    Target(
                        f"1e6 * sum by (region) ({sel(rec.VALID_COMPLAINTS_1D, JOB, REGION)})\n/\n"
                        f"sum by (region) ({sel(rec.ACCEPTED_BY_REGION_1D, JOB, REGION)})",
                        "{{region}} valid",
                    ),
                ),
                dashed=".*valid",
            ),
            Panel(
                "bargauge",
                "Open complaints by region",
                "Complaints not yet resolved.",
                "short",
                (
                    Target(
                        f"sum by (region) ({sel(cat.COMPLAINTS_OPEN.name, *scope)})", "{{region}}"
                    ),
                ),
            ),
            Panel(
                "bargauge",
                f"Complaints past the {days}-day reply deadline",
                f"Open complaints older than {days} days: users may now appeal to the regulator.",
                "short",
                (
                    Target(
                        f"sum by (region) ({sel(cat.COMPLAINTS_OVERDUE.name, *scope)})",
                        "{{region}}",
                    ),
                ),
                thresholds=((1, "red"),),
            ),
            Panel(
                "timeseries",
                "Resolution time p50 / p90",
                "Opening-to-resolution time of complaints resolved in the interval.",
                "s",
                tuple(
                    Target(
                        f"histogram_quantile({q}, {_sum_rate(('le',), sel(res.bucket, *scope))})",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ),
                thresholds=((days * cat.DAY, "red"),),
            ),
            Panel(
                "timeseries",
                f"Share resolved within {days} days",
                f"Share of resolved complaints answered within the {days}-day deadline (exact: a "
                "bucket edge sits at 7 days).",
                "percentunit",
                (
                    Target(
                        f"{_sum_rate((), sel(res.bucket, *scope, eq('le', res.le(days * cat.DAY))))}"
                        f"\n/\n{_sum_rate((), sel(res.count, *scope))}",
                        "within deadline",
                    ),
                ),
                max=1,
            ),
        ],
    )


def exporter_health(config: MixinConfig) -> Dashboard:
    """Exporter self-monitoring: ingest, rejects, lag, scrape and batch durations."""
    scope = (JOB, INSTANCE)
    batch = cat.EXPORTER_BATCH_DURATION
    return Dashboard(
        UID_EXPORTER,
        "Postal / Exporter health",
        "Is the exporter up, reading its input, keeping up, and fast enough to scrape?",
        variables(config),
        panels=[
            Panel(
                "stat",
                "Up",
                "1 when Prometheus' last scrape of the exporter succeeded.",
                "none",
                (Target(sel("up", *scope), "{{instance}}"),),
                width=6,
            ),
            Panel(
                "stat",
                "Event lag",
                "Seconds since the newest event the exporter processed (the data-stale alert "
                f"fires above {config.data_stale_seconds:g} s).",
                "s",
                (
                    Target(
                        f"time() - max by (instance) "
                        f"({sel(cat.EXPORTER_LAST_EVENT_TIMESTAMP.name, *scope)})",
                        "{{instance}}",
                    ),
                ),
                width=6,
                thresholds=((config.data_stale_seconds, "red"),),
            ),
            Panel(
                "stat",
                "Items tracked",
                "Items whose state the exporter holds in memory, and the deliveries among"
                " them waiting for their acceptance (not counted yet).",
                "short",
                (
                    Target(
                        f"sum by (instance) ({sel(cat.EXPORTER_ITEMS_TRACKED.name, *scope)})",
                        "{{instance}}",
                    ),
                    Target(
                        f"sum by (instance) ({sel(cat.EXPORTER_AWAITING_ACCEPTANCE.name, *scope)})",
                        "{{instance}} awaiting acceptance",
                    ),
                ),
                width=6,
            ),
            Panel(
                "stat",
                "Since last checkpoint",
                "Seconds since the exporter last checkpointed its state.",
                "s",
                (
                    Target(
                        f"time() - max by (instance) "
                        f"({sel(cat.EXPORTER_LAST_CHECKPOINT_TIMESTAMP.name, *scope)})",
                        "{{instance}}",
                    ),
                ),
                width=6,
            ),
            Panel(
                "stat",
                "Reference files valid",
                "1 when the current version of facilities.csv / service-standards.yaml is in "
                "use; 0 when it was refused (the previous version stays in use).",
                "none",
                (
                    Target(
                        f"min by (instance, file) ({sel(cat.EXPORTER_CONFIG_VALID.name, *scope)})",
                        "{{instance}} {{file}}",
                    ),
                ),
                width=6,
            ),
            Panel(
                "timeseries",
                "Rows ingested and late events per second",
                "Input rows accepted per second, and events that arrived after a later event "
                "of the same item.",
                "cps",
                (
                    Target(
                        _sum_rate(("instance",), sel(cat.EXPORTER_EVENTS_INGESTED.series, *scope)),
                        "{{instance}} ingested",
                    ),
                    Target(
                        _sum_rate(("instance",), sel(cat.EXPORTER_LATE_EVENTS.series, *scope)),
                        "{{instance}} late",
                    ),
                ),
            ),
            Panel(
                "timeseries",
                "Rejected rows per second by reason",
                "Input rows or files rejected, by reason.",
                "cps",
                (
                    Target(
                        _sum_rate(("reason",), sel(cat.EXPORTER_EVENTS_REJECTED.series, *scope)),
                        "{{reason}}",
                    ),
                ),
                stacked=True,
            ),
            Panel(
                "timeseries",
                "Batch duration p50 / p99",
                "Wall time to ingest one batch and recompute the KPIs.",
                "s",
                tuple(
                    Target(
                        f"histogram_quantile({q}, "
                        f"{_sum_rate(('le', 'instance'), sel(batch.bucket, *scope))})",
                        f"{{{{instance}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ),
            ),
            Panel(
                "timeseries",
                "Scrape duration",
                "How long Prometheus takes to scrape the exporter.",
                "s",
                (Target(sel("scrape_duration_seconds", *scope), "{{instance}}"),),
            ),
            Panel(
                "timeseries",
                "Samples per scrape",
                "Samples the exporter returns per scrape: watch for series growth.",
                "short",
                (Target(sel("scrape_samples_scraped", *scope), "{{instance}}"),),
            ),
            Panel(
                "table",
                "Exporter version",
                "Version of each exporter instance, from its build-info series.",
                "none",
                (Target(sel(cat.EXPORTER_BUILD_INFO.series, *scope), instant=True, table=True),),
                width=24,
                height=5,
            ),
        ],
    )


def all_dashboards(config: MixinConfig) -> list[dict[str, Any]]:
    """Every dashboard's JSON."""
    return [
        d.to_dict()
        for d in (
            overview(config),
            facility(config),
            timeliness(config),
            complaints(config),
            exporter_health(config),
        )
    ]
