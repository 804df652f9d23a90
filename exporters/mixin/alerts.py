"""Alerting rules (mixin style): CamelCase ``Postal*`` names, severity, summary, description, runbook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from exporters import catalog as cat
from exporters.mixin import rules as rec
from exporters.mixin.config import MixinConfig
from exporters.mixin.promql import by, eq, sel
from kpi.contract import RejectReason

SEVERITIES: Final = ("critical", "warning", "info")

# Alert names, shared with Alertmanager inhibition rules, the runbooks and the tests.
BACKLOG_HIGH: Final = "PostalFacilityBacklogHigh"
BACKLOG_OLDEST: Final = "PostalBacklogItemWaitingTooLong"
BACKLOG_GROWING: Final = "PostalBacklogGrowing"
BUDGET_BURN: Final = "PostalOnTimeBudgetBurn"
OVERDUE_RISING: Final = "PostalOverdueItemsRising"
STALLED_RISING: Final = "PostalStalledItemsRising"
COMPLAINT_SPIKE: Final = "PostalComplaintSpike"
COMPLAINTS_PAST_DEADLINE: Final = "PostalComplaintsPastReplyDeadline"
DATA_STALE: Final = "PostalExporterDataStale"
EXPORTER_DOWN: Final = "PostalExporterDown"
REJECTS_HIGH: Final = "PostalExporterRejectingRows"
LATE_EVENTS: Final = "PostalExporterLateEvents"
KAFKA_LAG: Final = "PostalExporterKafkaLagGrowing"
#: A Kafka shard behind on a partition for this long (and falling further behind) pages.
KAFKA_LAG_SECONDS: Final = 600
CONFIG_INVALID: Final = "PostalExporterConfigInvalid"
CHECKPOINT_STALE: Final = "PostalExporterCheckpointStale"
#: A checkpoint older than this (every 10 s by default) means the state folder is
#: full or read-only: a restart would re-read everything since.
CHECKPOINT_STALE_SECONDS: Final = 600

#: Alerts that say the exporter's data cannot be trusted; they inhibit the data alerts.
EXPORTER_HEALTH_ALERTS: Final = (EXPORTER_DOWN, DATA_STALE)

FACILITY: Final = ("job", "facility", "facility_type", "region")


@dataclass(frozen=True)
class Alert:
    """One alerting rule."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook_url: str

    def __post_init__(self) -> None:
        """Keep every rule within the house style."""
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.name}: severity {self.severity!r}")
        if not self.name.startswith("Postal") or not self.name.isalnum():
            raise ValueError(f"{self.name}: alert names are CamelCase with the Postal prefix")

    def to_dict(self) -> dict[str, Any]:
        """The rule as it appears in a Prometheus rule file."""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url,
            },
        }


def _facility_text() -> str:
    return "{{ $labels.facility }} ({{ $labels.facility_type }}, {{ $labels.region }})"


