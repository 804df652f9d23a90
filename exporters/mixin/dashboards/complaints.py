"""Postal / Complaints: rates per million, categories, open ones and the 7-day reply deadline."""

from __future__ import annotations

from typing import Any

from exporters import catalog as cat
from exporters.mixin import alerts as al
from exporters.mixin import rules as rec
from exporters.mixin.config import MixinConfig
from exporters.mixin.dashboards import defaults as d
from exporters.mixin.dashboards.uids import COMPLAINTS, OVERVIEW
from exporters.mixin.promql import eq, sel


def build(config: MixinConfig) -> dict[str, Any]:
    """The complaints dashboard's JSON."""
    days = config.complaint_reply_days
    board = d.board(
        config,
        COMPLAINTS,
        "Postal / Complaints",
        "Complaints per million items, by category and region, open complaints and those "
        f"past the {days}-day reply deadline, and how fast they are resolved.",
        d.variables(config, "region", "category"),
        links=[d.dashboard_link("National overview", OVERVIEW)],
    )
    rows = [
        ("Headlines", [*_headlines_1(config), *_headlines_2(config)]),
        (
            "By category and region",
            [*_by_category_and_region_1(config), *_by_category_and_region_2(config)],
        ),
        ("Resolution", [*_resolution(config)]),
    ]
    for title, panels in rows:
        board = board.with_row(d.row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return d.render(board, config, notes(config))


def _headlines_1(config: MixinConfig) -> list[Any]:
    """The Headlines row (part 1)."""
    scope = (d.JOB, d.INSTANCE, d.REGION)
    per_million = d.band(config.complaints_per_million)
    return [
        d.big(
            d.Common(
                "Complaints per million items (1 day)",
                "Complaints (all categories) opened in the trailing day per million items "
                "accepted for the selected regions (SPB 申诉率); orange from "
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
                per_million,
                width=6,
                height=4,
                decimals=1,
            )
        ),
        d.big(
            d.Common(
                "Valid complaints per million items (1 day)",
                "Complaints with the operator's responsibility established (有效申诉), per "
                "million items accepted, over the trailing day; same colours as all "
                "complaints.",
                "short",
                (
                    d.Q(
                        d.ratio(
                            f"1e6 * sum ({sel(rec.VALID_COMPLAINTS_1D, d.JOB, d.REGION)})",
                            f"sum ({sel(rec.ACCEPTED_BY_REGION_1D, d.JOB, d.REGION)})",
                        ),
                        instant=True,
                    ),
                ),
                per_million,
                width=6,
                height=4,
                decimals=1,
            )
        ),
        d.big(
            d.Common(
                "Open complaints (now)",
                "Complaints of the selected regions not yet resolved.",
                "short",
                (d.Q(f"sum ({sel(cat.COMPLAINTS_OPEN.name, *scope)})", instant=True),),
                width=6,
                height=4,
            )
        ),
    ]


def _headlines_2(config: MixinConfig) -> list[Any]:
    """The Headlines row (part 2)."""
    scope = (d.JOB, d.INSTANCE, d.REGION)
    days = config.complaint_reply_days
    return [
        d.big(
            d.Common(
                f"Past the {days}-day reply deadline (now)",
                f"Open complaints older than {days} days: users may now appeal to the "
                "regulator. Red from one.",
                "short",
                (d.Q(f"sum ({sel(cat.COMPLAINTS_OVERDUE.name, *scope)})", instant=True),),
                d.above_bad(1),
                width=6,
                height=4,
            )
        ),
    ]


def _by_category_and_region_1(config: MixinConfig) -> list[Any]:
    """The By category and region row (part 1)."""
    scope = (d.JOB, d.INSTANCE, d.REGION)
    by_category = (*scope, d.CATEGORY)

    def region_link(*, open_only: bool = False) -> Any:
        params = {"region": "${__field.labels.region}"}
        if open_only:
            params["open"] = "true"
        return d.api_link(
            config,
            ("Open complaints" if open_only else "Complaints")
            + " in ${__field.labels.region} (API)",
            "complaints",
            params,
            window="as_of" if open_only else "range",
        )

    return [
        d.ts(
            d.Common(
                "Complaints per hour by category",
                "Complaints opened per hour in the selected regions, by category. Click a "
                "series for the complaints of that category.",
                "short",
                (
                    d.Q(
                        d.per_hour(
                            d.sum_rate(("category",), sel(cat.COMPLAINTS.series, *by_category))
                        ),
                        "{{category}}",
                    ),
                ),
                links=(
                    d.api_link(
                        config,
                        "${__field.labels.category} complaints (API)",
                        "complaints",
                        {"category": "${__field.labels.category}"},
                    ),
                ),
            ),
            stacked=True,
        ),
        d.ts(
            d.Common(
                "Complaints per hour by region (1 hour)",
                "Complaints opened over the trailing hour per region, per hour (all "
                "categories): the complaint-spike alert compares it with the region's "
                f"7-day average (x{config.complaint_spike_factor:g}).",
                "short",
                (
                    d.Q(
                        d.per_hour(sel(rec.COMPLAINTS_RATE_1H, d.JOB, d.REGION)),
                        "{{region}}",
                    ),
                ),
                links=(region_link(),),
            )
        ),
    ]


def _by_category_and_region_2(config: MixinConfig) -> list[Any]:
    """The By category and region row (part 2)."""
    scope = (d.JOB, d.INSTANCE, d.REGION)
    days = config.complaint_reply_days
    per_million = d.band(config.complaints_per_million)

    def region_link(*, open_only: bool = False) -> Any:
        params = {"region": "${__field.labels.region}"}
        if open_only:
            params["open"] = "true"
        return d.api_link(
            config,
            ("Open complaints" if open_only else "Complaints")
            + " in ${__field.labels.region} (API)",
            "complaints",
            params,
            window="as_of" if open_only else "range",
        )

    return [
        d.ts(
            d.Common(
                "Complaints per million items by region (1 day)",
                "Complaints (all categories) opened in the trailing day per million items "
                "accepted for the region, and valid complaints only (dashed); orange from "
                f"{config.complaints_per_million.warning:g}, red from "
                f"{config.complaints_per_million.critical:g}.",
                "short",
                (
                    d.Q(sel(rec.COMPLAINTS_PER_MILLION, d.JOB, d.REGION), "{{region}}"),
                    d.Q(
                        sel(rec.VALID_COMPLAINTS_PER_MILLION, d.JOB, d.REGION),
                        "{{region}} valid",
                    ),
                ),
                per_million,
                links=(region_link(),),
            ),
            dashed=".*valid",
        ),
        d.bars(
            d.Common(
                "Open complaints by region (now)",
                "Complaints not yet resolved, by region.",
                "short",
                (
                    d.Q(
                        f"sum by (region) ({sel(cat.COMPLAINTS_OPEN.name, *scope)})",
                        "{{region}}",
                        instant=True,
                    ),
                ),
                links=(region_link(open_only=True),),
                width=6,
            )
        ),
        d.bars(
            d.Common(
                f"Past the {days}-day reply deadline by region (now)",
                f"Open complaints older than {days} days, by region. Red from one.",
                "short",
                (
                    d.Q(
                        f"sum by (region) ({sel(cat.COMPLAINTS_OVERDUE.name, *scope)})",
                        "{{region}}",
                        instant=True,
                    ),
                ),
                d.above_bad(1),
                links=(region_link(open_only=True),),
                width=6,
            )
        ),
    ]


def _resolution(config: MixinConfig) -> list[Any]:
    """The Resolution row."""
    scope = (d.JOB, d.INSTANCE, d.REGION)
    by_category = (*scope, d.CATEGORY)
    res = cat.COMPLAINT_RESOLUTION
    days = config.complaint_reply_days
    deadline = days * cat.DAY
    return [
        d.ts(
            d.Common(
                "Resolution time p50 / p90",
                "Opening-to-resolution time of the complaints of the selected regions and "
                f"categories resolved in each rate interval; dashed: the {days}-day reply "
                "deadline.",
                "s",
                tuple(
                    d.Q(
                        f"histogram_quantile({q}, "
                        f"{d.sum_rate(('le',), sel(res.bucket, *by_category))})",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ),
                d.above_bad(deadline),
            )
        ),
        d.ts(
            d.Common(
                f"Share resolved within {days} days",
                f"Share of the complaints resolved in each rate interval that were answered "
                f"within the {days}-day deadline (exact: a bucket edge sits at {days} "
                "days); every complaint answered late is a possible appeal.",
                "percentunit",
                (
                    d.Q(
                        d.ratio(
                            d.sum_rate(
                                (), sel(res.bucket, *by_category, eq("le", res.le(deadline)))
                            ),
                            d.sum_rate((), sel(res.count, *by_category)),
                        ),
                        "within deadline",
                    ),
                ),
                max=1,
            )
        ),
    ]


def notes(config: MixinConfig) -> dict[str, d.Note]:
    """Each panel's question and the alerts that go with it."""
    days = config.complaint_reply_days
    return {
        "Complaints per million items (1 day)": d.note(
            "Are customers complaining more than usual?", al.COMPLAINT_SPIKE
        ),
        "Valid complaints per million items (1 day)": d.note("How many complaints are our fault?"),
        "Open complaints (now)": d.note("How many complaints wait for an answer?"),
        f"Past the {days}-day reply deadline (now)": d.note(
            "Have we missed any reply deadline?", al.COMPLAINTS_PAST_DEADLINE
        ),
        "Complaints per hour by category": d.note("What do customers complain about?"),
        "Complaints per hour by region (1 hour)": d.note(
            "Is a region spiking right now?", al.COMPLAINT_SPIKE
        ),
        "Complaints per million items by region (1 day)": d.note(
            "Which regions complain most for their volume?", al.COMPLAINT_SPIKE
        ),
        "Open complaints by region (now)": d.note("Where do complaints wait for an answer?"),
        f"Past the {days}-day reply deadline by region (now)": d.note(
            "Where have we missed reply deadlines?", al.COMPLAINTS_PAST_DEADLINE
        ),
        "Resolution time p50 / p90": d.note(
            "How long do customers wait for an answer?", al.COMPLAINTS_PAST_DEADLINE
        ),
        f"Share resolved within {days} days": d.note(
            "Do we answer within the deadline?", al.COMPLAINTS_PAST_DEADLINE
        ),
    }
