"""The four links (collection, processing, transport, delivery): recording rules and alerts.

Percentiles come from the exporter's stage histograms (``exporters.catalog``
``STAGE_*``); the targets are the exporter's gauges ``postal_stage_*_target_seconds``,
read from the ``stages:`` of the service standard it loaded (the same the report's
``*_within_target_ratio`` use, reloaded with the file), recorded per job so an alert
compares a facility's p90 with its facility type's target by a join. No target set,
no target series: the alert then stays silent.
"""

from __future__ import annotations

from typing import Final

from exporters import catalog as cat
from exporters.mixin.alerts import Alert
from exporters.mixin.config import MixinConfig
from exporters.mixin.promql import by, eq, sel
from exporters.mixin.rules import RecordingRule, RuleGroup

DWELL_ABOVE_TARGET: Final = "PostalFacilityDwellAboveTarget"
LEG_ABOVE_TARGET: Final = "PostalRegionLegAboveTarget"

FACILITY: Final = ("job", "facility", "facility_type", "region")
PAIR: Final = ("job", "from_region", "to_region")
#: The window of the per-facility and per-pair percentiles the alerts read.
WINDOW: Final = "1h"

DWELL_TARGET: Final = "postal:stage_dwell_target:seconds"
LEG_TARGET: Final = "postal:stage_leg_target:seconds"
DWELL_P90: Final = f"postal:stage_dwell_seconds:p90_rate{WINDOW}"
DWELL_N: Final = f"postal:stage_dwell:increase{WINDOW}"
LEG_P90: Final = f"postal:stage_leg_seconds:p90_rate{WINDOW}"
LEG_N: Final = f"postal:stage_leg:increase{WINDOW}"
#: Network-wide p90 of each link (label ``stage``), side by side on a dashboard.
STAGE_P90: Final = f"postal:stage_seconds:p90_rate{WINDOW}"
#: The ``stage`` label value of each histogram.
STAGE_NAMES: Final = {
    cat.STAGE_FIRST_MILE.name: "first_mile",
    cat.STAGE_DWELL.name: "dwell",
    cat.STAGE_LEG.name: "leg",
    cat.STAGE_LAST_MILE.name: "last_mile",
}


def _quantile(q: float, spec: cat.MetricSpec, labels: tuple[str, ...], job: str) -> str:
    rate = f"sum {by(*labels, 'le')} (rate({sel(spec.bucket, job)}[{WINDOW}]))"
    return f"histogram_quantile({q}, {rate})"


def stage_group(config: MixinConfig) -> RuleGroup:
    """Targets, per-facility dwell and per-region-pair leg p90, network-wide link percentiles."""
    job = eq("job", config.job)
    # max over instances: every exporter (or Kafka shard) of the job reads the same file;
    # while a new version is being picked up, the alert compares with the larger target.
    rules = [
        RecordingRule(
            DWELL_TARGET,
            f"max {by('job', 'facility_type')} ({sel(cat.STAGE_DWELL_TARGET.series, job)})",
        ),
        RecordingRule(LEG_TARGET, f"max {by('job')} ({sel(cat.STAGE_LEG_TARGET.series, job)})"),
        RecordingRule(DWELL_P90, _quantile(0.9, cat.STAGE_DWELL, FACILITY, job)),
        RecordingRule(
            DWELL_N, f"sum {by(*FACILITY)} (increase({sel(cat.STAGE_DWELL.count, job)}[{WINDOW}]))"
        ),
        RecordingRule(LEG_P90, _quantile(0.9, cat.STAGE_LEG, PAIR, job)),
        RecordingRule(
            LEG_N, f"sum {by(*PAIR)} (increase({sel(cat.STAGE_LEG.count, job)}[{WINDOW}]))"
        ),
    ]
    for spec in cat.STAGE_HISTOGRAMS:
        stage = {"stage": STAGE_NAMES[spec.name]}
        rules.append(RecordingRule(STAGE_P90, _quantile(0.9, spec, ("job",), job), stage))
    return RuleGroup("postal-kpi-stages", tuple(rules))


def stage_alerts(config: MixinConfig) -> list[Alert]:
    """A facility's dwell p90 above its type's target for 1 h; a region pair's leg p90 too."""
    job = eq("job", config.job)
    enough = config.stage_alert_min_items
    dwell = (
        f"{sel(DWELL_P90, job)}\n> on (job, facility_type) group_left ()\n{sel(DWELL_TARGET, job)}\n"
        f"and on (job, facility)\n{sel(DWELL_N, job)} >= {enough}"
    )
    leg = (
        f"{sel(LEG_P90, job)}\n> on (job) group_left ()\n{sel(LEG_TARGET, job)}\n"
        f"and on (job, from_region, to_region)\n{sel(LEG_N, job)} >= {enough}"
    )
    api = config.api_url
    return [
        Alert(
            DWELL_ABOVE_TARGET,
            dwell,
            "1h",
            "warning",
            "Facility {{ $labels.facility }} takes too long to process items.",
            "90 % of the departures from {{ $labels.facility }} ({{ $labels.facility_type }}, "
            "{{ $labels.region }}) in the last hour waited up to {{ $value | humanizeDuration }} "
            "there, above the target of its facility type, for an hour. "
            f"Backlog: {api}/api/v1/backlog?facility={{{{ $labels.facility }}}}",
            config.runbook(DWELL_ABOVE_TARGET),
        ),
        Alert(
            LEG_ABOVE_TARGET,
            leg,
            "1h",
            "warning",
            "Legs from {{ $labels.from_region }} to {{ $labels.to_region }} are slow.",
            "90 % of the legs from {{ $labels.from_region }} to {{ $labels.to_region }} ending in "
            "the last hour took up to {{ $value | humanizeDuration }}, above the leg target "
            f"of the service standard, for an hour. Slow legs: {api}/api/v1/legs?"
            "from_region={{ $labels.from_region }}&to_region={{ $labels.to_region }}",
            config.runbook(LEG_ABOVE_TARGET),
        ),
    ]
