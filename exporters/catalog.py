"""The single catalog of Prometheus metrics exposed by the postal exporter.

Every collector, recording rule, alert, dashboard query and doc takes metric names
from here, so they cannot drift apart.

Naming convention: ``MetricSpec.name`` is the *base* name handed to
prometheus_client. The names seen in Prometheus (``MetricSpec.series_names``) add
the suffixes the client appends:

- counter ``postal_items_accepted`` is exposed as ``postal_items_accepted_total``
  (``CounterMetricFamily`` appends ``_total``; use ``spec.series`` in PromQL);
- histogram ``postal_transit_time_seconds`` is exposed as ``..._bucket{le=...}``,
  ``..._sum`` and ``..._count`` (use ``spec.bucket``, ``spec.sum``, ``spec.count``);
- gauge names are exposed unchanged.

``unit`` is the OpenMetrics unit and, when set, is always the last name component
(prometheus_client would otherwise append it to the name).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from kpi.contract import FACILITY_TYPES
from kpi.duty import metrics as duty_metrics
from kpi.kpis.catalog import AGE_BAND_EDGES
from kpi.kpis.catalog import AGE_BANDS as KPI_AGE_BANDS
from kpi.standards import DEFAULT_STANDARDS

#: The Prometheus ``job`` label of the exporter in every config we ship.
EXPORTER_JOB: Final = "postal-exporter"
#: The analyst API's job label (it exposes its own process metrics only).
API_JOB: Final = "postal-api"
EXPORTER_PORT: Final = 9108
API_PORT: Final = 8000

PREFIX: Final = "postal_"

HOUR: Final = 3600.0
DAY: Final = 86400.0

# --- closed label vocabularies -----------------------------------------------

ON_TIME_VALUES: Final = ("true", "false", "unknown")
VALID_VALUES: Final = ("true", "false", "unknown")
OUTCOME_VALUES: Final = ("delivered", "failed")
ATTEMPT_VALUES: Final = ("first", "repeat")
#: Backlog age bands, youngest first, as the KPI engine defines them:
#: [0,6h), [6h,12h), [12h,24h), [24h,48h), [48h,inf).
AGE_BANDS: Final = KPI_AGE_BANDS
#: Lower edge of each age band in seconds, aligned with ``AGE_BANDS``.
AGE_BAND_LOWER_SECONDS: Final = (0.0, *(h * HOUR for h in AGE_BAND_EDGES))

#: Service-standard deadlines (days) that the transit histogram must resolve exactly: those
#: of the built-in standard (buckets must not vary between exporters, or sums break).
SERVICE_STANDARD_DAYS: Final = tuple(DEFAULT_STANDARDS.deadline_days())
#: China SPB "72-hour on-time rate" threshold.
SECONDS_72H: Final = 72 * HOUR
#: Operators must answer a complaint within 7 days.
COMPLAINT_REPLY_DEADLINE_SECONDS: Final = 7 * DAY

TRANSIT_BUCKETS: Final = (
    6 * HOUR,
    12 * HOUR,
    1 * DAY,
    36 * HOUR,
    2 * DAY,
    3 * DAY,  # == 72 h
    4 * DAY,
    5 * DAY,
    6 * DAY,
    7 * DAY,
    10 * DAY,
    14 * DAY,
)
RESOLUTION_BUCKETS: Final = (
    1 * HOUR,
    6 * HOUR,
    1 * DAY,
    2 * DAY,
    3 * DAY,
    5 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,  # the regulator's appeal deadline
)
#: Stage histograms (the four links): edges at the usual stage targets (6, 12, 24 h); legs
#: up to 8 days, so a route delayed for days stands apart from remote routes (4-5 days).
DWELL_BUCKETS: Final = tuple(h * HOUR for h in (1, 2, 4, 6, 8, 12, 18, 24, 36, 48, 72))
LEG_BUCKETS: Final = tuple(
    h * HOUR for h in (2, 4, 6, 8, 12, 18, 24, 36, 48, 72, 96, 120, 144, 192)
)
MILE_BUCKETS: Final = tuple(h * HOUR for h in (1, 2, 4, 8, 12, 24, 36, 48, 72))
BATCH_DURATION_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# prometheus_client's own formatter (untyped), so ``le`` values match its exposition byte
# for byte: Prometheus 2.x stores ``le`` verbatim, and "259200" != "259200.0".
_go_float: Final[Callable[[float], str]] = floatToGoString

_NAME_RE: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricType(StrEnum):
    """Prometheus metric types used by the catalog."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    INFO = "info"


