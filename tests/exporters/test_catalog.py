"""The metric catalog: exactly the metrics of the exporter issue, exposable and lint-clean."""

from __future__ import annotations

import dataclasses
import math
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporters import catalog as cat
from exporters.mixin import docs
from exporters.mixin.config import MixinConfig
from tests import promkit

DAY = 86400
HOUR = 3600

#: The exporter issue's list, written out by hand: exposed name -> (type, labels).
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "postal_items_accepted_total": ("counter", ("product", "origin", "destination")),
    "postal_items_delivered_total": ("counter", ("product", "destination", "on_time")),
    "postal_items_returned_total": ("counter", ("product", "destination")),
    "postal_delivery_attempts_total": (
        "counter",
        ("product", "destination", "outcome", "attempt"),
    ),
    "postal_delivery_failures_total": ("counter", ("reason",)),
    "postal_transit_time_seconds": ("histogram", ("product", "destination")),
    # Issue 19: the four links, live.
    "postal_stage_first_mile_seconds": ("histogram", ("product", "origin")),
    "postal_stage_dwell_seconds": ("histogram", ("facility", "facility_type", "region")),
    "postal_stage_leg_seconds": ("histogram", ("from_region", "to_region")),
    "postal_stage_last_mile_seconds": ("histogram", ("facility", "facility_type", "region")),
    "postal_stage_revisions_total": ("counter", ("stage",)),
    # Issue 19: the stage targets of the loaded service standard (one place for them).
    "postal_stage_dwell_target_seconds": ("gauge", ("facility_type",)),
    "postal_stage_leg_target_seconds": ("gauge", ()),
    "postal_complaints_total": ("counter", ("region", "category", "valid")),
    "postal_complaint_resolution_seconds": ("histogram", ("region", "category")),
    "postal_backlog_items": ("gauge", ("facility", "facility_type", "region", "age_band")),
    "postal_backlog_oldest_age_seconds": ("gauge", ("facility", "facility_type", "region")),
    "postal_backlog_threshold_items": ("gauge", ("facility",)),
    "postal_items_in_network": ("gauge", ("product", "destination")),
    "postal_items_overdue": ("gauge", ("product", "destination")),
    "postal_items_stalled": ("gauge", ("region",)),
    "postal_complaints_open": ("gauge", ("region",)),
    "postal_complaints_overdue": ("gauge", ("region",)),
    "postal_exporter_events_ingested_total": ("counter", ()),
    "postal_exporter_events_rejected_total": ("counter", ("reason",)),
    "postal_exporter_late_events_total": ("counter", ()),
    "postal_exporter_stage_late_scans_total": ("counter", ("event",)),
    "postal_exporter_last_event_timestamp_seconds": ("gauge", ()),
    "postal_exporter_batch_duration_seconds": ("histogram", ()),
    "postal_exporter_items_tracked": ("gauge", ()),
    "postal_exporter_deliveries_awaiting_acceptance": ("gauge", ()),
    "postal_exporter_last_checkpoint_timestamp_seconds": ("gauge", ()),
    "postal_exporter_config_valid": ("gauge", ("file",)),
    "postal_exporter_build_info": ("gauge", ("version",)),
    "postal_exporter_kafka_lag_messages": ("gauge", ("topic", "partition")),
    "postal_exporter_kafka_lag_seconds": ("gauge", ("topic", "partition")),
    "postal_exporter_kafka_partitions_assigned": ("gauge", ("topic",)),
}


def _exposed(spec: cat.MetricSpec) -> str:
    return spec.name if spec.type is cat.MetricType.HISTOGRAM else spec.series


def test_catalog_is_exactly_the_issue_list() -> None:
    got = {_exposed(m): (str(m.type), m.labels) for m in cat.METRICS}
    assert got == EXPECTED


def test_names_are_unique_and_lookups_agree() -> None:
    assert len({m.name for m in cat.METRICS}) == len(cat.METRICS)
    assert cat.get("postal_items_accepted") is cat.ITEMS_ACCEPTED
    assert cat.get("postal_items_accepted_total") is cat.ITEMS_ACCEPTED
    assert cat.get("postal_transit_time_seconds_bucket") is cat.TRANSIT_TIME
    assert cat.get("postal_transit_time_seconds_count") is cat.TRANSIT_TIME
    with pytest.raises(KeyError):
        cat.get("postal_items_accepted_total_total")
    assert "postal_backlog_items" in cat.series_names()
    assert "postal_items_accepted" not in cat.series_names()  # base name is never exposed


def test_transit_buckets_sit_on_every_service_standard_and_72h() -> None:
    edges = set(cat.TRANSIT_TIME.buckets)
    for days in (1, 2, 3, 4, 6, 7, 10):
        assert days * DAY in edges
    assert 72 * HOUR in edges
    assert {6 * HOUR, 12 * HOUR, 36 * HOUR, 14 * DAY} <= edges
    assert cat.TRANSIT_TIME.le(72 * HOUR) == "259200.0"


