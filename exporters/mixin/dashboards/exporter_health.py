"""Postal / Exporter health: is the exporter up, reading its input, keeping up, fast enough?"""

from __future__ import annotations

from typing import Any

from exporters import catalog as cat
from exporters.mixin import alerts as al
from exporters.mixin.config import MixinConfig
from exporters.mixin.dashboards import defaults as d
from exporters.mixin.dashboards.uids import EXPORTER, OVERVIEW
from exporters.mixin.promql import by, sel


def build(config: MixinConfig) -> dict[str, Any]:
    """The exporter health dashboard's JSON."""
    board = d.board(
        config,
        EXPORTER,
        "Postal / Exporter health",
        "Is the exporter up, reading its input, keeping up, and fast enough to scrape? "
        "When it is down or stale every other dashboard is out of date.",
        d.variables(config),
        links=[d.dashboard_link("National overview", OVERVIEW)],
    )
    rows = [
        ("Now", [*_now_1(config), *_now_2(config)]),
        ("Input", [*_input(config)]),
        ("Speed", [*_speed(config), *_kafka(config)]),
    ]
    for title, panels in rows:
        board = board.with_row(d.row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return d.render(board, config, notes(config))


def _now_1(config: MixinConfig) -> list[Any]:
    """The Now row (part 1)."""
    scope = (d.JOB, d.INSTANCE)
    return [
        d.big(
            d.Common(
                "Up (last scrape)",
                "UP when Prometheus' last scrape of the exporter succeeded, DOWN (red) "
                "when it failed or no instance is scraped at all.",
                "none",
                (d.Q(sel("up", *scope), "{{instance}}", instant=True),),
                d.below_bad(1),
                width=6,
                height=4,
            ),
            mappings=d.health_mappings("UP", "DOWN"),
        ),
        d.big(
            d.Common(
                "Event lag (now)",
                "Seconds since the newest event the exporter processed; red from "
                f"{config.data_stale_seconds:g} s, where the data-stale alert fires.",
                "s",
                (
                    d.Q(
                        f"time() - max by (instance) "
                        f"({sel(cat.EXPORTER_LAST_EVENT_TIMESTAMP.name, *scope)})",
                        "{{instance}}",
                        instant=True,
                    ),
                ),
                d.above_bad(config.data_stale_seconds),
                width=6,
                height=4,
            )
        ),
    ]


def _now_2(config: MixinConfig) -> list[Any]:
    """The Now row (part 2)."""
    scope = (d.JOB, d.INSTANCE)
    return [
        d.big(
            d.Common(
                "Items tracked (now)",
                "Items whose state the exporter holds in memory (finished items leave "
                "after the retention), and the deliveries among them waiting for their "
                "acceptance (not counted yet).",
                "short",
                (
                    d.Q(
                        f"sum by (instance) ({sel(cat.EXPORTER_ITEMS_TRACKED.name, *scope)})",
                        "{{instance}}",
                        instant=True,
                    ),
                    d.Q(
                        f"sum by (instance) ({sel(cat.EXPORTER_AWAITING_ACCEPTANCE.name, *scope)})",
                        "{{instance}} awaiting acceptance",
                        instant=True,
                    ),
                ),
                width=6,
                height=4,
            )
        ),
        d.big(
            d.Common(
                "Since last checkpoint (now)",
                "Seconds since the exporter last checkpointed its state: what a crash "
                "would make it re-read; red from "
                f"{al.CHECKPOINT_STALE_SECONDS} s, where the checkpoint-stale alert fires "
                "(state folder full or read-only).",
                "s",
                (
                    d.Q(
                        f"time() - max by (instance) "
                        f"({sel(cat.EXPORTER_LAST_CHECKPOINT_TIMESTAMP.name, *scope)})",
                        "{{instance}}",
                        instant=True,
                    ),
                ),
                d.above_bad(al.CHECKPOINT_STALE_SECONDS),
                width=6,
                height=4,
            )
        ),
        d.big(
            d.Common(
                "Reference files valid (now)",
                "VALID when the current facilities.csv / service-standards.yaml is in use, "
                "REFUSED (red) when a bad new version was refused and the previous one kept.",
                "none",
                (
                    d.Q(
                        f"min by (instance, file) ({sel(cat.EXPORTER_CONFIG_VALID.name, *scope)})",
                        "{{instance}} {{file}}",
                        instant=True,
                    ),
                ),
                d.below_bad(1),
                width=6,
                height=4,
            ),
            mappings=d.health_mappings("VALID", "REFUSED"),
        ),
    ]


def _input(config: MixinConfig) -> list[Any]:
    """The Input row."""
    scope = (d.JOB, d.INSTANCE)
    inst = ("instance",)
    ingested = d.sum_rate(inst, sel(cat.EXPORTER_EVENTS_INGESTED.series, *scope))
    rejected = sel(cat.EXPORTER_EVENTS_REJECTED.series, *scope)
    all_rows = f"(\n  {ingested}\n  + {d.sum_rate(inst, rejected)}\n)"
    return [
        d.ts(
            d.Common(
                "Rows ingested and late events per second",
                "Input rows accepted per second, and events that arrived after a later "
                "event of the same item.",
                "cps",
                (
                    d.Q(ingested, "{{instance}} ingested"),
                    d.Q(
                        d.sum_rate(inst, sel(cat.EXPORTER_LATE_EVENTS.series, *scope)),
                        "{{instance}} late",
                    ),
                ),
            )
        ),
        d.ts(
            d.Common(
                "Rejected share of input rows by reason",
                "Rows (or whole files) rejected, by reason, as a share of all rows read; "
                f"dashed at {config.rejected_ratio:.0%}, where the rejects alert fires "
                "(duplicates excepted).",
                "percentunit",
                (
                    d.Q(
                        f"sum {by('instance', 'reason')} (rate({rejected}[{d.RATE}]))\n"
                        f"/ on (instance) group_left ()\n{all_rows}",
                        "{{reason}}",
                    ),
                ),
                d.above_bad(config.rejected_ratio),
            ),
            stacked=True,
        ),
    ]


def _speed(config: MixinConfig) -> list[Any]:
    """The Speed row."""
    scope = (d.JOB, d.INSTANCE)
    batch = cat.EXPORTER_BATCH_DURATION
    return [
        d.ts(
            d.Common(
                "Batch duration p50 / p99",
                "Wall time to ingest one batch and recompute the KPIs.",
                "s",
                tuple(
                    d.Q(
                        f"histogram_quantile({q}, "
                        f"{d.sum_rate(('le', 'instance'), sel(batch.bucket, *scope))})",
                        f"{{{{instance}}}} p{round(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ),
                width=8,
            )
        ),
        d.ts(
            d.Common(
                "Scrape duration",
                "How long Prometheus takes to scrape the exporter; orange from "
                f"{config.scrape_duration_seconds.warning:g} s, red from "
                f"{config.scrape_duration_seconds.critical:g} s (the default scrape "
                "timeout).",
                "s",
                (d.Q(sel("scrape_duration_seconds", *scope), "{{instance}}"),),
                d.band(config.scrape_duration_seconds),
                width=8,
            )
        ),
        d.ts(
            d.Common(
                "Samples per scrape",
                "Samples the exporter returns per scrape: watch for series growth.",
                "short",
                (d.Q(sel("scrape_samples_scraped", *scope), "{{instance}}"),),
                width=8,
            )
        ),
        d.grid(
            d.Common(
                "Exporter version (now)",
                "Version of each exporter instance, from its build-info series.",
                "none",
                (
                    d.Q(
                        sel(cat.EXPORTER_BUILD_INFO.series, *scope),
                        instant=True,
                        table=True,
                    ),
                ),
                width=24,
                height=5,
            ),
            hide=("Time", "__name__", "job", "Value"),
        ),
    ]


def _kafka(config: MixinConfig) -> list[Any]:
    """Kafka shards only: consumer lag per partition."""
    scope = (d.JOB, d.INSTANCE)
    return [
        d.ts(
            d.Common(
                "Kafka consumer lag",
                "Kafka shards only: messages of each partition not consumed yet, and how "
                "long the shard holding it has been behind, and the partitions each shard holds "
                "(the lag alert fires from "
                f"{al.KAFKA_LAG_SECONDS} s while the lag grows).",
                "short",
                (
                    d.Q(
                        f"max by (topic, partition) ({sel(cat.KAFKA_LAG.name, *scope)})",
                        "{{topic}}/{{partition}} messages",
                    ),
                    d.Q(
                        f"max by (topic, partition) ({sel(cat.KAFKA_LAG_AGE.name, *scope)})",
                        "{{topic}}/{{partition}} seconds behind",
                    ),
                    d.Q(
                        f"sum by (instance) ({sel(cat.KAFKA_PARTITIONS.name, *scope)})",
                        "{{instance}} partitions held",
                    ),
                ),
                width=24,
            )
        ),
    ]


def notes(config: MixinConfig) -> dict[str, d.Note]:
    """Each panel's question and the alerts that go with it."""
    return {
        "Up (last scrape)": d.note("Can Prometheus reach the exporter?", al.EXPORTER_DOWN),
        "Event lag (now)": d.note("Are the dashboards up to date?", al.DATA_STALE),
        "Items tracked (now)": d.note("How much does the exporter hold in memory?"),
        "Since last checkpoint (now)": d.note(
            "How much would a crash make it re-read?", al.CHECKPOINT_STALE
        ),
        "Reference files valid (now)": d.note(
            "Is the last edit of a reference file in use?", al.CONFIG_INVALID
        ),
        "Rows ingested and late events per second": d.note(
            "Is input flowing, and in order?", al.LATE_EVENTS
        ),
        "Rejected share of input rows by reason": d.note(
            "Is bad input being thrown away, and why?", al.REJECTS_HIGH
        ),
        "Batch duration p50 / p99": d.note("Does the exporter keep up with its input?"),
        "Scrape duration": d.note("Is a scrape close to timing out?"),
        "Samples per scrape": d.note("Are the series growing?"),
        "Kafka consumer lag": d.note("Do the Kafka shards keep up with the topic?", al.KAFKA_LAG),
        "Exporter version (now)": d.note("Which version runs where?"),
    }