def le_label(seconds: float) -> str:
    """The ``le`` label value prometheus_client writes for a bucket bound (e.g. ``259200.0``)."""
    return _go_float(seconds)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: base name, type, help, label names, unit, buckets, closed label values."""

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    buckets: tuple[float, ...] = ()
    #: Label names whose values form a closed set, with that set.
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        """Reject specs that Prometheus or prometheus_client would mangle."""
        if not _NAME_RE.match(self.name) or not self.name.startswith(PREFIX):
            raise ValueError(f"bad metric name {self.name!r}")
        if self.type is MetricType.COUNTER and self.name.endswith("_total"):
            raise ValueError(f"counter base name must not end in _total: {self.name}")
        if self.type is MetricType.INFO and self.name.endswith("_info"):
            raise ValueError(f"info base name must not end in _info: {self.name}")
        if self.unit and not self.name.endswith("_" + self.unit):
            raise ValueError(f"{self.name}: unit {self.unit!r} must be the last name component")
        for label in self.labels:
            if not _LABEL_RE.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"{self.name}: bad label name {label!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"{self.name}: duplicate label")
        if (self.type is MetricType.HISTOGRAM) != bool(self.buckets):
            raise ValueError(f"{self.name}: buckets go with histograms only")
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"{self.name}: buckets must be strictly increasing")
        if not set(self.values) <= set(self.labels):
            raise ValueError(f"{self.name}: closed values for unknown labels")
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    @property
    def series(self) -> str:
        """The PromQL name of a counter, gauge or info metric (histograms: bucket/sum/count)."""
        if self.type is MetricType.COUNTER:
            return self.name + "_total"
        if self.type is MetricType.INFO:
            return self.name + "_info"
        return self.name

    @property
    def bucket(self) -> str:
        """The ``_bucket`` series of a histogram."""
        self._need_histogram()
        return self.name + "_bucket"

    @property
    def sum(self) -> str:
        """The ``_sum`` series of a histogram."""
        self._need_histogram()
        return self.name + "_sum"

    @property
    def count(self) -> str:
        """The ``_count`` series of a histogram."""
        self._need_histogram()
        return self.name + "_count"

    @property
    def series_names(self) -> tuple[str, ...]:
        """Every sample name this metric puts into Prometheus (``_created`` excluded)."""
        if self.type is MetricType.HISTOGRAM:
            return (self.bucket, self.sum, self.count)
        return (self.series,)

    @property
    def le_values(self) -> tuple[str, ...]:
        """The ``le`` label values of a histogram as exposed, ``+Inf`` last."""
        self._need_histogram()
        return (*(le_label(b) for b in self.buckets), "+Inf")

    def le(self, seconds: float) -> str:
        """The exposed ``le`` value of one bucket bound; raises if it is not a bucket edge."""
        self._need_histogram()
        if seconds not in self.buckets:
            raise ValueError(f"{self.name} has no bucket at {seconds}")
        return le_label(seconds)

    def family(self, labels: Sequence[str] | None = None) -> Metric:
        """A fresh prometheus_client metric family for a custom collector's ``collect()``."""
        names = list(self.labels if labels is None else labels)
        if self.type is MetricType.COUNTER:
            return CounterMetricFamily(self.name, self.help, labels=names, unit=self.unit)
        if self.type is MetricType.GAUGE:
            return GaugeMetricFamily(self.name, self.help, labels=names, unit=self.unit)
        if self.type is MetricType.HISTOGRAM:
            return HistogramMetricFamily(self.name, self.help, labels=names, unit=self.unit)
        return InfoMetricFamily(self.name, self.help, labels=names)

    def _need_histogram(self) -> None:
        if self.type is not MetricType.HISTOGRAM:
            raise TypeError(f"{self.name} is a {self.type}, not a histogram")


C, G, H = MetricType.COUNTER, MetricType.GAUGE, MetricType.HISTOGRAM

# --- delivery flow ------------------------------------------------------------

