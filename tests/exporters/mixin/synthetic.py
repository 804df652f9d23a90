"""A synthetic exporter serving every catalog metric, and rule-file copies for fast tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics_core import Metric

from exporters import catalog as cat
from exporters.mixin.config import MixinConfig
from tests import promkit

REPO = Path(__file__).resolve().parents[3]
#: The facility over its threshold and the healthy one.
OVER, HEALTHY = "F-OVER", "F-OK"
THRESHOLD = 5000.0
#: Per scrape: 9 on time, 1 late (+5 without promise) -> on-time ratio 0.9 exactly.
ON_TIME_PER_SCRAPE, LATE_PER_SCRAPE, UNKNOWN_PER_SCRAPE = 9.0, 1.0, 5.0
#: Per scrape: 1000 items accepted for CN-GD, 2 complaints there -> 2000 per million.
ACCEPTED_PER_SCRAPE, COMPLAINTS_PER_SCRAPE = 1000.0, 2.0


class SyntheticExporter:
    """Every catalog metric with plausible values; counters grow on every scrape."""

    def __init__(self) -> None:
        self.scrapes = 0
        self._lock = threading.Lock()

    def collect(self) -> list[Metric]:
        """Families for one scrape."""
        with self._lock:
            self.scrapes += 1
            n = float(self.scrapes)
        out: list[Metric] = []

        def add(spec: cat.MetricSpec, rows: list[tuple[list[str], Any]]) -> None:
            family = spec.family()
            for labels, value in rows:
                if spec.type is cat.MetricType.HISTOGRAM:
                    buckets, total = value
                    family.add_metric(labels, buckets, total)  # type: ignore[attr-defined]
                else:
                    family.add_metric(labels, value)  # type: ignore[attr-defined]
            out.append(family)

        def histogram(spec: cat.MetricSpec, per_scrape: float, mean: float) -> Any:
            # Cumulative counts: half the observations fall below the middle edge.
            edges = spec.le_values
            counts = [
                (le, n * per_scrape * min(1.0, (i + 1) / max(1, len(edges) // 2)))
                for i, le in enumerate(edges)
            ]
            counts[-1] = ("+Inf", n * per_scrape)
            return counts, n * per_scrape * mean

        add(cat.ITEMS_ACCEPTED, [(["express", "CN-BJ", "CN-GD"], n * ACCEPTED_PER_SCRAPE)])
        add(
            cat.ITEMS_DELIVERED,
            [
                (["express", "CN-GD", "true"], n * ON_TIME_PER_SCRAPE),
                (["express", "CN-GD", "false"], n * LATE_PER_SCRAPE),
                (["express", "CN-GD", "unknown"], n * UNKNOWN_PER_SCRAPE),
            ],
        )
        add(cat.ITEMS_RETURNED, [(["express", "CN-GD"], n)])
        add(
            cat.DELIVERY_ATTEMPTS,
            [
                (["express", "CN-GD", "delivered", "first"], n * 8),
                (["express", "CN-GD", "failed", "first"], n * 2),
                (["express", "CN-GD", "delivered", "repeat"], n),
            ],
        )
        add(cat.DELIVERY_FAILURES, [(["addressee_absent"], n * 2)])
        add(
            cat.TRANSIT_TIME, [(["express", "CN-GD"], histogram(cat.TRANSIT_TIME, 10, 2 * cat.DAY))]
        )
        for spec, rows in _stage_rows(n, histogram):
            add(spec, rows)
        add(cat.COMPLAINTS, [(["CN-GD", "delay", "true"], n * COMPLAINTS_PER_SCRAPE)])
        add(
            cat.COMPLAINT_RESOLUTION,
            [(["CN-GD", "delay"], histogram(cat.COMPLAINT_RESOLUTION, 1, 3 * cat.DAY))],
        )
        add(
            cat.BACKLOG_ITEMS,
            [
                ([OVER, "processing", "CN-GD", "lt_6h"], 4000.0),
                ([OVER, "processing", "CN-GD", "ge_48h"], 2000.0),
                ([HEALTHY, "delivery", "CN-BJ", "lt_6h"], 10.0),
            ],
        )
        add(
            cat.BACKLOG_OLDEST_AGE,
            [([OVER, "processing", "CN-GD"], 3 * cat.DAY), ([HEALTHY, "delivery", "CN-BJ"], 60.0)],
        )
        add(cat.BACKLOG_THRESHOLD, [([OVER], THRESHOLD), ([HEALTHY], THRESHOLD)])
        add(cat.ITEMS_IN_NETWORK, [(["express", "CN-GD"], 500.0)])
        add(cat.ITEMS_OVERDUE, [(["express", "CN-GD"], 20.0)])
        add(cat.ITEMS_STALLED, [(["CN-GD"], 3.0)])
        add(cat.COMPLAINTS_OPEN, [(["CN-GD"], 4.0)])
        add(cat.COMPLAINTS_OVERDUE, [(["CN-GD"], 0.0)])
        add(cat.EXPORTER_EVENTS_INGESTED, [([], n * 100)])
        add(cat.EXPORTER_EVENTS_REJECTED, [(["bad_timestamp"], n)])
        add(cat.EXPORTER_LATE_EVENTS, [([], 0.0)])
        add(cat.EXPORTER_LAST_EVENT_TIMESTAMP, [([], time.time())])
        add(cat.EXPORTER_BATCH_DURATION, [([], histogram(cat.EXPORTER_BATCH_DURATION, 1, 0.2))])
        add(cat.EXPORTER_ITEMS_TRACKED, [([], 1234.0)])
        add(cat.EXPORTER_AWAITING_ACCEPTANCE, [([], 3.0)])
        add(cat.EXPORTER_LAST_CHECKPOINT_TIMESTAMP, [([], time.time() - 30)])
        add(cat.EXPORTER_BUILD_INFO, [(["0.1.0"], 1.0)])
        add(cat.KAFKA_LAG, [(["postal.events", "0"], 10.0 * n)])
        add(cat.KAFKA_LAG_AGE, [(["postal.events", "0"], 30.0)])
        add(cat.KAFKA_PARTITIONS, [(["postal.events"], 8.0)])
        add(
            cat.EXPORTER_CONFIG_VALID,
            [(["facilities.csv"], 1.0), (["service-standards.yaml"], 1.0)],
        )
        return out


def _stage_rows(n: float, histogram: Any) -> list[tuple[cat.MetricSpec, list[Any]]]:
    """The stage histograms (a slow hub, one region pair), revisions, late scans, the targets."""
    hour = cat.HOUR
    return [
        (
            cat.STAGE_FIRST_MILE,
            [(["express", "CN-GD"], histogram(cat.STAGE_FIRST_MILE, 5, 4 * hour))],
        ),
        (
            cat.STAGE_DWELL,
            [([OVER, "processing", "CN-GD"], histogram(cat.STAGE_DWELL, 5, 8 * hour))],
        ),
        (cat.STAGE_LEG, [(["CN-GD", "CN-BJ"], histogram(cat.STAGE_LEG, 5, 20 * hour))]),
        (
            cat.STAGE_LAST_MILE,
            [([HEALTHY, "delivery", "CN-BJ"], histogram(cat.STAGE_LAST_MILE, 5, 6 * hour))],
        ),
        (cat.STAGE_REVISIONS, [(["dwell"], n)]),
        (cat.EXPORTER_STAGE_LATE_SCANS, [(["arrived"], n)]),
        (
            cat.STAGE_DWELL_TARGET,
            [(["processing"], 6 * hour), (["delivery"], 24 * hour), (["collection"], 12 * hour)],
        ),
        (cat.STAGE_LEG_TARGET, [([], 24 * hour)]),
    ]


def fast_rule_copy(src: Path, dst: Path, for_: str | None = None) -> Path:
    """A copy of a generated rule file with group intervals removed and optionally a short ``for``."""
    data = yaml.safe_load(src.read_text())
    for group in data["groups"]:
        group.pop("interval", None)  # a 5m group would not evaluate within the test
        for rule in group["rules"]:
            if for_ is not None and "alert" in rule:
                rule["for"] = for_
    dst.write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


@dataclass
class Live:
    """The running stack of the live tests."""

    prom: promkit.PrometheusServer
    exporter: SyntheticExporter
    config: MixinConfig
