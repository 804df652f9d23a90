"""Postal / Facility backlog: which facilities hold too much, for how long, growing or draining."""

from __future__ import annotations

from typing import Any

from exporters import catalog as cat
from exporters.mixin import alerts as al
from exporters.mixin.config import MixinConfig
from exporters.mixin.dashboards import defaults as d
from exporters.mixin.dashboards.uids import FACILITY, OVERVIEW
from exporters.mixin.promql import sel


def build(config: MixinConfig) -> dict[str, Any]:
    """The facility backlog dashboard's JSON."""
    top = config.top_n
    board = d.board(
        config,
        FACILITY,
        "Postal / Facility backlog",
        "Backlog per facility in items and in time (oldest waiting item), against the "
        "facility's threshold, by age band, and whether it grows or drains. Views over "
        f"all facilities show the {top} worst; pick a region or facility to narrow them.",
        d.variables(config, "region", "facility"),
        links=[d.dashboard_link("National overview", OVERVIEW)],
    )
    rows = [
        ("Now", [*_now(config)]),
        ("Over time", [*_over_time_1(config), *_over_time_2(config)]),
    ]
    for title, panels in rows:
        board = board.with_row(d.row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return d.render(board, config, notes(config))


def _backlog(config: MixinConfig) -> tuple[str, str, d.Steps, tuple[float, float]]:
    """What the facility panels share: waiting items and oldest age per facility (scoped
    by the dashboard's variables), the oldest-item colours and their limits in hours."""
    scope = (d.JOB, d.INSTANCE, d.REGION, d.FACILITY)
    per_facility = f"sum by (facility) ({sel(cat.BACKLOG_ITEMS.name, *scope)})"
    oldest = f"max by (facility) ({sel(cat.BACKLOG_OLDEST_AGE.name, *scope)})"
    steps = d.ramp_up(
        (config.backlog_oldest_warning_seconds, d.WARN),
        (config.backlog_oldest_critical_seconds, d.BAD),
    )
    hours = (
        config.backlog_oldest_warning_seconds / cat.HOUR,
        config.backlog_oldest_critical_seconds / cat.HOUR,
    )
    return per_facility, oldest, steps, hours


def _backlog_link(config: MixinConfig) -> Any:
    """Drill-down from a facility series to its waiting items in the API (as of the panel)."""
    field = "__field.labels.facility"
    return d.api_link(
        config,
        f"Waiting items at ${{{field}}} (API)",
        "backlog",
        {"facility": f"${{{field}}}"},
        window="as_of",
    )


def _now(config: MixinConfig) -> list[Any]:
    """The Now row."""
    per_facility, oldest, oldest_steps, hours = _backlog(config)
    share = f"{per_facility}\n/ on (facility)\n(\n{d.effective_threshold(config)}\n)"
    top = config.top_n

    return [
        d.bars(
            d.Common(
                f"Backlog as share of threshold, top {top} (now)",
                "Waiting items divided by the facility's threshold (the default "
                f"{config.default_backlog_threshold} where none is configured); orange from "
                f"{config.backlog_share.warning:.0%}, red from "
                f"{config.backlog_share.critical:.0%}, where the backlog alert fires.",
                "percentunit",
                (d.Q(d.topk(config, share), "{{facility}}", instant=True),),
                d.band(config.backlog_share),
                links=(_backlog_link(config),),
                min=0,
            )
        ),
        d.bars(
            d.Common(
                f"Oldest waiting item, top {top} (now)",
                "Age of the oldest item waiting at each facility; orange from "
                f"{hours[0]:g} h, red from {hours[1]:g} h (the oldest-item alert's "
                "warning and critical limits).",
                "s",
                (d.Q(d.topk(config, oldest), "{{facility}}", instant=True),),
                oldest_steps,
                links=(_backlog_link(config),),
                min=0,
            )
        ),
    ]


def _over_time_1(config: MixinConfig) -> list[Any]:
    """The Over time row (part 1)."""
    scope = (d.JOB, d.INSTANCE, d.REGION, d.FACILITY)
    items = cat.BACKLOG_ITEMS.name
    per_facility, oldest, oldest_steps, hours = _backlog(config)
    top = config.top_n

    return [
        d.ts(
            d.Common(
                f"Waiting items vs threshold, top {top}",
                f"Items waiting at the {top} fullest facilities; dashed: each one's "
                f"threshold (the default {config.default_backlog_threshold} where none is "
                "configured).",
                "short",
                (
                    d.Q(d.topk(config, per_facility), "{{facility}}"),
                    d.Q(
                        f"(\n{d.effective_threshold(config)}\n)\nand on (facility)\n"
                        f"{d.topk(config, per_facility)}",
                        "{{facility}} threshold",
                    ),
                ),
                links=(_backlog_link(config),),
            ),
            dashed=".*threshold",
        ),
        d.ts(
            d.Common(
                "Waiting items by age band",
                "Waiting items of the selected facilities stacked by how long they have "
                "waited (lt_6h ... ge_48h).",
                "short",
                (d.Q(f"sum by (age_band) ({sel(items, *scope)})", "{{age_band}}"),),
            ),
            stacked=True,
        ),
        d.ts(
            d.Common(
                f"Oldest waiting item, top {top}",
                f"Age of the oldest waiting item at the {top} facilities where it is "
                f"oldest; dashed lines at {hours[0]:g} h (warning) and {hours[1]:g} h "
                "(critical).",
                "s",
                (d.Q(d.topk(config, oldest), "{{facility}}"),),
                oldest_steps,
                links=(_backlog_link(config),),
            )
        ),
    ]


def _over_time_2(config: MixinConfig) -> list[Any]:
    """The Over time row (part 2)."""
    scope = (d.JOB, d.INSTANCE, d.REGION, d.FACILITY)
    items = cat.BACKLOG_ITEMS.name
    top = config.top_n

    return [
        d.ts(
            d.Common(
                f"Backlog growth over the last hour, top {top}",
                f"Change in waiting items over the trailing hour at the {top} fastest-"
                "growing facilities: above zero growing, below zero draining, flat at a "
                "high level stalled.",
                "short",
                (
                    d.Q(
                        d.topk(config, f"sum by (facility) (delta({sel(items, *scope)}[1h]))"),
                        "{{facility}}",
                    ),
                ),
                links=(_backlog_link(config),),
            )
        ),
        d.ts(
            d.Common(
                "Stalled items by destination region",
                "Items still in the network with no tracking event for longer than the "
                "stall limit, by the item's destination region.",
                "short",
                (
                    d.Q(
                        f"sum by (region) "
                        f"({sel(cat.ITEMS_STALLED.name, d.JOB, d.INSTANCE, d.REGION)})",
                        "{{region}}",
                    ),
                ),
                links=(
                    d.api_link(
                        config,
                        "Stalled items for ${__field.labels.region} by product (API)",
                        "kpis/stalled_items",
                        {"by": "product", "destination": "${__field.labels.region}"},
                        window="as_of",
                    ),
                ),
                width=24,
            )
        ),
    ]


def notes(config: MixinConfig) -> dict[str, d.Note]:
    """Each panel's question and the alerts that go with it."""
    top = config.top_n
    return {
        f"Backlog as share of threshold, top {top} (now)": d.note(
            "Which facilities are over, or close to, their backlog limit?", al.BACKLOG_HIGH
        ),
        f"Oldest waiting item, top {top} (now)": d.note(
            "Where has an item waited longest?", al.BACKLOG_OLDEST
        ),
        f"Waiting items vs threshold, top {top}": d.note(
            "How did the fullest facilities' backlog move against their threshold?",
            al.BACKLOG_HIGH,
        ),
        "Waiting items by age band": d.note(
            "Is the backlog young (flow) or old (stuck)?", al.BACKLOG_OLDEST
        ),
        f"Oldest waiting item, top {top}": d.note(
            "Since when do items wait too long, and where?", al.BACKLOG_OLDEST
        ),
        f"Backlog growth over the last hour, top {top}": d.note(
            "Which backlogs grow fastest, and which drain?", al.BACKLOG_GROWING
        ),
        "Stalled items by destination region": d.note(
            "For which regions do items go silent (no scan for too long)?", al.STALLED_RISING
        ),
    }