ITEMS_ACCEPTED: Final = MetricSpec(
    "postal_items_accepted",
    C,
    "Items accepted (collected) into the network, by product and origin/destination region.",
    ("product", "origin", "destination"),
)
ITEMS_DELIVERED: Final = MetricSpec(
    "postal_items_delivered",
    C,
    "Items delivered; on_time compares delivery with the promised deadline "
    "(unknown when the item carries no promise).",
    ("product", "destination", "on_time"),
    values={"on_time": ON_TIME_VALUES},
)
ITEMS_RETURNED: Final = MetricSpec(
    "postal_items_returned",
    C,
    "Items returned to sender.",
    ("product", "destination"),
)
DELIVERY_ATTEMPTS: Final = MetricSpec(
    "postal_delivery_attempts",
    C,
    "Delivery attempts by outcome (delivered/failed) and whether it was the item's "
    "first attempt or a repeat.",
    ("product", "destination", "outcome", "attempt"),
    values={"outcome": OUTCOME_VALUES, "attempt": ATTEMPT_VALUES},
)
DELIVERY_FAILURES: Final = MetricSpec(
    "postal_delivery_failures",
    C,
    "Failed delivery attempts by non-delivery reason.",
    ("reason",),
)
TRANSIT_TIME: Final = MetricSpec(
    "postal_transit_time_seconds",
    H,
    "Time from acceptance to delivery of delivered items; bucket edges sit exactly at "
    "the service standards (1-10 days) and at 72 h.",
    ("product", "destination"),
    unit="seconds",
    buckets=TRANSIT_BUCKETS,
)

# --- stages (collection, processing, transport, delivery) ------------------------------

STAGE_DWELL: Final = MetricSpec(
    "postal_stage_dwell_seconds",
    H,
    "Processing time at a facility: a departure minus the item's latest arrival at the same "
    "facility at or before it (kpi dwell_hours), observed when both scans are known.",
    ("facility", "facility_type", "region"),
    unit="seconds",
    buckets=DWELL_BUCKETS,
)
STAGE_LEG: Final = MetricSpec(
    "postal_stage_leg_seconds",
    H,
    "Transport time: an arrival minus the item's latest earlier departure at another "
    "facility (kpi leg_hours), by the departure's and the arrival's region.",
    ("from_region", "to_region"),
    unit="seconds",
    buckets=LEG_BUCKETS,
)
STAGE_FIRST_MILE: Final = MetricSpec(
    "postal_stage_first_mile_seconds",
    H,
    "Collection time: the item's first departure after its acceptance minus the acceptance "
    "(kpi first_mile_hours).",
    ("product", "origin"),
    unit="seconds",
    buckets=MILE_BUCKETS,
)
STAGE_LAST_MILE: Final = MetricSpec(
    "postal_stage_last_mile_seconds",
    H,
    "Delivery time: the delivery minus the item's latest arrival at or before it, by the "
    "facility of that arrival (kpi last_mile_hours).",
    ("facility", "facility_type", "region"),
    unit="seconds",
    buckets=MILE_BUCKETS,
)
STAGE_REVISIONS: Final = MetricSpec(
    "postal_stage_revisions",
    C,
    "Stage intervals already observed that a scan read later changed (histograms cannot "
    "take them back: the stage histograms differ from the report by this many).",
    ("stage",),
    values={"stage": ("dwell", "leg", "first_mile", "last_mile")},
)
EXPORTER_STAGE_LATE_SCANS: Final = MetricSpec(
    "postal_exporter_stage_late_scans",
    C,
    "Stage scans read older than the stage horizon (the late grace before the newest "
    "event time): counted in the lifecycle, left out of the stage histograms (their "
    "intervals are not computed), by event.",
    ("event",),
    values={"event": ("accepted", "arrived", "departed", "delivered")},
)
STAGE_DWELL_TARGET: Final = MetricSpec(
    "postal_stage_dwell_target_seconds",
    G,
    "Dwell target of a facility type: the stages.dwell_hours of the service standard the "
    "exporter loaded (its own, else default; no series when unset), the one the report's "
    "dwell_within_target_ratio uses; the dwell alert compares with it.",
    ("facility_type",),
    unit="seconds",
    values={"facility_type": FACILITY_TYPES},
)
STAGE_LEG_TARGET: Final = MetricSpec(
    "postal_stage_leg_target_seconds",
    G,
    "Leg target: the stages.leg_hours default of the service standard the exporter loaded "
    "(no series when unset), the one the report's leg_within_target_ratio uses; the leg "
    "alert compares with it.",
    unit="seconds",
)
#: The stage targets, from the loaded service standard (reloaded with it).
STAGE_TARGETS: Final = (STAGE_DWELL_TARGET, STAGE_LEG_TARGET)
#: The stage histograms, in the order of the four links.
STAGE_HISTOGRAMS: Final = (STAGE_FIRST_MILE, STAGE_DWELL, STAGE_LEG, STAGE_LAST_MILE)

# --- complaints -----------------------------------------------------------------

