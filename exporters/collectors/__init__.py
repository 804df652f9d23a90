"""Custom prometheus_client collectors, one per metric group, all reading a ``MetricsView``.

Collectors never compute anything: they turn the view's counter values and gauge
frames into metric families, with names, help, labels and buckets from
``exporters.catalog``. Series are emitted sorted by label values, so an exposition
is a pure function of the view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, cast

import polars as pl
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from exporters.catalog import MetricSpec
from exporters.store import CounterStore
from exporters.view import MetricsView

ViewSource = Callable[[], MetricsView]
#: Label value for a missing dimension (unknown product, facility not in facilities.csv).
UNKNOWN: Final = "unknown"


def label_value(value: object) -> str:
    """A label value: the text of ``value``, ``unknown`` when missing or empty."""
    if value is None:
        return UNKNOWN
    text = str(value)
    return text if text else UNKNOWN


def labels_for(spec: MetricSpec, values: Mapping[str, object]) -> list[str]:
    """Label values in the spec's label order."""
    return [label_value(values[name]) for name in spec.labels]


def number(value: object) -> float:
    """A sample value from a frame cell (missing -> 0)."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


def gauge(spec: MetricSpec) -> GaugeMetricFamily:
    """An empty gauge family for ``spec``."""
    return cast(GaugeMetricFamily, spec.family())


def counter_family(spec: MetricSpec, store: CounterStore) -> CounterMetricFamily:
    """A counter family with every stored series (sorted)."""
    family = cast(CounterMetricFamily, spec.family())
    for labels, value in store.series(spec):
        family.add_metric(list(labels), float(value))
    return family


def histogram_family(spec: MetricSpec, store: CounterStore) -> HistogramMetricFamily:
    """A histogram family with every stored series (sorted)."""
    family = cast(HistogramMetricFamily, spec.family())
    for labels, value in store.histogram_series(spec):
        family.add_metric(list(labels), value.cumulative(spec), value.sum_seconds)
    return family


def gauge_rows(frame: pl.DataFrame | None, keys: tuple[str, ...]) -> list[dict[str, object]]:
    """Rows of a gauge frame sorted by ``keys`` (nulls as ``unknown``); none for None."""
    if frame is None or frame.is_empty():
        return []
    labelled = frame.with_columns(
        pl.col(k).cast(pl.String).fill_null(UNKNOWN).replace("", UNKNOWN) for k in keys
    )
    return labelled.sort(keys).to_dicts()
