"""Postal / National overview: the headlines, then timeliness, backlog and complaints rows."""

from __future__ import annotations

from typing import Any, Final

from exporters import catalog as cat
from exporters.mixin import alerts as al
from exporters.mixin import rules as rec
from exporters.mixin.config import MixinConfig
from exporters.mixin.dashboards import defaults as d
from exporters.mixin.dashboards.uids import COMPLAINTS, FACILITY, OVERVIEW, TIMELINESS
from exporters.mixin.promql import sel

#: Row titles, top to bottom.
ROWS: Final = ("Headlines", "Timeliness", "Backlog", "Complaints", "Alerts")


def firing_alerts() -> str:
    """Firing ``Postal*`` alerts of the selected job and regions.

    An alert about a place is shown when its place is in the selection: its ``region``,
    else its ``destination``, else either end of its region pair; an alert about no
    place (the exporter, a product's error budget) always.
    """
    base = f'ALERTS{{alertstate="firing", alertname=~"Postal.+", {d.JOB}'
    sel = '=~"$region"'
    return " or ".join(
        (
            f"{base}, region{sel}}}",
            f'{base}, region="", destination{sel}}}',
            f'{base}, region="", destination="", from_region{sel}}}',
            f'{base}, region="", destination="", to_region{sel}}}',
            f'{base}, region="", destination="", from_region="", to_region=""}}',
        )
    )