COMPLAINTS: Final = MetricSpec(
    "postal_complaints",
    C,
    "Complaints opened, by region (the item's destination), category and validity "
    "(valid = operator responsibility established; unknown while undecided).",
    ("region", "category", "valid"),
    values={"valid": VALID_VALUES},
)
COMPLAINT_RESOLUTION: Final = MetricSpec(
    "postal_complaint_resolution_seconds",
    H,
    "Time from opening to resolution of resolved complaints; a bucket edge sits exactly "
    "at the 7-day reply deadline.",
    ("region", "category"),
    unit="seconds",
    buckets=RESOLUTION_BUCKETS,
)

# --- state gauges ---------------------------------------------------------------

BACKLOG_ITEMS: Final = MetricSpec(
    "postal_backlog_items",
    G,
    "Items waiting at a facility (last event there, not yet departed or delivered), "
    "by how long they have waited.",
    ("facility", "facility_type", "region", "age_band"),
    unit="items",
    values={"age_band": AGE_BANDS},
)
BACKLOG_OLDEST_AGE: Final = MetricSpec(
    "postal_backlog_oldest_age_seconds",
    G,
    "Age of the oldest item waiting at a facility (0 when none waits).",
    ("facility", "facility_type", "region"),
    unit="seconds",
)
BACKLOG_THRESHOLD: Final = MetricSpec(
    "postal_backlog_threshold_items",
    G,
    "Configured backlog threshold of a facility (absent when the facility has none).",
    ("facility",),
    unit="items",
)
ITEMS_IN_NETWORK: Final = MetricSpec(
    "postal_items_in_network",
    G,
    "Items accepted and not yet delivered or returned.",
    ("product", "destination"),
)
ITEMS_OVERDUE: Final = MetricSpec(
    "postal_items_overdue",
    G,
    "Items in the network past their promised delivery deadline.",
    ("product", "destination"),
)
ITEMS_STALLED: Final = MetricSpec(
    "postal_items_stalled",
    G,
    "Items in the network with no tracking event for longer than the stall limit, "
    "by destination region.",
    ("region",),
)
COMPLAINTS_OPEN: Final = MetricSpec(
    "postal_complaints_open",
    G,
    "Complaints not yet resolved.",
    ("region",),
)
COMPLAINTS_OVERDUE: Final = MetricSpec(
    "postal_complaints_overdue",
    G,
    "Open complaints older than the 7-day reply deadline.",
    ("region",),
)

# --- exporter self-monitoring ------------------------------------------------------

EXPORTER_EVENTS_INGESTED: Final = MetricSpec(
    "postal_exporter_events_ingested",
    C,
    "Input rows (events and complaint records) accepted by the exporter.",
)
EXPORTER_EVENTS_REJECTED: Final = MetricSpec(
    "postal_exporter_events_rejected",
    C,
    "Input rows (or whole files) rejected by the exporter, by reason.",
    ("reason",),
)
EXPORTER_LATE_EVENTS: Final = MetricSpec(
    "postal_exporter_late_events",
    C,
    "Events that arrived after a later event of the same item had been processed.",
)
EXPORTER_LAST_EVENT_TIMESTAMP: Final = MetricSpec(
    "postal_exporter_last_event_timestamp_seconds",
    G,
    "Unix time of the newest event the exporter has processed.",
    unit="seconds",
)
EXPORTER_BATCH_DURATION: Final = MetricSpec(
    "postal_exporter_batch_duration_seconds",
    H,
    "Wall time to ingest one batch of input and recompute the KPIs.",
    unit="seconds",
    buckets=BATCH_DURATION_BUCKETS,
)
EXPORTER_ITEMS_TRACKED: Final = MetricSpec(
    "postal_exporter_items_tracked",
    G,
    "Items whose state the exporter holds in memory.",
)
EXPORTER_AWAITING_ACCEPTANCE: Final = MetricSpec(
    "postal_exporter_deliveries_awaiting_acceptance",
    G,
    "Delivered items not counted yet: their acceptance has not arrived and the late grace "
    "(event time) has not passed since their delivery.",
)
EXPORTER_LAST_CHECKPOINT_TIMESTAMP: Final = MetricSpec(
    "postal_exporter_last_checkpoint_timestamp_seconds",
    G,
    "Unix time of the exporter's last state checkpoint.",
    unit="seconds",
)
EXPORTER_CONFIG_VALID: Final = MetricSpec(
    "postal_exporter_config_valid",
    G,
    "1 when the current version of a reference file (facilities.csv, service-standards.yaml)"
    " is valid and in use, 0 when it was refused (the previous version stays in use).",
    ("file",),
)
# A constant-1 gauge rather than an Info metric: same series name on every client
# version and usable in group_left joins.
EXPORTER_BUILD_INFO: Final = MetricSpec(
    "postal_exporter_build_info",
    G,
    "Constant 1, labelled with the exporter's version.",
    ("version",),
)