def backlog_alerts(config: MixinConfig) -> list[Alert]:
    """Backlog above threshold, oldest item too old, backlog growing without draining."""
    job = eq("job", config.job)
    items = f"sum {by(*FACILITY)} ({sel(cat.BACKLOG_ITEMS.name, job)})"
    threshold = f"max {by('job', 'facility')} ({sel(cat.BACKLOG_THRESHOLD.name, job)})"
    # Facilities without a configured threshold get the default: "or on (facility)"
    # keeps the per-facility thresholds and fills only the gaps.
    default = (
        f"(0 * max {by('job', 'facility')} ({sel(cat.BACKLOG_ITEMS.name, job)})"
        f" + {config.default_backlog_threshold})"
    )
    oldest = f"max {by(*FACILITY)} ({sel(cat.BACKLOG_OLDEST_AGE.name, job)})"
    window = config.backlog_growth_window
    out = [
        Alert(
            BACKLOG_HIGH,
            f"{items}\n> on (job, facility) group_left ()\n(\n  {threshold}\n"
            f"  or on (job, facility)\n  {default}\n)",
            "15m",
            "critical",
            "Facility {{ $labels.facility }} backlog is above its threshold.",
            f"Facility {_facility_text()} holds {{{{ $value }}}} waiting items, above its "
            f"backlog threshold (default {config.default_backlog_threshold} where none is set). "
            f"Items: {config.api_url}/api/v1/backlog?facility={{{{ $labels.facility }}}}",
            config.runbook(BACKLOG_HIGH),
        )
    ]
    for severity, limit in (
        ("warning", config.backlog_oldest_warning_seconds),
        ("critical", config.backlog_oldest_critical_seconds),
    ):
        hours = int(limit // 3600)
        # Age bands that can hold items older than the limit (upper edge above it).
        uppers = (*cat.AGE_BAND_LOWER_SECONDS[1:], float("inf"))
        bands = "|".join(b for b, up in zip(cat.AGE_BANDS, uppers, strict=True) if up > limit)
        aged = f'sum {by(*FACILITY)} ({cat.BACKLOG_ITEMS.name}{{{job}, age_band=~"{bands}"}})'
        out.append(
            Alert(
                BACKLOG_OLDEST,
                f"{oldest} > {limit:g}\nand on (job, facility)\n{aged} >= "
                f"{config.backlog_oldest_min_items}",
                "15m",
                severity,
                f"An item has waited more than {hours}h at facility {{{{ $labels.facility }}}}.",
                f"The oldest item at facility {_facility_text()} has waited "
                f"{{{{ $value | humanizeDuration }}}} (limit {hours}h). "
                f"Items: {config.api_url}/api/v1/backlog?facility={{{{ $labels.facility }}}}",
                config.runbook(BACKLOG_OLDEST),
            )
        )
    # Burrow-style: growing over the whole window (positive slope), at its peak of the
    # last hour (not draining), and large enough to matter.
    growth = f"deriv({items}[{window}:5m]) * 3600"
    out.append(
        Alert(
            BACKLOG_GROWING,
            f"(\n  {growth} > 0\n)\nand\n(\n  {items}\n  >= max_over_time({items}[1h:5m])\n)\n"
            f"and\n(\n  {items} >= {config.backlog_growth_min_items}\n)",
            "30m",
            "warning",
            "Backlog at facility {{ $labels.facility }} keeps growing.",
            f"The backlog at facility {_facility_text()} has grown by "
            f'{{{{ $value | printf "%.0f" }}}} items per hour over the last {window} '
            "and is not draining.",
            config.runbook(BACKLOG_GROWING),
        )
    )
    return out


def slo_alerts(config: MixinConfig) -> list[Alert]:
    """Multi-window, multi-burn-rate on-time SLO alerts per product (page and ticket)."""
    job = eq("job", config.job)
    budget = sel(rec.SLO_ERROR_BUDGET, job)
    out: list[Alert] = []
    for severity in ("critical", "warning"):
        windows = [w for w in config.burn_windows if w.severity == severity]
        if not windows:
            continue
        conditions = []
        for w in windows:
            # $value is the long-window burn rate: error ratio / error budget.
            long = (
                f"  {sel(rec.slo_errors(w.long), job)}\n  / on (job, product) group_left ()\n"
                f"  {budget}\n  > {w.factor:g}"
            )
            short = (
                f"  {sel(rec.slo_errors(w.short), job)}\n  / on (job, product) group_left ()\n"
                f"  {budget}\n  > {w.factor:g}"
            )
            conditions.append(f"(\n{long}\nand\n{short}\n)")
        spans = " or ".join(f"{w.long}/{w.short} > {w.factor:g}x" for w in windows)
        out.append(
            Alert(
                BUDGET_BURN,
                "\nor\n".join(conditions),
                "2m" if severity == "critical" else "15m",
                severity,
                "{{ $labels.product }} on-time SLO error budget is burning too fast.",
                "Late deliveries of {{ $labels.product }} burn the on-time error budget "
                f'{{{{ $value | printf "%.1f" }}}} times faster than sustainable ({spans}; '
                f"objective over {config.slo_period}). "
                f"Late items: {config.api_url}/api/v1/late-items?product={{{{ $labels.product }}}}",
                config.runbook(BUDGET_BURN),
            )
        )
    return out


def flow_alerts(config: MixinConfig) -> list[Alert]:
    """Overdue and stalled items rising."""
    job = eq("job", config.job)
    overdue = f"sum {by('job', 'product', 'destination')} ({sel(cat.ITEMS_OVERDUE.name, job)})"
    stalled = f"sum {by('job', 'region')} ({sel(cat.ITEMS_STALLED.name, job)})"
    return [
        Alert(
            OVERDUE_RISING,
            f"{overdue}\n-\n{_offset(overdue)}\n> {config.overdue_rise_items}",
            "30m",
            "warning",
            "Overdue {{ $labels.product }} items for {{ $labels.destination }} are rising.",
            "Overdue {{ $labels.product }} items for {{ $labels.destination }} (past their "
            "promised deadline, still in the network) rose by {{ $value }} in the last hour. "
            f"Items: {config.api_url}/api/v1/late-items?kind=overdue"
            "&product={{ $labels.product }}&destination={{ $labels.destination }}",
            config.runbook(OVERDUE_RISING),
        ),
        Alert(
            STALLED_RISING,
            f"{stalled}\n-\n{_offset(stalled)}\n> {config.stalled_rise_items}",
            "30m",
            "warning",
            "Stalled items in {{ $labels.region }} are rising.",
            "Items whose last scan was in {{ $labels.region }} and that have had no tracking "
            "event for too long rose by {{ $value }} in the last hour.",
            config.runbook(STALLED_RISING),
        ),
    ]


def complaint_alerts(config: MixinConfig) -> list[Alert]:
    """Complaint spike against the region's own baseline; complaints past the reply deadline."""
    job = eq("job", config.job)
    recorded = sel(rec.COMPLAINTS_RATE_1H, job)
    hourly = f"{recorded} * 3600"
    baseline = f"avg_over_time({recorded}[7d]) * 3600"
    overdue = f"sum {by('job', 'region')} ({sel(cat.COMPLAINTS_OVERDUE.name, job)})"
    days = config.complaint_reply_days
    return [
        Alert(
            COMPLAINT_SPIKE,
            f"(\n  {hourly}\n  > {config.complaint_spike_factor:g} * {baseline}\n)\n"
            f"and\n(\n  {hourly} >= {config.complaint_spike_min_per_hour:g}\n)",
            "15m",
            "warning",
            "Complaints in {{ $labels.region }} are spiking.",
            '{{ $labels.region }} received {{ $value | printf "%.1f" }} complaints per hour '
            f"over the last hour, more than {config.complaint_spike_factor:g} times its "
            "7-day average.",
            config.runbook(COMPLAINT_SPIKE),
        ),
        Alert(
            COMPLAINTS_PAST_DEADLINE,
            f"{overdue} > 0",
            "1h",
            "warning",
            f"Complaints in {{{{ $labels.region }}}} are past the {days}-day reply deadline.",
            f"{{{{ $value }}}} open complaints in {{{{ $labels.region }}}} have waited more than "
            f"{days} days for an answer; users may now appeal to the regulator.",
            config.runbook(COMPLAINTS_PAST_DEADLINE),
        ),
    ]


def exporter_alerts(config: MixinConfig) -> list[Alert]:
    """Exporter down or absent, data stale, rejected rows, late events."""
    job = eq("job", config.job)
    up = sel("up", job)
    last_event = sel(cat.EXPORTER_LAST_EVENT_TIMESTAMP.name, job)
    rejected = f"{cat.EXPORTER_EVENTS_REJECTED.series}{{{job}}}"
    # Repeated scans are expected from at-least-once feeds: they are no defect to page on.
    defects = (
        f'{cat.EXPORTER_EVENTS_REJECTED.series}{{{job}, reason!="{RejectReason.DUPLICATE.value}"}}'
    )
    ingested = f"{cat.EXPORTER_EVENTS_INGESTED.series}{{{job}}}"
    late = f"{cat.EXPORTER_LATE_EVENTS.series}{{{job}}}"
    inst = ("job", "instance")
    minutes = int(config.data_stale_seconds // 60)
    all_rows = (
        f"(\n    sum {by(*inst)} (rate({ingested}[15m]))\n"
        f"    + sum {by(*inst)} (rate({rejected}[15m]))\n  )"
    )
    return [
        Alert(
            EXPORTER_DOWN,
            f"{up} == 0\nor\nabsent({up})",
            "5m",
            "critical",
            "The postal exporter is down or not scraped.",
            "Prometheus cannot scrape job {{ $labels.job }}"
            "{{ with $labels.instance }} at {{ . }}{{ end }}: "
            "no KPI is up to date and the data alerts are silenced.",
            config.runbook(EXPORTER_DOWN),
        ),
        Alert(
            DATA_STALE,
            f"time() - max {by(*inst)} ({last_event}) > {config.data_stale_seconds:g}",
            "5m",
            "critical",
            "The postal exporter has processed no new event for a while.",
            "The newest event processed by {{ $labels.instance }} is "
            "{{ $value | humanizeDuration }} old (limit "
            f"{minutes}m): the event feed or the exporter is stuck, so its KPIs are stale.",
            config.runbook(DATA_STALE),
        ),
        Alert(
            REJECTS_HIGH,
            f"sum {by(*inst, 'reason')} (rate({defects}[15m]))\n"
            f"/ on (job, instance) group_left ()\n  {all_rows}\n> {config.rejected_ratio:g}",
            "15m",
            "warning",
            "The postal exporter rejects many input rows ({{ $labels.reason }}).",
            "{{ $value | humanizePercentage }} of the input rows read by "
            "{{ $labels.instance }} over the last 15 minutes were rejected for "
            "{{ $labels.reason }}.",
            config.runbook(REJECTS_HIGH),
        ),
        Alert(
            LATE_EVENTS,
            f"sum {by(*inst)} (rate({late}[1h]))\n/\n"
            f"sum {by(*inst)} (rate({ingested}[1h]))\n> {config.late_events_ratio:g}",
            "30m",
            "info",
            "Many events reach the postal exporter out of order.",
            "{{ $value | humanizePercentage }} of the events ingested by {{ $labels.instance }} "
            "in the last hour arrived after a later event of the same item.",
            config.runbook(LATE_EVENTS),
        ),
    ]


def exporter_state_alerts(config: MixinConfig) -> list[Alert]:
    """Exporter inputs and state: Kafka lag, refused reference files, stale checkpoints."""
    job = eq("job", config.job)
    valid = sel(cat.EXPORTER_CONFIG_VALID.name, job)
    checkpoint = sel(cat.EXPORTER_LAST_CHECKPOINT_TIMESTAMP.name, job)
    inst = ("job", "instance")
    return [
        Alert(
            KAFKA_LAG,
            f"max by (job, topic, partition) ({sel(cat.KAFKA_LAG_AGE.name, job)})"
            f" > {KAFKA_LAG_SECONDS}\nand\n"
            f"delta(max by (job, topic, partition) ({sel(cat.KAFKA_LAG.name, job)})[10m:1m]) > 0",
            "10m",
            "warning",
            "A Kafka exporter shard falls behind on a partition.",
            "Partition {{ $labels.partition }} of {{ $labels.topic }} has not been caught up for"
            " {{ $value | humanizeDuration }} and its lag keeps growing: its KPIs lag behind"
            " the scans (too few shards, or a shard stuck on this partition).",
            config.runbook(KAFKA_LAG),
        ),
        Alert(
            CONFIG_INVALID,
            f"min {by(*inst, 'file')} ({valid}) == 0",
            "5m",
            "warning",
            "The postal exporter refused a new version of {{ $labels.file }}.",
            "{{ $labels.instance }} refused the current {{ $labels.file }} (valid = {{ $value }}) "
            "and keeps using the previous version: the edit has no effect until it is fixed "
            "(the exporter's /readyz and log say why).",
            config.runbook(CONFIG_INVALID),
        ),
        Alert(
            CHECKPOINT_STALE,
            f"time() - max {by(*inst)} ({checkpoint}) > {CHECKPOINT_STALE_SECONDS}",
            "5m",
            "warning",
            "The postal exporter cannot checkpoint its state.",
            "The last checkpoint of {{ $labels.instance }} is {{ $value | humanizeDuration }} "
            "old: its state folder is probably full or read-only. Counting goes on, but a "
            "restart would re-read everything since that checkpoint.",
            config.runbook(CHECKPOINT_STALE),
        ),
    ]


def _offset(expr: str) -> str:
    """``sum by (...) (x{...})`` -> the same aggregation over ``x{...} offset 1h``."""
    head, _, tail = expr.rpartition(")")
    return f"{head} offset 1h){tail}"


def all_alerts(config: MixinConfig) -> list[Alert]:
    """Every alerting rule, grouped as in the rule file."""
    return [a for _, group in alert_groups(config) for a in group]


def alert_groups(config: MixinConfig) -> list[tuple[str, list[Alert]]]:
    """Alert rule groups by topic."""
    return [
        ("postal-backlog", backlog_alerts(config)),
        ("postal-timeliness", slo_alerts(config) + flow_alerts(config)),
        ("postal-complaints", complaint_alerts(config)),
        ("postal-stages", _stage_alerts(config)),
        ("postal-exporter", exporter_alerts(config) + exporter_state_alerts(config)),
    ]


def _stage_alerts(config: MixinConfig) -> list[Alert]:
    from exporters.mixin.stage_rules import stage_alerts  # noqa: PLC0415 - it imports Alert

    return stage_alerts(config)


def alert_names(config: MixinConfig) -> tuple[str, ...]:
    """Distinct alert names, in file order."""
    return tuple(dict.fromkeys(a.name for a in all_alerts(config)))


def alerts_file(config: MixinConfig) -> dict[str, Any]:
    """The content of ``prometheus/alerts.yml``."""
    return {
        "groups": [
            {"name": name, "rules": [a.to_dict() for a in group]}
            for name, group in alert_groups(config)
        ]
    }
