"""Postal / Timeliness: on time by product and destination, worst lanes, transit, SLO burn."""

from __future__ import annotations

from typing import Any

from exporters import catalog as cat
from exporters.mixin import alerts as al
from exporters.mixin import rules as rec
from exporters.mixin.config import MixinConfig
from exporters.mixin.dashboards import defaults as d
from exporters.mixin.dashboards.uids import OVERVIEW, TIMELINESS
from exporters.mixin.promql import eq, sel


def build(config: MixinConfig) -> dict[str, Any]:
    """The timeliness dashboard's JSON."""
    board = d.board(
        config,
        TIMELINESS,
        "Postal / Timeliness",
        "On-time delivery by product and destination, the worst lanes, transit-time "
        "percentiles, the share delivered within each service standard, first-attempt "
        "delivery and the on-time SLO's error budget and burn rate.",
        d.variables(config, "region", "product"),
        links=[d.dashboard_link("National overview", OVERVIEW)],
    )
    rows = [
        ("Headlines", [*_headlines(config)]),
        ("On time", [*_on_time_1(config), *_on_time_2(config)]),
        ("Transit", [*_transit(config)]),
        ("Delivery", [*_delivery_1(config), *_delivery_2(config)]),
        ("SLO", [*_slo(config)]),
    ]
    for title, panels in rows:
        board = board.with_row(d.row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return d.render(board, config, notes(config))


def _headlines(config: MixinConfig) -> list[Any]:
    """The Headlines row."""
    recorded = (d.JOB, d.PRODUCT, d.DEST)
    objectives = sorted(config.objectives.items())
    lowest = min(config.objectives.values())

    def on_time(labels: str, window: str) -> str:
        return d.ratio(
            f"sum by ({labels}) ({sel(rec.on_time_delivered(window), *recorded)})",
            f"sum by ({labels}) ({sel(rec.judged_delivered(window), *recorded)})",
        )

    return [
        d.big(
            d.Common(
                "On-time ratio by product (7 days)",
                "On-time share of judged deliveries over the trailing week; red below the "
                "product's objective (" + ", ".join(f"{p} {o:.0%}" for p, o in objectives) + ").",
                "percentunit",
                (d.Q(on_time("product", "7d"), "{{product}}", instant=True),),
                d.below_bad(lowest),
                width=12,
                height=5,
                decimals=1,
            ),
            overrides=[(p, d.thresholds_override(d.below_bad(o))) for p, o in objectives],
        ),
        d.big(
            d.Common(
                f"On-time error budget remaining ({config.slo_period})",
                f"Share of the {config.slo_period} error budget not yet consumed, per "
                f"product; orange below {config.budget_remaining.warning:.0%}, red below "
                f"{config.budget_remaining.critical:.0%} and when overspent.",
                "percentunit",
                (d.Q(sel(rec.SLO_BUDGET_REMAINING, d.JOB, d.PRODUCT), "{{product}}", True),),
                d.band(config.budget_remaining),
                width=12,
                height=5,
                decimals=0,
            )
        ),
    ]


def _on_time_1(config: MixinConfig) -> list[Any]:
    """The On time row (part 1)."""
    recorded = (d.JOB, d.PRODUCT, d.DEST)
    lowest = min(config.objectives.values())

    def on_time(labels: str, window: str) -> str:
        return d.ratio(
            f"sum by ({labels}) ({sel(rec.on_time_delivered(window), *recorded)})",
            f"sum by ({labels}) ({sel(rec.judged_delivered(window), *recorded)})",
        )

    def late_link(field: str, **extra: str) -> Any:
        return d.api_link(
            config,
            f"Late items for ${{{field}.destination}} (API)",
            "late-items",
            {"destination": f"${{{field}.destination}}", **extra},
        )

    return [
        d.ts(
            d.Common(
                "On-time ratio by product (1 hour) vs objective",
                "On-time share of judged deliveries over the trailing hour; dashed: each "
                "product's objective.",
                "percentunit",
                (
                    d.Q(on_time("product", "1h"), "{{product}}"),
                    d.Q(sel(rec.SLO_OBJECTIVE, d.JOB, d.PRODUCT), "{{product}} objective"),
                ),
                max=1,
            ),
            dashed=".*objective",
        ),
        d.bars(
            d.Common(
                "On-time ratio by destination (1 day)",
                "On-time share of judged deliveries over the trailing day per destination "
                f"region, products summed before dividing; red below {lowest:.0%}, the "
                "lowest product objective. Click a bar for the region's late items.",
                "percentunit",
                (d.Q(on_time("destination", "1d"), "{{destination}}", instant=True),),
                d.below_bad(lowest),
                links=(late_link("__field.labels", kind="delivered_late"),),
                min=0,
                max=1,
            )
        ),
        d.bars(
            d.Common(
                "72-hour on-time rate by destination (1 day)",
                "Share of the deliveries of the trailing day that took at most 72 hours, "
                f"per destination region; orange below {config.within_72h.warning:.0%}, "
                f"red below {config.within_72h.critical:.0%}.",
                "percentunit",
                (
                    d.Q(
                        d.ratio(
                            f"sum by (destination) ({sel(rec.WITHIN_72H_DELIVERED, *recorded)})",
                            f"sum by (destination) ({sel(rec.DELIVERED_1D, *recorded)})",
                        ),
                        "{{destination}}",
                        instant=True,
                    ),
                ),
                d.band(config.within_72h),
                links=(late_link("__field.labels", kind="delivered_late"),),
                min=0,
                max=1,
            )
        ),
    ]


def _on_time_2(config: MixinConfig) -> list[Any]:
    """The On time row (part 2)."""
    recorded = (d.JOB, d.PRODUCT, d.DEST)
    top = config.top_n
    worst = f"bottomk({top}, {sel(rec.on_time_ratio('1d'), *recorded)})"

    def lane(series: str) -> str:
        return f"{sel(series, *recorded)}\nand on (job, product, destination)\n{worst}"

    return [
        d.grid(
            d.Common(
                f"Worst {top} lanes by on-time ratio (1 day)",
                "Product x destination lanes with the lowest on-time ratio over the trailing "
                "day, with their on-time ratio over the last hour and week (better or "
                "worse?), 72-hour rate, mean and percentile transit times and first-attempt "
                "ratio (1 day). Click a row for the lane's late items.",
                "none",
                (
                    d.Q(worst, instant=True, table=True),
                    d.Q(lane(rec.on_time_ratio("1h")), instant=True, table=True),
                    d.Q(lane(rec.on_time_ratio("7d")), instant=True, table=True),
                    d.Q(lane(rec.WITHIN_72H_RATIO), instant=True, table=True),
                    d.Q(lane(rec.TRANSIT_MEAN), instant=True, table=True),
                    d.Q(lane(rec.TRANSIT_P50), instant=True, table=True),
                    d.Q(lane(rec.TRANSIT_P90), instant=True, table=True),
                    d.Q(lane(rec.FIRST_ATTEMPT_RATIO), instant=True, table=True),
                ),
                links=(
                    d.api_link(
                        config,
                        "Late ${__data.fields.product} items for "
                        "${__data.fields.destination} (API)",
                        "late-items",
                        {
                            "product": "${__data.fields.product}",
                            "destination": "${__data.fields.destination}",
                        },
                    ),
                ),
                width=24,
            ),
            merge=(
                "on time",
                "on time (1 h)",
                "on time (7 d)",
                "within 72 h",
                "mean transit",
                "p50 transit",
                "p90 transit",
                "first attempt",
            ),
            column_units={
                "on time": "percentunit",
                "on time (1 h)": "percentunit",
                "on time (7 d)": "percentunit",
                "within 72 h": "percentunit",
                "mean transit": "s",
                "p50 transit": "s",
                "p90 transit": "s",
                "first attempt": "percentunit",
            },
        ),
    ]


def _transit(config: MixinConfig) -> list[Any]:
    """The Transit row."""
    transit = cat.TRANSIT_TIME
    flow = (d.JOB, d.INSTANCE, d.PRODUCT, d.DEST)
    standards = tuple(
        d.Q(
            d.ratio(
                d.sum_rate((), sel(transit.bucket, *flow, eq("le", transit.le(days * cat.DAY)))),
                d.sum_rate((), sel(transit.count, *flow)),
            ),
            f"within {days} d",
        )
        for days in cat.SERVICE_STANDARD_DAYS
    )
    return [
        d.ts(
            d.Common(
                "Transit time p50 / p90 by product",
                "Acceptance-to-delivery time percentiles of the items delivered in each "
                "rate interval, estimated from the histogram (exact at bucket edges); "
                "dashed: 72 hours.",
                "s",
                tuple(
                    d.Q(
                        f"histogram_quantile({q}, "
                        f"{d.sum_rate(('le', 'product'), sel(transit.bucket, *flow))})",
                        f"{{{{product}}}} p{round(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ),
                d.above_bad(cat.SECONDS_72H),
            )
        ),
        d.ts(
            d.Common(
                "Share delivered within D+n days",
                "Cumulative share of deliveries within each service-standard deadline "
                "(bucket edges sit exactly at 1, 2, 3, 4, 6, 7 and 10 days); the gap "
                "between curves approximates late +1/+2/+3 days.",
                "percentunit",
                standards,
                max=1,
            )
        ),
    ]


def _delivery_1(config: MixinConfig) -> list[Any]:
    """The Delivery row (part 1)."""
    recorded = (d.JOB, d.PRODUCT, d.DEST)
    return [
        d.ts(
            d.Common(
                "First-attempt delivery ratio by product (1 day)",
                "Items delivered at the first attempt / items with a first attempt, over "
                f"the trailing day; orange below {config.first_attempt.warning:.0%}, red "
                f"below {config.first_attempt.critical:.0%}.",
                "percentunit",
                (
                    d.Q(
                        d.ratio(
                            f"sum by (product) ({sel(rec.FIRST_ATTEMPTS_OK, *recorded)})",
                            f"sum by (product) ({sel(rec.FIRST_ATTEMPTS, *recorded)})",
                        ),
                        "{{product}}",
                    ),
                ),
                d.band(config.first_attempt),
                max=1,
            )
        ),
        d.ts(
            d.Common(
                "Failed delivery attempts per hour by reason",
                "Failed delivery attempts per hour, by non-delivery reason.",
                "short",
                (
                    d.Q(
                        d.per_hour(
                            d.sum_rate(
                                ("reason",),
                                sel(cat.DELIVERY_FAILURES.series, d.JOB, d.INSTANCE),
                            )
                        ),
                        "{{reason}}",
                    ),
                ),
            )
        ),
    ]


def _delivery_2(config: MixinConfig) -> list[Any]:
    """The Delivery row (part 2)."""
    flow = (d.JOB, d.INSTANCE, d.PRODUCT, d.DEST)
    return [
        d.ts(
            d.Common(
                "Overdue items by product",
                "Items in the network past their promised deadline. Click a series for the "
                "overdue items of that product.",
                "short",
                (
                    d.Q(
                        f"sum by (product) ({sel(cat.ITEMS_OVERDUE.name, *flow)})",
                        "{{product}}",
                    ),
                ),
                links=(
                    d.api_link(
                        config,
                        "Overdue ${__field.labels.product} items (API)",
                        "late-items",
                        {"kind": "overdue", "product": "${__field.labels.product}"},
                        window="as_of",
                    ),
                ),
            )
        ),
        d.ts(
            d.Common(
                "Returns per hour by product",
                "Items returned to sender, per hour.",
                "short",
                (
                    d.Q(
                        d.per_hour(d.sum_rate(("product",), sel(cat.ITEMS_RETURNED.series, *flow))),
                        "{{product}}",
                    ),
                ),
            )
        ),
    ]


def _slo(config: MixinConfig) -> list[Any]:
    """The SLO row."""
    burn_windows = sorted(config.burn_windows, key=lambda w: w.factor)
    burn_steps = d.ramp_up(
        *((w.factor, d.BAD if w.severity == "critical" else d.WARN) for w in burn_windows)
    )
    return [
        d.ts(
            d.Common(
                "On-time SLO burn rate",
                "How many times faster than sustainable the error budget burns (1 = spent "
                "exactly at the end of the period), over each alert window's long window; "
                "dashed lines at the alert factors ("
                + ", ".join(f"{w.factor:g}x over {w.long} {w.severity}" for w in burn_windows)
                + ").",
                "none",
                tuple(
                    d.Q(
                        f"{sel(rec.slo_errors(w.long), d.JOB, d.PRODUCT)}\n"
                        "/ on (job, product) group_left ()\n"
                        f"{sel(rec.SLO_ERROR_BUDGET, d.JOB, d.PRODUCT)}",
                        f"{{{{product}}}} {w.long}",
                    )
                    for w in config.burn_windows
                ),
                burn_steps,
                width=24,
            )
        ),
    ]


def notes(config: MixinConfig) -> dict[str, d.Note]:
    """Each panel's question and the alerts that go with it."""
    return {
        "On-time ratio by product (7 days)": d.note(
            "Did each product meet its objective over the week?", al.BUDGET_BURN
        ),
        f"On-time error budget remaining ({config.slo_period})": d.note(
            "How much lateness can each product still afford this period?", al.BUDGET_BURN
        ),
        "On-time ratio by product (1 hour) vs objective": d.note(
            "Is on-time delivery dropping right now?", al.BUDGET_BURN
        ),
        "On-time ratio by destination (1 day)": d.note("Which destinations receive late?"),
        "72-hour on-time rate by destination (1 day)": d.note(
            "Which destinations miss the 72-hour mark?"
        ),
        f"Worst {config.top_n} lanes by on-time ratio (1 day)": d.note(
            "Which product and destination lanes are late, and getting worse or better?"
        ),
        "Transit time p50 / p90 by product": d.note("How long do deliveries take now?"),
        "Share delivered within D+n days": d.note("How many days late are the late deliveries?"),
        "First-attempt delivery ratio by product (1 day)": d.note(
            "Do couriers deliver at the first try?"
        ),
        "Failed delivery attempts per hour by reason": d.note("Why do delivery attempts fail?"),
        "Overdue items by product": d.note(
            "How many items already missed their promise?", al.OVERDUE_RISING
        ),
        "Returns per hour by product": d.note("Are more items sent back?"),
        "On-time SLO burn rate": d.note(
            "Is the error budget burning fast enough to page?", al.BUDGET_BURN
        ),
    }
