"""Golden expositions: each collector alone in a fresh registry, hand-built input, hand-written text.

HELP lines are dropped before comparing (they are the catalog's prose); TYPE lines,
sample names, label sets, ordering and values are all written out by hand.
"""

from __future__ import annotations

import textwrap

import polars as pl
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.collectors.backlog import BacklogCollector
from exporters.collectors.complaints import ComplaintsCollector
from exporters.collectors.counters import FlowCountersCollector
from exporters.collectors.network import NetworkCollector
from exporters.collectors.self_monitoring import SelfMonitoringCollector
from exporters.store import CounterStore
from exporters.view import MetricsView, SelfStats


def exposition(collector: Collector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("# HELP"))


def expected(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def observations(*rows: tuple[str, str, float]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["a", "b", "seconds"], orient="row")


def test_flow_counters_and_transit_histogram() -> None:
    store = CounterStore()
    store.add(cat.ITEMS_ACCEPTED, ("express", "CN-BJ", "CN-SH"), 2)
    store.add(cat.ITEMS_ACCEPTED, ("economy", "CN-BJ", "CN-BJ"), 1)
    store.add(cat.ITEMS_ACCEPTED, ("express", "CN-BJ", "CN-SH"), 1)
    store.add(cat.ITEMS_DELIVERED, ("express", "CN-SH", "unknown"), 3)
    store.add(cat.ITEMS_DELIVERED, ("express", "CN-SH", "true"), 1)
    store.add(cat.DELIVERY_ATTEMPTS, ("express", "CN-SH", "failed", "first"), 1)
    store.add(cat.DELIVERY_FAILURES, ("refused",), 4)
    # exactly 1 day, exactly 72 h, and half a second over 72 h
    obs = observations(
        ("express", "CN-SH", 86400.0),
        ("express", "CN-SH", 259200.0),
        ("express", "CN-SH", 259200.5),
    ).rename({"a": "product", "b": "destination"})
    store.observe(cat.TRANSIT_TIME, obs)
    text = exposition(FlowCountersCollector(lambda: MetricsView(counters=store)))
    assert text == expected(
        """
        # TYPE postal_items_accepted_total counter
        postal_items_accepted_total{destination="CN-BJ",origin="CN-BJ",product="economy"} 1.0
        postal_items_accepted_total{destination="CN-SH",origin="CN-BJ",product="express"} 3.0
        # TYPE postal_items_delivered_total counter
        postal_items_delivered_total{destination="CN-SH",on_time="true",product="express"} 1.0
        postal_items_delivered_total{destination="CN-SH",on_time="unknown",product="express"} 3.0
        # TYPE postal_items_returned_total counter
        # TYPE postal_delivery_attempts_total counter
        postal_delivery_attempts_total{attempt="first",destination="CN-SH",outcome="failed",product="express"} 1.0
        # TYPE postal_delivery_failures_total counter
        postal_delivery_failures_total{reason="refused"} 4.0
        # TYPE postal_transit_time_seconds histogram
        postal_transit_time_seconds_bucket{destination="CN-SH",le="21600.0",product="express"} 0.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="43200.0",product="express"} 0.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="86400.0",product="express"} 1.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="129600.0",product="express"} 1.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="172800.0",product="express"} 1.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="259200.0",product="express"} 2.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="345600.0",product="express"} 3.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="432000.0",product="express"} 3.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="518400.0",product="express"} 3.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="604800.0",product="express"} 3.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="864000.0",product="express"} 3.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="1.2096e+06",product="express"} 3.0
        postal_transit_time_seconds_bucket{destination="CN-SH",le="+Inf",product="express"} 3.0
        postal_transit_time_seconds_count{destination="CN-SH",product="express"} 3.0
        postal_transit_time_seconds_sum{destination="CN-SH",product="express"} 604800.5
        """
    )


def test_backlog_gauges_from_the_engine_frame() -> None:
    frame = pl.DataFrame(
        {
            "facility": ["PC-SH-01", "DO-X", "CO-BJ-001"],
            "facility_type": ["processing", None, "collection"],
            "region": ["CN-SH", None, "CN-BJ"],
            "backlog_items_lt_6h": [2, 1, 0],
            "backlog_items_6h_12h": [0, 0, 0],
            "backlog_items_12h_24h": [1, 0, 0],
            "backlog_items_24h_48h": [0, 0, 0],
            "backlog_items_ge_48h": [0, 0, 0],
            "backlog_oldest_hours": [12.5, 0.25, None],
            "backlog_threshold_items": [50, None, 10],
        }
    )
    text = exposition(BacklogCollector(lambda: MetricsView(backlog=frame)))
    # DO-X is not in facilities.csv: type and region unknown; CO-BJ-001 idle: zeros, age 0.
    assert text == expected(
        """
        # TYPE postal_backlog_items gauge
        postal_backlog_items{age_band="lt_6h",facility="CO-BJ-001",facility_type="collection",region="CN-BJ"} 0.0
        postal_backlog_items{age_band="6h_12h",facility="CO-BJ-001",facility_type="collection",region="CN-BJ"} 0.0
        postal_backlog_items{age_band="12h_24h",facility="CO-BJ-001",facility_type="collection",region="CN-BJ"} 0.0
        postal_backlog_items{age_band="24h_48h",facility="CO-BJ-001",facility_type="collection",region="CN-BJ"} 0.0
        postal_backlog_items{age_band="ge_48h",facility="CO-BJ-001",facility_type="collection",region="CN-BJ"} 0.0
        postal_backlog_items{age_band="lt_6h",facility="DO-X",facility_type="unknown",region="unknown"} 1.0
        postal_backlog_items{age_band="6h_12h",facility="DO-X",facility_type="unknown",region="unknown"} 0.0
        postal_backlog_items{age_band="12h_24h",facility="DO-X",facility_type="unknown",region="unknown"} 0.0
        postal_backlog_items{age_band="24h_48h",facility="DO-X",facility_type="unknown",region="unknown"} 0.0
        postal_backlog_items{age_band="ge_48h",facility="DO-X",facility_type="unknown",region="unknown"} 0.0
        postal_backlog_items{age_band="lt_6h",facility="PC-SH-01",facility_type="processing",region="CN-SH"} 2.0
        postal_backlog_items{age_band="6h_12h",facility="PC-SH-01",facility_type="processing",region="CN-SH"} 0.0
        postal_backlog_items{age_band="12h_24h",facility="PC-SH-01",facility_type="processing",region="CN-SH"} 1.0
        postal_backlog_items{age_band="24h_48h",facility="PC-SH-01",facility_type="processing",region="CN-SH"} 0.0
        postal_backlog_items{age_band="ge_48h",facility="PC-SH-01",facility_type="processing",region="CN-SH"} 0.0
        # TYPE postal_backlog_oldest_age_seconds gauge
        postal_backlog_oldest_age_seconds{facility="CO-BJ-001",facility_type="collection",region="CN-BJ"} 0.0
        postal_backlog_oldest_age_seconds{facility="DO-X",facility_type="unknown",region="unknown"} 900.0
        postal_backlog_oldest_age_seconds{facility="PC-SH-01",facility_type="processing",region="CN-SH"} 45000.0
        # TYPE postal_backlog_threshold_items gauge
        postal_backlog_threshold_items{facility="CO-BJ-001"} 10.0
        postal_backlog_threshold_items{facility="PC-SH-01"} 50.0
        """
    )


def test_network_gauges() -> None:
    network = pl.DataFrame(
        {
            "product": ["standard", "express", None],
            "destination": ["CN-GD", "CN-SH", "CN-SH"],
            "in_network_items": [4, 7, 1],
            "overdue_items": [0, 2, 0],
        }
    )
    stalled = pl.DataFrame({"region": ["CN-SH", "CN-GD"], "stalled_items": [3, 0]})
    text = exposition(NetworkCollector(lambda: MetricsView(network=network, stalled=stalled)))
    assert text == expected(
        """
        # TYPE postal_items_in_network gauge
        postal_items_in_network{destination="CN-SH",product="express"} 7.0
        postal_items_in_network{destination="CN-GD",product="standard"} 4.0
        postal_items_in_network{destination="CN-SH",product="unknown"} 1.0
        # TYPE postal_items_overdue gauge
        postal_items_overdue{destination="CN-SH",product="express"} 2.0
        postal_items_overdue{destination="CN-GD",product="standard"} 0.0
        postal_items_overdue{destination="CN-SH",product="unknown"} 0.0
        # TYPE postal_items_stalled gauge
        postal_items_stalled{region="CN-GD"} 0.0
        postal_items_stalled{region="CN-SH"} 3.0
        """
    )


def test_complaint_counters_histogram_and_gauges() -> None:
    store = CounterStore()
    store.add(cat.COMPLAINTS, ("CN-SH", "delay", "unknown"), 2)
    store.add(cat.COMPLAINTS, ("CN-BJ", "loss", "true"), 1)
    # 7 days exactly is inside the 7-day bucket; 30 days + 1 s is past the last edge
    obs = observations(("CN-SH", "delay", 604800.0), ("CN-SH", "delay", 2592001.0)).rename(
        {"a": "region", "b": "category"}
    )
    store.observe(cat.COMPLAINT_RESOLUTION, obs)
    gauges = pl.DataFrame({"region": ["CN-SH"], "open_complaints": [5], "overdue_complaints": [1]})
    text = exposition(ComplaintsCollector(lambda: MetricsView(counters=store, complaints=gauges)))
    assert text == expected(
        """
        # TYPE postal_complaints_total counter
        postal_complaints_total{category="loss",region="CN-BJ",valid="true"} 1.0
        postal_complaints_total{category="delay",region="CN-SH",valid="unknown"} 2.0
        # TYPE postal_complaint_resolution_seconds histogram
        postal_complaint_resolution_seconds_bucket{category="delay",le="3600.0",region="CN-SH"} 0.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="21600.0",region="CN-SH"} 0.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="86400.0",region="CN-SH"} 0.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="172800.0",region="CN-SH"} 0.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="259200.0",region="CN-SH"} 0.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="432000.0",region="CN-SH"} 0.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="604800.0",region="CN-SH"} 1.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="1.2096e+06",region="CN-SH"} 1.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="2.592e+06",region="CN-SH"} 1.0
        postal_complaint_resolution_seconds_bucket{category="delay",le="+Inf",region="CN-SH"} 2.0
        postal_complaint_resolution_seconds_count{category="delay",region="CN-SH"} 2.0
        postal_complaint_resolution_seconds_sum{category="delay",region="CN-SH"} 3.196801e+06
        # TYPE postal_complaints_open gauge
        postal_complaints_open{region="CN-SH"} 5.0
        # TYPE postal_complaints_overdue gauge
        postal_complaints_overdue{region="CN-SH"} 1.0
        """
    )


def test_self_monitoring() -> None:
    store = CounterStore()
    store.add(cat.EXPORTER_EVENTS_INGESTED, (), 120)
    store.add(cat.EXPORTER_EVENTS_REJECTED, ("malformed_row",), 2)
    store.add(cat.EXPORTER_EVENTS_REJECTED, ("duplicate",), 1)
    local = CounterStore()
    local.add(cat.EXPORTER_LATE_EVENTS, (), 5)
    local.observe(cat.EXPORTER_BATCH_DURATION, pl.DataFrame({"seconds": [0.05, 0.3]}))
    stats = SelfStats(
        items_tracked=40,
        last_event_timestamp=1800000000.5,
        last_checkpoint_timestamp=0.0,
        version="9.9.9",
        config_valid=(("facilities.csv", False), ("service-standards.yaml", True)),
    )
    view = MetricsView(counters=store, local=local, stats=stats)
    text = exposition(SelfMonitoringCollector(lambda: view))
    assert text == expected(
        """
        # TYPE postal_exporter_events_ingested_total counter
        postal_exporter_events_ingested_total 120.0
        # TYPE postal_exporter_events_rejected_total counter
        postal_exporter_events_rejected_total{reason="bad_timestamp"} 0.0
        postal_exporter_events_rejected_total{reason="bad_type"} 0.0
        postal_exporter_events_rejected_total{reason="duplicate"} 1.0
        postal_exporter_events_rejected_total{reason="future_ts"} 0.0
        postal_exporter_events_rejected_total{reason="line_too_long"} 0.0
        postal_exporter_events_rejected_total{reason="malformed_row"} 2.0
        postal_exporter_events_rejected_total{reason="missing_field"} 0.0
        postal_exporter_events_rejected_total{reason="retired_item"} 0.0
        postal_exporter_events_rejected_total{reason="timestamp_without_offset"} 0.0
        postal_exporter_events_rejected_total{reason="too_old"} 0.0
        postal_exporter_events_rejected_total{reason="unknown_category"} 0.0
        postal_exporter_events_rejected_total{reason="unknown_event"} 0.0
        postal_exporter_events_rejected_total{reason="unreadable_file"} 0.0
        # TYPE postal_exporter_late_events_total counter
        postal_exporter_late_events_total 5.0
        # TYPE postal_exporter_batch_duration_seconds histogram
        postal_exporter_batch_duration_seconds_bucket{le="0.01"} 0.0
        postal_exporter_batch_duration_seconds_bucket{le="0.05"} 1.0
        postal_exporter_batch_duration_seconds_bucket{le="0.1"} 1.0
        postal_exporter_batch_duration_seconds_bucket{le="0.25"} 1.0
        postal_exporter_batch_duration_seconds_bucket{le="0.5"} 2.0
        postal_exporter_batch_duration_seconds_bucket{le="1.0"} 2.0
        postal_exporter_batch_duration_seconds_bucket{le="2.5"} 2.0
        postal_exporter_batch_duration_seconds_bucket{le="5.0"} 2.0
        postal_exporter_batch_duration_seconds_bucket{le="10.0"} 2.0
        postal_exporter_batch_duration_seconds_bucket{le="30.0"} 2.0
        postal_exporter_batch_duration_seconds_bucket{le="60.0"} 2.0
        postal_exporter_batch_duration_seconds_bucket{le="+Inf"} 2.0
        postal_exporter_batch_duration_seconds_count 2.0
        postal_exporter_batch_duration_seconds_sum 0.35
        # TYPE postal_exporter_last_event_timestamp_seconds gauge
        postal_exporter_last_event_timestamp_seconds 1.8000000005e+09
        # TYPE postal_exporter_items_tracked gauge
        postal_exporter_items_tracked 40.0
        # TYPE postal_exporter_deliveries_awaiting_acceptance gauge
        postal_exporter_deliveries_awaiting_acceptance 0.0
        # TYPE postal_exporter_last_checkpoint_timestamp_seconds gauge
        postal_exporter_last_checkpoint_timestamp_seconds 0.0
        # TYPE postal_exporter_config_valid gauge
        postal_exporter_config_valid{file="facilities.csv"} 0.0
        postal_exporter_config_valid{file="service-standards.yaml"} 1.0
        # TYPE postal_exporter_build_info gauge
        postal_exporter_build_info{version="9.9.9"} 1.0
        """
    )


def test_counter_store_survives_a_json_round_trip_exactly() -> None:
    store = CounterStore()
    store.add(cat.ITEMS_RETURNED, ("express", "CN-SH"), 7)
    obs = observations(("express", "CN-SH", 0.1), ("express", "CN-SH", 0.2)).rename(
        {"a": "product", "b": "destination"}
    )
    for _ in range(10):
        store.observe(cat.TRANSIT_TIME, obs)
    specs = dict(cat.BY_NAME)
    again = CounterStore.from_json(store.to_json(specs), specs)
    assert again == store
    (hist,) = again.histograms[cat.TRANSIT_TIME.name].values()
    assert hist.sum_us == 3_000_000  # exact, where 20 float additions of 0.1/0.2 are not
    assert hist.buckets[0] == 20