def build(config: MixinConfig) -> dict[str, Any]:
    """The overview dashboard's JSON."""
    head = d.board(
        config,
        OVERVIEW,
        "Postal / National overview",
        "Peak-season national view: headlines, on-time delivery against objectives, volume, "
        "backlog hot spots, complaints and the alerts firing now.",
        d.variables(config, "region", "product", "facility"),
        links=[
            d.dashboard_link("Timeliness", TIMELINESS),
            d.dashboard_link("Facility backlog", FACILITY),
            d.dashboard_link("Complaints", COMPLAINTS),
        ],
    )
    board = head
    rows = [
        (
            "Headlines",
            [
                *_headlines_1(config),
                *_headlines_2(config),
                *_headlines_3(config),
                *_headlines_4(config),
            ],
        ),
        ("Timeliness", [*_timeliness(config)]),
        ("Backlog", [*_backlog(config)]),
        ("Complaints", [*_complaints(config)]),
        ("Alerts", [*_alerts(config)]),
    ]
    for title, panels in rows:
        board = board.with_row(d.row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return d.render(board, config, notes(config))


def _headlines_1(config: MixinConfig) -> list[Any]:
    """The Headlines row (part 1)."""
    recorded = (d.JOB, d.PRODUCT, d.DEST)
    objectives = sorted(config.objectives.items())
    per_product_objective = [
        (product, d.thresholds_override(d.below_bad(objective)))
        for product, objective in objectives
    ]
    return [
        d.big(
            d.Common(
                "On-time ratio by product (1 day)",
                "Share of judged deliveries (items with a promise) delivered on time over "
                "the trailing day; red below the product's objective ("
                + ", ".join(f"{p} {o:.0%}" for p, o in objectives)
                + ").",
                "percentunit",
                (
                    d.Q(
                        d.ratio(
                            f"sum by (product) ({sel(rec.on_time_delivered('1d'), *recorded)})",
                            f"sum by (product) ({sel(rec.judged_delivered('1d'), *recorded)})",
                        ),
                        "{{product}}",
                        instant=True,
                    ),
                ),
                d.below_bad(min(config.objectives.values())),
                width=8,
                height=5,
                decimals=1,
            ),
            overrides=per_product_objective,
        ),
        d.big(
            d.Common(
                "72-hour on-time rate (1 day)",
                "Share of the items delivered in the trailing day that took at most 72 hours "
                "from acceptance (SPB 72小时准时率), exact from the transit histogram's 72 h "
                f"bucket; orange below {config.within_72h.warning:.0%}, red below "
                f"{config.within_72h.critical:.0%}.",
                "percentunit",
                (
                    d.Q(
                        d.ratio(
                            f"sum ({sel(rec.WITHIN_72H_DELIVERED, *recorded)})",
                            f"sum ({sel(rec.DELIVERED_1D, *recorded)})",
                        ),
                        instant=True,
                    ),
                ),
                d.band(config.within_72h),
                width=4,
                height=5,
                decimals=1,
            )
        ),
    ]


def _headlines_2(config: MixinConfig) -> list[Any]:
    """The Headlines row (part 2)."""
    recorded = (d.JOB, d.PRODUCT, d.DEST)
    items = cat.BACKLOG_ITEMS.name
    facility_items = f"sum by (facility) ({sel(items, d.JOB, d.INSTANCE, d.REGION, d.FACILITY)})"
    share = f"{facility_items}\n/ on (facility)\n(\n{d.effective_threshold(config)}\n)"
    return [
        d.big(
            d.Common(
                "Mean full-process time (1 day)",
                "Mean acceptance-to-delivery time of the items delivered in the trailing day "
                "(SPB 全程时限), the per-lane means weighted by their deliveries; orange from "
                f"{config.mean_transit_seconds.warning / cat.HOUR:g} h, red from "
                f"{config.mean_transit_seconds.critical / cat.HOUR:g} h.",
                "s",
                (
                    d.Q(
                        d.ratio(
                            # Lanes without deliveries have a NaN mean: leave them out.
                            f"sum ({sel(rec.TRANSIT_MEAN, *recorded)} * on (job, product, "
                            f"destination) ({sel(rec.DELIVERED_1D, *recorded)} > 0))",
                            f"sum ({sel(rec.DELIVERED_1D, *recorded)})",
                        ),
                        instant=True,
                    ),
                ),
                d.band(config.mean_transit_seconds),
                width=4,
                height=5,
            )
        ),
        d.big(
            d.Common(
                f"On-time error budget remaining ({config.slo_period})",
                f"Share of the {config.slo_period} error budget (1 - objective) not yet "
                "consumed by late deliveries, per product; orange below "
                f"{config.budget_remaining.warning:.0%}, red below "
                f"{config.budget_remaining.critical:.0%} and when overspent (negative).",
                "percentunit",
                (d.Q(sel(rec.SLO_BUDGET_REMAINING, d.JOB, d.PRODUCT), "{{product}}", True),),
                d.band(config.budget_remaining),
                width=8,
                height=5,
                decimals=0,
            )
        ),
        d.big(
            d.Common(
                "Facilities over their backlog threshold (now)",
                "Facilities whose waiting items exceed their threshold (the default "
                f"{config.default_backlog_threshold} where none is configured): what the "
                "backlog alert pages on after 15 minutes.",
                "short",
                (d.Q(f"count ({share} > 1) or vector(0)", instant=True),),
                d.above_bad(1),
                width=6,
                height=4,
            )
        ),
    ]


def _headlines_3(config: MixinConfig) -> list[Any]:
    """The Headlines row (part 3)."""
    recorded = (d.JOB, d.PRODUCT, d.DEST)
    return [
        d.big(
            d.Common(
                "Complaints per million items (1 day)",
                "Complaints opened in the trailing day per million items accepted for the "
                "selected regions (SPB 申诉率); orange from "
                f"{config.complaints_per_million.warning:g}, red from "
                f"{config.complaints_per_million.critical:g}.",
                "short",
                (
                    d.Q(
                        d.ratio(
                            f"1e6 * sum ({sel(rec.COMPLAINTS_1D, d.JOB, d.REGION)})",
                            f"sum ({sel(rec.ACCEPTED_BY_REGION_1D, d.JOB, d.REGION)})",
                        ),
                        instant=True,
                    ),
                ),
                d.band(config.complaints_per_million),
                width=6,
                height=4,
                decimals=1,
            )
        ),
        d.big(
            d.Common(
                "First-attempt delivery (1 day)",
                "Items delivered at their first attempt / items with a first attempt in "
                f"the trailing day; orange below {config.first_attempt.warning:.0%}, red "
                f"below {config.first_attempt.critical:.0%}.",
                "percentunit",
                (
                    d.Q(
                        d.ratio(
                            f"sum ({sel(rec.FIRST_ATTEMPTS_OK, *recorded)})",
                            f"sum ({sel(rec.FIRST_ATTEMPTS, *recorded)})",
                        ),
                        instant=True,
                    ),
                ),
                d.band(config.first_attempt),
                width=6,
                height=4,
                decimals=1,
            )
        ),
    ]


def _headlines_4(config: MixinConfig) -> list[Any]:
    """The Headlines row (part 4)."""
    return [
        d.big(
            d.Common(
                "Firing Postal alerts (now)",
                "Alerts of this job firing now for the selected regions and about no place (any "
                "severity); the Alerts row lists them "
                "and their runbooks are in the alert's runbook_url.",
                "short",
                (d.Q(f"count ({firing_alerts()}) or vector(0)", instant=True),),
                d.above_bad(1),
                width=6,
                height=4,
            )
        ),
    ]


def _timeliness(config: MixinConfig) -> list[Any]:
    """The Timeliness row."""
    flow = (d.JOB, d.INSTANCE, d.PRODUCT, d.DEST)
    recorded = (d.JOB, d.PRODUCT, d.DEST)
    return [
        d.ts(
            d.Common(
                "On-time ratio by product vs objective (1 day)",
                "Share of judged deliveries delivered on time over the trailing day, summed "
                "over destinations before dividing; dashed: each product's objective.",
                "percentunit",
                (
                    d.Q(
                        d.ratio(
                            f"sum by (product) ({sel(rec.on_time_delivered('1d'), *recorded)})",
                            f"sum by (product) ({sel(rec.judged_delivered('1d'), *recorded)})",
                        ),
                        "{{product}}",
                    ),
                    d.Q(sel(rec.SLO_OBJECTIVE, d.JOB, d.PRODUCT), "{{product}} objective"),
                ),
                width=8,
                max=1,
            ),
            dashed=".*objective",
        ),
        d.ts(
            d.Common(
                "Volume: accepted and delivered per hour",
                "Items accepted into and delivered out of the network, per hour.",
                "short",
                (
                    d.Q(
                        d.per_hour(d.sum_rate((), sel(cat.ITEMS_ACCEPTED.series, *flow))),
                        "accepted",
                    ),
                    d.Q(
                        d.per_hour(d.sum_rate((), sel(cat.ITEMS_DELIVERED.series, *flow))),
                        "delivered",
                    ),
                ),
                width=8,
            )
        ),
        d.ts(
            d.Common(
                "Items in network and overdue",
                "Items accepted and not yet delivered or returned, and those already past "
                "their promised deadline.",
                "short",
                (
                    d.Q(f"sum ({sel(cat.ITEMS_IN_NETWORK.name, *flow)})", "in network"),
                    d.Q(f"sum ({sel(cat.ITEMS_OVERDUE.name, *flow)})", "overdue"),
                ),
                width=8,
            )
        ),
    ]


def _backlog(config: MixinConfig) -> list[Any]:
    """The Backlog row."""
    items = cat.BACKLOG_ITEMS.name
    backlog_by_facility = (
        f"sum by (facility, facility_type, region) "
        f"({sel(items, d.JOB, d.INSTANCE, d.REGION, d.FACILITY)})"
    )
    facility_items = f"sum by (facility) ({sel(items, d.JOB, d.INSTANCE, d.REGION, d.FACILITY)})"
    share = f"{facility_items}\n/ on (facility)\n(\n{d.effective_threshold(config)}\n)"
    backlog_link = d.api_link(
        config,
        "Waiting items at ${__field.labels.facility} (API)",
        "backlog",
        {"facility": "${__field.labels.facility}"},
        window="as_of",
    )
    return [
        d.grid(
            d.Common(
                "Backlog hot spots (now)",
                f"The {config.top_n} facilities with the most waiting items. Click a "
                "facility for its backlog dashboard or the API's list of its waiting items.",
                "short",
                (d.Q(d.topk(config, backlog_by_facility), instant=True, table=True),),
                links=(
                    d.dashboard_link(
                        "Facility backlog dashboard",
                        FACILITY,
                        "var-facility=${__data.fields.facility}&",
                    ),
                    d.api_link(
                        config,
                        "Waiting items at ${__data.fields.facility} (API)",
                        "backlog",
                        {"facility": "${__data.fields.facility}"},
                        window="as_of",
                    ),
                ),
            )
        ),
        d.ts(
            d.Common(
                f"Backlog as share of threshold, top {config.top_n}",
                "Waiting items divided by each facility's threshold (the default "
                f"{config.default_backlog_threshold} where none is configured), for the "
                f"{config.top_n} fullest facilities; orange from "
                f"{config.backlog_share.warning:.0%}, red from "
                f"{config.backlog_share.critical:.0%} (the backlog alert's limit).",
                "percentunit",
                (d.Q(d.topk(config, share), "{{facility}}"),),
                d.band(config.backlog_share),
                links=(backlog_link,),
            )
        ),
    ]


def _complaints(config: MixinConfig) -> list[Any]:
    """The Complaints row."""
    complaint_link = d.api_link(
        config,
        "Complaints in ${__field.labels.region} (API)",
        "complaints",
        {"region": "${__field.labels.region}"},
    )
    return [
        d.bars(
            d.Common(
                "Complaints per million items by region (1 day)",
                "Complaints opened in the trailing day per million items accepted for that "
                "region (the complaint region is the destination); orange from "
                f"{config.complaints_per_million.warning:g}, red from "
                f"{config.complaints_per_million.critical:g}.",
                "short",
                (d.Q(sel(rec.COMPLAINTS_PER_MILLION, d.JOB, d.REGION), "{{region}}"),),
                d.band(config.complaints_per_million),
                links=(complaint_link,),
            )
        ),
        d.bars(
            d.Common(
                f"Complaints past the {config.complaint_reply_days}-day reply deadline (now)",
                f"Open complaints older than {config.complaint_reply_days} days by region: "
                "users may now appeal to the regulator. Red from one.",
                "short",
                (
                    d.Q(
                        f"sum by (region) "
                        f"({sel(cat.COMPLAINTS_OVERDUE.name, d.JOB, d.INSTANCE, d.REGION)})",
                        "{{region}}",
                    ),
                ),
                d.above_bad(1),
                links=(
                    d.api_link(
                        config,
                        "Open complaints in ${__field.labels.region} (API)",
                        "complaints",
                        {"region": "${__field.labels.region}", "open": "true"},
                        window="as_of",
                    ),
                ),
            )
        ),
    ]


def _alerts(config: MixinConfig) -> list[Any]:
    """The Alerts row."""
    return [
        d.grid(
            d.Common(
                "Active alerts (now)",
                "Postal alerts of this job firing now for the selected regions (and those "
                "about no place), from Prometheus' ALERTS series; "
                "the same alerts are marked on every time series as annotations.",
                "none",
                (d.Q(firing_alerts(), instant=True, table=True),),
                width=24,
            ),
            hide=("Time", "__name__", "job", "Value", "alertstate"),
        ),
    ]


def notes(config: MixinConfig) -> dict[str, d.Note]:
    """Each panel's question and the alerts that go with it."""
    days = config.complaint_reply_days
    return {
        "On-time ratio by product (1 day)": d.note(
            "Is each product delivered on time, against its objective?", al.BUDGET_BURN
        ),
        "72-hour on-time rate (1 day)": d.note("Do deliveries make it within 72 hours?"),
        "Mean full-process time (1 day)": d.note("How long does an item take, door to door?"),
        f"On-time error budget remaining ({config.slo_period})": d.note(
            "How much lateness can each product still afford this period?", al.BUDGET_BURN
        ),
        "Facilities over their backlog threshold (now)": d.note(
            "How many facilities hold more than they should?", al.BACKLOG_HIGH
        ),
        "Complaints per million items (1 day)": d.note(
            "Are customers complaining more than usual?", al.COMPLAINT_SPIKE
        ),
        "First-attempt delivery (1 day)": d.note("Do couriers deliver at the first try?"),
        "Firing Postal alerts (now)": d.note("Is anything on fire right now?"),
        "On-time ratio by product vs objective (1 day)": d.note(
            "Is on-time delivery getting better or worse today?", al.BUDGET_BURN
        ),
        "Volume: accepted and delivered per hour": d.note(
            "Does the network deliver as much as it accepts?"
        ),
        "Items in network and overdue": d.note(
            "Is the stock of items in the network, and of overdue ones, rising?",
            al.OVERDUE_RISING,
        ),
        "Backlog hot spots (now)": d.note(
            "Which facilities hold the most waiting items?", al.BACKLOG_HIGH
        ),
        f"Backlog as share of threshold, top {config.top_n}": d.note(
            "Which facilities are near or over their backlog limit, and since when?",
            al.BACKLOG_HIGH,
        ),
        "Complaints per million items by region (1 day)": d.note(
            "Where do complaints come from?", al.COMPLAINT_SPIKE
        ),
        f"Complaints past the {days}-day reply deadline (now)": d.note(
            "Where do complaints wait too long for an answer?", al.COMPLAINTS_PAST_DEADLINE
        ),
        "Active alerts (now)": d.note("Which alerts fire, for which facility or region?"),
    }
