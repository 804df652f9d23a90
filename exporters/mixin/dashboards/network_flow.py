"""Postal / Network flow: the four links side by side, the slowest facilities and region pairs.

Collection (first mile), processing (dwell at a facility), transport (legs between
facilities) and delivery (last mile), from the exporter's stage histograms and the
stage recording rules (``exporters.mixin.stage_rules``).
"""

from __future__ import annotations

from typing import Any, Final

from exporters import catalog as cat
from exporters.mixin import stage_rules as sr
from exporters.mixin.config import MixinConfig
from exporters.mixin.dashboards import defaults as d
from exporters.mixin.dashboards.uids import FACILITY, NETWORK_FLOW
from exporters.mixin.promql import eq, sel

FROM_REGION: Final = 'from_region=~"$region"'
TO_REGION: Final = 'to_region=~"$region"'

#: (stage label, title, the histogram, its matchers) of the four links, in order.
LINKS: Final = (
    ("first_mile", "Collection: first mile", cat.STAGE_FIRST_MILE, ('origin=~"$region"',)),
    ("dwell", "Processing: dwell", cat.STAGE_DWELL, (d.REGION, d.FACILITY)),
    ("leg", "Transport: legs", cat.STAGE_LEG, (TO_REGION,)),
    ("last_mile", "Delivery: last mile", cat.STAGE_LAST_MILE, (d.REGION, d.FACILITY)),
)
LATE_TITLE: Final = "Counted intervals changed or left out by late scans"