# --- Kafka shards (kpi exporter --kafka) -----------------------------------------------

#: Labels a Kafka shard adds to every series of a partition's state, and that its
#: consumer-lag gauges carry: the series of a partition are the same whichever shard
#: holds it (Prometheus drops ``instance`` from them, see docs/scaling.md).
PARTITION_LABELS: Final = ("topic", "partition")

KAFKA_LAG: Final = MetricSpec(
    "postal_exporter_kafka_lag_messages",
    G,
    "Messages of a partition not yet consumed by the shard holding it "
    "(high watermark minus the shard's position).",
    PARTITION_LABELS,
    unit="messages",
)
KAFKA_LAG_AGE: Final = MetricSpec(
    "postal_exporter_kafka_lag_seconds",
    G,
    "How long the shard has been behind on a partition: seconds since its position last "
    "reached the high watermark (0 when caught up).",
    PARTITION_LABELS,
    unit="seconds",
)
KAFKA_PARTITIONS: Final = MetricSpec(
    "postal_exporter_kafka_partitions_assigned",
    G,
    "Partitions of a topic the shard holds (its share of the consumer group).",
    ("topic",),
)

METRICS: Final[tuple[MetricSpec, ...]] = (
    ITEMS_ACCEPTED,
    ITEMS_DELIVERED,
    ITEMS_RETURNED,
    DELIVERY_ATTEMPTS,
    DELIVERY_FAILURES,
    TRANSIT_TIME,
    *STAGE_HISTOGRAMS,
    STAGE_REVISIONS,
    EXPORTER_STAGE_LATE_SCANS,
    *STAGE_TARGETS,
    COMPLAINTS,
    COMPLAINT_RESOLUTION,
    BACKLOG_ITEMS,
    BACKLOG_OLDEST_AGE,
    BACKLOG_THRESHOLD,
    ITEMS_IN_NETWORK,
    ITEMS_OVERDUE,
    ITEMS_STALLED,
    COMPLAINTS_OPEN,
    COMPLAINTS_OVERDUE,
    EXPORTER_EVENTS_INGESTED,
    EXPORTER_EVENTS_REJECTED,
    EXPORTER_LATE_EVENTS,
    EXPORTER_LAST_EVENT_TIMESTAMP,
    EXPORTER_BATCH_DURATION,
    EXPORTER_ITEMS_TRACKED,
    EXPORTER_AWAITING_ACCEPTANCE,
    EXPORTER_LAST_CHECKPOINT_TIMESTAMP,
    EXPORTER_CONFIG_VALID,
    EXPORTER_BUILD_INFO,
    KAFKA_LAG,
    KAFKA_LAG_AGE,
    KAFKA_PARTITIONS,
)

# The analyst API's duty-desk metrics (its /metrics, job ``postal-api``): here so the
# dashboards and alerts take their names from the one catalog; not in METRICS, which is
# what the exporter exposes.
INCIDENTS_OPEN: Final = MetricSpec(
    duty_metrics.INCIDENTS_OPEN,
    G,
    duty_metrics.INCIDENTS_OPEN_HELP,
    ("severity",),
)
INCIDENTS_OPENED: Final = MetricSpec(
    duty_metrics.INCIDENTS_OPENED,
    MetricType.COUNTER,
    duty_metrics.INCIDENTS_OPENED_HELP,
    ("severity",),
)
API_METRICS: Final[tuple[MetricSpec, ...]] = (INCIDENTS_OPEN, INCIDENTS_OPENED)

#: Metric specs by base name.
BY_NAME: Final[Mapping[str, MetricSpec]] = MappingProxyType({m.name: m for m in METRICS})
#: Metric specs by every exposed sample name (``_total``, ``_bucket``, ``_sum``, ``_count``).
BY_SERIES: Final[Mapping[str, MetricSpec]] = MappingProxyType(
    {s: m for m in METRICS for s in m.series_names}
)


def get(name: str) -> MetricSpec:
    """The spec for a base name or an exposed sample name; raises ``KeyError`` if unknown."""
    spec = BY_NAME.get(name) or BY_SERIES.get(name)
    if spec is None:
        raise KeyError(f"metric {name!r} is not in the catalog")
    return spec


def series_names() -> frozenset[str]:
    """Every sample name the exporter may expose."""
    return frozenset(BY_SERIES)