def test_resolution_bucket_at_seven_days_and_closed_vocabularies() -> None:
    assert 7 * DAY in cat.COMPLAINT_RESOLUTION.buckets
    assert cat.COMPLAINT_RESOLUTION.le(7 * DAY) == "604800.0"
    assert cat.BACKLOG_ITEMS.values["age_band"] == (
        "lt_6h",
        "6h_12h",
        "12h_24h",
        "24h_48h",
        "ge_48h",
    )
    assert cat.ITEMS_DELIVERED.values["on_time"] == ("true", "false", "unknown")
    assert cat.COMPLAINTS.values["valid"] == ("true", "false", "unknown")
    assert cat.DELIVERY_ATTEMPTS.values == {
        "outcome": ("delivered", "failed"),
        "attempt": ("first", "repeat"),
    }
    with pytest.raises(ValueError, match="no bucket"):
        cat.TRANSIT_TIME.le(5 * HOUR)
    with pytest.raises(TypeError):
        _ = cat.BACKLOG_ITEMS.bucket


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "postal_x_total"}, "must not end in _total"),
        ({"name": "other_x"}, "bad metric name"),
        ({"unit": "bytes"}, "unit"),
        ({"labels": ("le",)}, "bad label"),
        ({"labels": ("a", "a")}, "duplicate"),
        ({"buckets": (1.0,)}, "histograms only"),
        ({"values": {"nope": ("x",)}}, "unknown labels"),
    ],
)
def test_spec_rejects_what_prometheus_would_mangle(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(cat.ITEMS_RETURNED, **changes)  # type: ignore[arg-type]


def _sample_family(spec: cat.MetricSpec) -> Metric:
    family = spec.family()
    labels = [spec.values.get(label, ("x",))[0] for label in spec.labels]
    if spec.type is cat.MetricType.HISTOGRAM:
        buckets = [(le, float(i)) for i, le in enumerate(spec.le_values)]
        family.add_metric(labels, buckets, 12.5)  # type: ignore[attr-defined]
    else:
        family.add_metric(labels, 1.0)  # type: ignore[attr-defined]
    return family


class _CatalogCollector:
    def collect(self) -> list[Metric]:
        return [_sample_family(m) for m in cat.METRICS]


def _exposition() -> str:
    registry = CollectorRegistry()
    registry.register(_CatalogCollector())
    return generate_latest(registry).decode()


def test_families_expose_exactly_the_catalog_sample_names() -> None:
    text = _exposition()
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        seen.setdefault(family.name, set()).update(s.name for s in family.samples)
    by_exposed = {_exposed(m): m for m in cat.METRICS}
    for name, spec in by_exposed.items():
        family_name = name.removesuffix("_total")
        assert seen[family_name] == set(spec.series_names), name
    assert f'le="{cat.TRANSIT_TIME.le(72 * HOUR)}"' in text
    assert all(f'le="{le}"' in text for le in cat.COMPLAINT_RESOLUTION.le_values)


def test_promtool_check_metrics_is_clean() -> None:
    # promtool's linter flags counters without _total, non-base units, missing help, etc.
    binary = promkit.require_binary("promtool")
    result = subprocess.run(
        [binary, "check", "metrics"],
        input=_exposition(),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_series_estimate_below_budget_with_hand_arithmetic() -> None:
    # By hand: accepted = 3 products x 31 x 31 regions; transit = 3 x 31 x (12 edges + Inf
    # + sum + count); backlog = 380 facilities x 5 age bands; dwell = 380 facilities x
    # (11 edges + Inf + sum + count); legs = 31 x 31 region pairs x (14 + 3).
    assert docs.estimate(cat.ITEMS_ACCEPTED).series == 3 * 31 * 31
    assert docs.estimate(cat.TRANSIT_TIME).series == 3 * 31 * 15
    assert docs.estimate(cat.BACKLOG_ITEMS).series == 380 * 5
    assert docs.estimate(cat.STAGE_DWELL).series == 380 * 14
    assert docs.estimate(cat.STAGE_LEG).series == 31 * 31 * 17
    assert docs.estimate(cat.EXPORTER_LAST_EVENT_TIMESTAMP).series == 1
    total = docs.total_series(MixinConfig())
    assert total == sum(docs.estimate(m).series for m in cat.METRICS) + sum(
        n for _, n, _ in docs.recording_estimate(MixinConfig())
    )
    assert 10_000 < total < 50_000
    assert f"**{total:,}**" in docs.metrics_markdown(MixinConfig())


def test_metrics_doc_lists_every_metric() -> None:
    text = docs.metrics_markdown(MixinConfig())
    for m in cat.METRICS:
        assert f"`{m.name}`" in text
    assert math.isclose(cat.SECONDS_72H, 259200)