def build(config: MixinConfig) -> dict[str, Any]:
    """The network flow dashboard's JSON."""
    board = d.board(
        config,
        NETWORK_FLOW,
        "Postal / Network flow",
        "Where items lose time: the four links of the journey (collection, processing, "
        "transport, delivery) side by side, the facilities that hold items longest against "
        "their type's target and the slowest region pairs, with the slow legs' items in "
        "the analyst API.",
        d.variables(config, "region", "facility"),
        links=[d.dashboard_link("Facility backlog", FACILITY)],
    )
    rows = [("The four links", _links(config)), ("Where", _where(config))]
    for title, panels in rows:
        board = board.with_row(d.row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return d.render(board, config, notes(config))


def _p90(spec: cat.MetricSpec, by: tuple[str, ...], *matchers: str) -> str:
    rate = d.sum_rate((*by, "le"), sel(spec.bucket, d.JOB, d.INSTANCE, *matchers))
    return f"histogram_quantile(0.9, {rate})"


def _links(config: MixinConfig) -> list[Any]:
    stats = [
        d.big(
            d.Common(
                f"{title} p90 (1 hour)",
                f"90th percentile of the {stage.replace('_', ' ')} times ending in the last "
                "hour, network-wide (histogram estimate).",
                "s",
                (d.Q(sel(sr.STAGE_P90, d.JOB, eq("stage", stage)), title, instant=True),),
                d.NO_MEANING,
                width=6,
            )
        )
        for stage, title, _, _ in LINKS
    ]
    over_time = d.ts(
        d.Common(
            "The four links: p90",
            "90th percentile of each link's times (collection, processing, transport, "
            "delivery) for the selection: first mile by origin region, dwell and last mile by "
            "facility and its region, legs arriving in the region.",
            "s",
            tuple(d.Q(_p90(spec, (), *matchers), title) for _, title, spec, matchers in LINKS),
            width=24,
        )
    )
    revisions = d.ts(
        d.Common(
            LATE_TITLE,
            "Stage intervals the exporter had already counted that a scan read later "
            "changed (an arrival uploaded late between an arrival and a departure already "
            "seen), and scans read older than the stage horizon (the late grace), whose "
            "intervals are not computed: the stage histograms differ from the report by "
            "these. Zero when scans arrive in order or closing scans first, within the "
            "horizon.",
            "short",
            (
                d.Q(
                    d.sum_rate(("stage",), sel(cat.STAGE_REVISIONS.series, d.JOB, d.INSTANCE)),
                    "{{stage}} changed",
                ),
                d.Q(
                    d.sum_rate(
                        ("event",),
                        sel(cat.EXPORTER_STAGE_LATE_SCANS.series, d.JOB, d.INSTANCE),
                    ),
                    "{{event}} past the horizon",
                ),
            ),
            width=24,
        )
    )
    return [*stats, over_time, revisions]


def _pairs(expr_of: str) -> str:
    """A per-region-pair expression for pairs that start or end in the selected regions."""
    return f"{sel(expr_of, d.JOB, FROM_REGION)}\nor\n{sel(expr_of, d.JOB, TO_REGION)}"


def _legs_link(config: MixinConfig) -> Any:
    labels = "__field.labels"
    return d.api_link(
        config,
        f"Slow legs ${{{labels}.from_region}} to ${{{labels}.to_region}} (API)",
        "legs",
        {
            "from_region": f"${{{labels}.from_region}}",
            "to_region": f"${{{labels}.to_region}}",
        },
    )


def _backlog_link(config: MixinConfig) -> Any:
    field = "__field.labels.facility"
    return d.api_link(
        config,
        f"Waiting items at ${{{field}}} (API)",
        "backlog",
        {"facility": f"${{{field}}}"},
        window="as_of",
    )


def _where(config: MixinConfig) -> list[Any]:
    top = config.top_n
    facilities = sel(sr.DWELL_P90, d.JOB, d.REGION, d.FACILITY)
    vs_target = (
        f"{facilities}\n/ on (job, facility_type) group_left ()\n{sel(sr.DWELL_TARGET, d.JOB)}"
    )
    legs_vs_target = (
        f"(\n{_pairs(sr.LEG_P90)}\n)\n/ on (job) group_left ()\n{sel(sr.LEG_TARGET, d.JOB)}"
    )
    return [
        d.bars(
            d.Common(
                f"Worst facilities: dwell p90 vs target, top {top} (1 hour)",
                "Each facility's 90th-percentile dwell (departure minus arrival there) over "
                "the last hour, divided by its facility type's target; red from 100 %, where "
                "the dwell alert fires after an hour.",
                "percentunit",
                (d.Q(d.topk(config, vs_target), "{{facility}}", instant=True),),
                d.Steps(d.GOOD, ((0.8, d.WARN), (1.0, d.BAD))),
                links=(_backlog_link(config),),
                min=0,
            )
        ),
        d.bars(
            d.Common(
                f"Worst region pairs: leg p90 vs target, top {top} (1 hour)",
                "90th-percentile transport time between two regions (arrival minus the "
                "latest departure elsewhere) over the last hour, for pairs that start or end "
                "in the selected regions, divided by the service standard's leg target; red "
                "from 100 %, where the leg alert fires after an hour. Click for the slow "
                "legs' items.",
                "percentunit",
                (
                    d.Q(
                        d.topk(config, legs_vs_target),
                        "{{from_region}} → {{to_region}}",
                        instant=True,
                    ),
                ),
                d.Steps(d.GOOD, ((0.8, d.WARN), (1.0, d.BAD))),
                links=(_legs_link(config),),
                min=0,
            )
        ),
        d.ts(
            d.Common(
                f"Dwell p90 (1 hour), top {top} facilities",
                f"90th-percentile dwell over the trailing hour at the {top} slowest facilities "
                "of the selection (the recorded series the dwell alert reads).",
                "s",
                (d.Q(d.topk(config, facilities), "{{facility}}"),),
                links=(_backlog_link(config),),
            )
        ),
        d.ts(
            d.Common(
                f"Leg p90 (1 hour), top {top} region pairs",
                f"90th-percentile transport time over the trailing hour of the {top} slowest "
                "region pairs that start or end in the selected regions (the recorded series "
                "the leg alert reads), and the service standard's leg target.",
                "s",
                (
                    d.Q(
                        d.topk(config, f"(\n{_pairs(sr.LEG_P90)}\n)"),
                        "{{from_region}} → {{to_region}}",
                    ),
                    d.Q(sel(sr.LEG_TARGET, d.JOB), "target"),
                ),
                links=(_legs_link(config),),
            )
        ),
    ]


def notes(config: MixinConfig) -> dict[str, d.Note]:
    """Each panel's question and the alerts that go with it."""
    top = config.top_n
    out = {
        f"{title} p90 (1 hour)": d.note(
            f"How long does {title.split(': ')[1]} take across the network?",
            *((sr.DWELL_ABOVE_TARGET,) if stage == "dwell" else ()),
            *((sr.LEG_ABOVE_TARGET,) if stage == "leg" else ()),
        )
        for stage, title, _, _ in LINKS
    }
    return out | {
        "The four links: p90": d.note("Which link of the journey lost the time, and when?"),
        LATE_TITLE: d.note("Can the live stage figures be trusted to equal the report's?"),
        f"Worst facilities: dwell p90 vs target, top {top} (1 hour)": d.note(
            "Which facilities hold items longer than their target?", sr.DWELL_ABOVE_TARGET
        ),
        f"Worst region pairs: leg p90 vs target, top {top} (1 hour)": d.note(
            "Which routes between regions are slow?", sr.LEG_ABOVE_TARGET
        ),
        f"Dwell p90 (1 hour), top {top} facilities": d.note(
            "Since when is a facility slow to process?", sr.DWELL_ABOVE_TARGET
        ),
        f"Leg p90 (1 hour), top {top} region pairs": d.note(
            "Since when is a region pair slow?", sr.LEG_ABOVE_TARGET
        ),
    }
