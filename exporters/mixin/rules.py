"""Recording rules: KPI ratios, percentiles and SLO error ratios, built from the catalog.

Names follow ``level:metric:operations`` with the level ``postal``; every rule keeps
``job`` so alerts can be inhibited per job. Ratios are ratios of summed increases
(numerators and denominators are recorded too, so dashboards can re-aggregate them
without averaging ratios).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from exporters import catalog as cat
from exporters.mixin.config import MixinConfig
from exporters.mixin.promql import by, eq, ne, sel

KPI_WINDOWS: Final = ("1h", "1d", "7d")
SLO_WINDOWS: Final = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
PRODUCT_DEST: Final = ("job", "product", "destination")


@dataclass(frozen=True)
class RecordingRule:
    """One recording rule."""

    record: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The rule as it appears in a Prometheus rule file."""
        out: dict[str, Any] = {"record": self.record, "expr": self.expr}
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


@dataclass(frozen=True)
class RuleGroup:
    """A named group of rules evaluated together (in order) at one interval."""

    name: str
    rules: tuple[RecordingRule, ...]
    interval: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The group as it appears in a Prometheus rule file."""
        out: dict[str, Any] = {"name": self.name}
        if self.interval:
            out["interval"] = self.interval
        out["rules"] = [r.to_dict() for r in self.rules]
        return out


# --- names of recorded series (used by alerts and dashboards) ---------------------


def on_time_delivered(window: str) -> str:
    """Delivered on time (judged items only) over ``window``."""
    return f"postal:items_delivered_on_time:increase{window}"


def judged_delivered(window: str) -> str:
    """Delivered items that carry a promise (on_time true or false) over ``window``."""
    return f"postal:items_delivered_judged:increase{window}"


def on_time_ratio(window: str) -> str:
    """On-time ratio by product and destination over ``window``."""
    return f"postal:on_time:ratio_rate{window}"


def slo_errors(window: str) -> str:
    """SLO error ratio (late / judged) by product over ``window``."""
    return f"postal:slo_on_time_errors:ratio_rate{window}"


SLO_OBJECTIVE: Final = "postal:slo_on_time_objective:ratio"
SLO_ERROR_BUDGET: Final = "postal:slo_on_time_error_budget:ratio"
SLO_BUDGET_REMAINING: Final = "postal:slo_on_time_error_budget_remaining:ratio"
WITHIN_72H_DELIVERED: Final = "postal:items_delivered_within_72h:increase1d"
DELIVERED_1D: Final = "postal:items_delivered:increase1d"
WITHIN_72H_RATIO: Final = "postal:items_delivered_within_72h:ratio_rate1d"
TRANSIT_MEAN: Final = "postal:transit_time_seconds:mean_rate1d"
TRANSIT_P50: Final = "postal:transit_time_seconds:p50_rate1d"
TRANSIT_P90: Final = "postal:transit_time_seconds:p90_rate1d"
FIRST_ATTEMPTS_OK: Final = "postal:delivery_first_attempts_delivered:increase1d"
FIRST_ATTEMPTS: Final = "postal:delivery_first_attempts:increase1d"
FIRST_ATTEMPT_RATIO: Final = "postal:delivery_first_attempt:ratio_rate1d"
COMPLAINTS_1D: Final = "postal:complaints:increase1d"
VALID_COMPLAINTS_1D: Final = "postal:complaints_valid:increase1d"
ACCEPTED_BY_REGION_1D: Final = "postal:items_accepted_by_destination:increase1d"
COMPLAINTS_PER_MILLION: Final = "postal:complaints_per_million_items:rate1d"
VALID_COMPLAINTS_PER_MILLION: Final = "postal:complaints_valid_per_million_items:rate1d"
COMPLAINTS_RATE_1H: Final = "postal:complaints:rate1h"


def job_matcher(config: MixinConfig) -> str:
    """The ``job="..."`` matcher every rule selector carries."""
    return eq("job", config.job)


def _sum_increase(labels: tuple[str, ...], selector: str, window: str) -> str:
    return f"sum {by(*labels)} (increase({selector}[{window}]))"


def _sum_rate(labels: tuple[str, ...], selector: str, window: str) -> str:
    return f"sum {by(*labels)} (rate({selector}[{window}]))"


def _or_zero(numerator: str, denominator: str) -> str:
    """``numerator``, or 0 where only the denominator has series.

    An exporter need not expose a zero series (say no item was late yet for a lane);
    without the fallback the ratio would vanish instead of reading 0.
    """
    return f"{numerator}\nor\n0 * {denominator}"


def timeliness_group(config: MixinConfig) -> RuleGroup:
    """On-time ratios, 72-hour rate, transit-time mean and percentiles, first-attempt ratio."""
    job = job_matcher(config)
    delivered = cat.ITEMS_DELIVERED.series
    rules: list[RecordingRule] = []
    for w in KPI_WINDOWS:
        judged = _sum_increase(PRODUCT_DEST, sel(delivered, job, ne("on_time", "unknown")), w)
        rules += [
            RecordingRule(
                on_time_delivered(w),
                _or_zero(
                    _sum_increase(PRODUCT_DEST, sel(delivered, job, eq("on_time", "true")), w),
                    judged,
                ),
            ),
            RecordingRule(judged_delivered(w), judged),
            RecordingRule(
                on_time_ratio(w),
                f"{sel(on_time_delivered(w), job)}\n/\n{sel(judged_delivered(w), job)}",
            ),
        ]
    transit = cat.TRANSIT_TIME
    le_72h = eq("le", transit.le(cat.SECONDS_72H))
    rules += [
        RecordingRule(
            WITHIN_72H_DELIVERED,
            _sum_increase(PRODUCT_DEST, sel(transit.bucket, job, le_72h), "1d"),
        ),
        RecordingRule(DELIVERED_1D, _sum_increase(PRODUCT_DEST, sel(transit.count, job), "1d")),
        RecordingRule(
            WITHIN_72H_RATIO, f"{sel(WITHIN_72H_DELIVERED, job)}\n/\n{sel(DELIVERED_1D, job)}"
        ),
        RecordingRule(
            TRANSIT_MEAN,
            f"{_sum_increase(PRODUCT_DEST, sel(transit.sum, job), '1d')}\n/\n{sel(DELIVERED_1D, job)}",
        ),
    ]
    for q, name in ((0.5, TRANSIT_P50), (0.9, TRANSIT_P90)):
        buckets = _sum_rate((*PRODUCT_DEST, "le"), sel(transit.bucket, job), "1d")
        rules.append(RecordingRule(name, f"histogram_quantile({q}, {buckets})"))
    attempts = cat.DELIVERY_ATTEMPTS.series
    first = eq("attempt", "first")
    first_attempts = _sum_increase(PRODUCT_DEST, sel(attempts, job, first), "1d")
    first_ok = sel(attempts, job, first, eq("outcome", "delivered"))
    rules += [
        RecordingRule(
            FIRST_ATTEMPTS_OK,
            _or_zero(_sum_increase(PRODUCT_DEST, first_ok, "1d"), first_attempts),
        ),
        RecordingRule(FIRST_ATTEMPTS, first_attempts),
        RecordingRule(
            FIRST_ATTEMPT_RATIO, f"{sel(FIRST_ATTEMPTS_OK, job)}\n/\n{sel(FIRST_ATTEMPTS, job)}"
        ),
    ]
    return RuleGroup("postal-kpi-timeliness", tuple(rules))


def complaints_group(config: MixinConfig) -> RuleGroup:
    """Complaints per million accepted items by region (the complaint region is the destination)."""
    job = job_matcher(config)
    complaints = cat.COMPLAINTS.series
    region = ("job", "region")
    accepted_by_region = (
        f"sum {by(*region)} (\n"
        f'  label_replace(increase({sel(cat.ITEMS_ACCEPTED.series, job)}[1d]), "region", "$1", '
        f'"destination", "(.*)")\n)'
    )
    accepted = sel(ACCEPTED_BY_REGION_1D, job)
    return RuleGroup(
        "postal-kpi-complaints",
        (
            RecordingRule(ACCEPTED_BY_REGION_1D, accepted_by_region),
            RecordingRule(
                COMPLAINTS_1D,
                _or_zero(_sum_increase(region, sel(complaints, job), "1d"), accepted),
            ),
            RecordingRule(
                VALID_COMPLAINTS_1D,
                _or_zero(
                    _sum_increase(region, sel(complaints, job, eq("valid", "true")), "1d"),
                    accepted,
                ),
            ),
            RecordingRule(
                COMPLAINTS_PER_MILLION, f"1e6 * {sel(COMPLAINTS_1D, job)}\n/\n{accepted}"
            ),
            RecordingRule(
                VALID_COMPLAINTS_PER_MILLION,
                f"1e6 * {sel(VALID_COMPLAINTS_1D, job)}\n/\n{accepted}",
            ),
            RecordingRule(COMPLAINTS_RATE_1H, _sum_rate(region, sel(complaints, job), "1h")),
        ),
    )


def slo_group(config: MixinConfig) -> RuleGroup:
    """Per-product objectives and on-time SLO error ratios at every burn-rate window."""
    job = job_matcher(config)
    delivered = cat.ITEMS_DELIVERED.series
    product = ("job", "product")
    rules = [
        RecordingRule(SLO_OBJECTIVE, f"vector({objective})", {"job": config.job, "product": p})
        for p, objective in sorted(config.objectives.items())
    ]
    rules.append(RecordingRule(SLO_ERROR_BUDGET, f"1 - {sel(SLO_OBJECTIVE, job)}"))
    for w in SLO_WINDOWS:
        late = _sum_rate(product, sel(delivered, job, eq("on_time", "false")), w)
        judged = _sum_rate(product, sel(delivered, job, ne("on_time", "unknown")), w)
        rules.append(RecordingRule(slo_errors(w), f"(\n{_or_zero(late, judged)}\n)\n/\n{judged}"))
    return RuleGroup("postal-slo-on-time", tuple(rules))


def slo_period_group(config: MixinConfig) -> RuleGroup:
    """Error ratio over the whole SLO period and the budget left; costly, so evaluated rarely."""
    job = job_matcher(config)
    delivered = cat.ITEMS_DELIVERED.series
    product = ("job", "product")
    period = config.slo_period
    late = _sum_rate(product, sel(delivered, job, eq("on_time", "false")), period)
    judged = _sum_rate(product, sel(delivered, job, ne("on_time", "unknown")), period)
    return RuleGroup(
        "postal-slo-on-time-period",
        (
            RecordingRule(slo_errors(period), f"(\n{_or_zero(late, judged)}\n)\n/\n{judged}"),
            RecordingRule(
                SLO_BUDGET_REMAINING,
                f"1 - {sel(slo_errors(period), job)}\n/ on (job, product) group_left ()\n"
                f"{sel(SLO_ERROR_BUDGET, job)}",
            ),
        ),
        interval="5m",
    )


def recording_groups(config: MixinConfig) -> tuple[RuleGroup, ...]:
    """All recording-rule groups, in evaluation order."""
    from exporters.mixin.stage_rules import stage_group  # noqa: PLC0415 - it imports this module

    return (
        timeliness_group(config),
        complaints_group(config),
        slo_group(config),
        slo_period_group(config),
        stage_group(config),
    )


def recorded_names(config: MixinConfig) -> frozenset[str]:
    """Every series name the recording rules produce."""
    return frozenset(r.record for g in recording_groups(config) for r in g.rules)


def rules_file(config: MixinConfig) -> dict[str, Any]:
    """The content of ``prometheus/rules.yml``."""
    return {"groups": [g.to_dict() for g in recording_groups(config)]}
