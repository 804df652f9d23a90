"""The exporter's counter values: plain integers keyed by metric and label values.

Counts are Python ints and histogram sums are integer microseconds, so totals are
exact whatever the batching (float sums would depend on the order of additions)
and survive a JSON round trip in the checkpoint bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from exporters.catalog import MetricSpec, MetricType
from kpi.kpis.increments import COUNT, IN_MEMORY, SECONDS

LabelKey = tuple[str, ...]
_US: Final = 1_000_000


def bucket_edges_us(spec: MetricSpec) -> list[int]:
    """A histogram's bucket upper bounds in integer microseconds (exact comparisons)."""
    return [round(b * _US) for b in spec.buckets]


@dataclass
class HistogramValue:
    """One histogram series: per-bucket counts (not cumulative, ``+Inf`` last), sum, count."""

    buckets: list[int]
    sum_us: int = 0
    count: int = 0

    @classmethod
    def empty(cls, spec: MetricSpec) -> HistogramValue:
        """A series with no observations."""
        return cls([0] * (len(spec.buckets) + 1))

    def cumulative(self, spec: MetricSpec) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs as prometheus_client expects, ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        running = 0
        for le, n in zip(spec.le_values, self.buckets, strict=True):
            running += n
            out.append((le, float(running)))
        return out

    @property
    def sum_seconds(self) -> float:
        """Sum of observations in seconds."""
        return self.sum_us / _US


@dataclass
class CounterStore:
    """Counter and histogram values by metric base name, then by label values."""

    counters: dict[str, dict[LabelKey, int]] = field(default_factory=dict)
    histograms: dict[str, dict[LabelKey, HistogramValue]] = field(default_factory=dict)

    def add(self, spec: MetricSpec, labels: LabelKey, amount: int) -> None:
        """Add ``amount`` to one counter series."""
        if amount < 0:
            raise ValueError(f"{spec.name}: counters only go up")
        series = self.counters.setdefault(spec.name, {})
        series[labels] = series.get(labels, 0) + amount

    def add_counts(self, spec: MetricSpec, frame: pl.DataFrame) -> None:
        """Add a tidy frame of increments (the spec's label columns plus ``count``)."""
        if frame.is_empty():
            return
        # One query, then one Python step per label set (not per row of increments).
        summed = (
            frame.lazy()
            .select(*_text_labels(frame, spec.labels), pl.col(COUNT).cast(pl.Int64))
            .group_by(*spec.labels)
            .agg(pl.col(COUNT).sum(), pl.col(COUNT).min().alias("_min"))
            .collect(engine=IN_MEMORY)
        )
        if (summed.get_column("_min") < 0).any():
            raise ValueError(f"{spec.name}: counters only go up")
        series = self.counters.setdefault(spec.name, {})
        k = len(spec.labels)
        for row in summed.iter_rows():
            key = row[:k]
            series[key] = series.get(key, 0) + row[k]

    def observe(self, spec: MetricSpec, frame: pl.DataFrame) -> None:
        """Add observations (the spec's label columns plus ``seconds``) to a histogram."""
        if frame.is_empty():
            return
        edges = pl.Series(bucket_edges_us(spec), dtype=pl.Int64)
        us = (pl.col(SECONDS) * _US).round().cast(pl.Int64)
        # Bucket i holds edges[i-1] < v <= edges[i]: ``le`` is inclusive, so a value
        # exactly at a deadline lands in the deadline's bucket. One query for it all.
        grouped = (
            frame.lazy()
            .select(
                *_text_labels(frame, spec.labels),
                us.alias("us"),
                pl.lit(edges).search_sorted(us, side="left").alias("bucket"),
            )
            .group_by(*spec.labels, "bucket")
            .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("us").sum().alias("sum_us"))
            .group_by(*spec.labels)
            .agg("bucket", "n", pl.col("sum_us").sum(), pl.col("n").sum().alias("count"))
            .collect(engine=IN_MEMORY)
        )
        series = self.histograms.setdefault(spec.name, {})
        k = len(spec.labels)
        for row in grouped.iter_rows():
            key = row[:k]
            bucket_ids, ns, sum_us, count = row[k:]
            old = series.get(key)
            buckets = [0] * (len(spec.buckets) + 1) if old is None else list(old.buckets)
            for b, n in zip(bucket_ids, ns, strict=True):
                buckets[b] += n
            # A new value, never a change in place: copies of the store share values.
            series[key] = (
                HistogramValue(buckets, sum_us, count)
                if old is None
                else HistogramValue(buckets, old.sum_us + sum_us, old.count + count)
            )

    def value(self, spec: MetricSpec, labels: LabelKey = ()) -> int:
        """One counter series' value (0 when never incremented)."""
        return self.counters.get(spec.name, {}).get(labels, 0)

    def total(self, spec: MetricSpec) -> int:
        """Sum of a counter over all its series (a histogram: its total count)."""
        if spec.type is MetricType.HISTOGRAM:
            return sum(h.count for h in self.histograms.get(spec.name, {}).values())
        return sum(self.counters.get(spec.name, {}).values())

    def series(self, spec: MetricSpec) -> Iterator[tuple[LabelKey, int]]:
        """A counter's series sorted by label values."""
        yield from sorted(self.counters.get(spec.name, {}).items())

    def histogram_series(self, spec: MetricSpec) -> Iterator[tuple[LabelKey, HistogramValue]]:
        """A histogram's series sorted by label values."""
        yield from sorted(self.histograms.get(spec.name, {}).items(), key=lambda kv: kv[0])

    def copy(self) -> CounterStore:
        """An independent copy (for rendering or checkpointing while ingest goes on)."""
        # Histogram values are never changed in place (``observe`` replaces them), so
        # the copy shares them.
        return CounterStore(
            {name: dict(series) for name, series in self.counters.items()},
            {name: dict(series) for name, series in self.histograms.items()},
        )

    def to_json(self, specs: dict[str, MetricSpec]) -> dict[str, Any]:
        """A JSON-able dict (label values as lists, bucket edges recorded for checking)."""
        return {
            "counters": {
                name: [[list(k), v] for k, v in sorted(series.items())]
                for name, series in sorted(self.counters.items())
            },
            "histograms": {
                name: {
                    "edges_us": bucket_edges_us(specs[name]),
                    "series": [
                        [list(k), v.buckets, v.sum_us, v.count]
                        for k, v in sorted(series.items(), key=lambda kv: kv[0])
                    ],
                }
                for name, series in sorted(self.histograms.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], specs: dict[str, MetricSpec]) -> CounterStore:
        """The store saved by ``to_json``; histograms whose bucket edges changed are refused."""
        store = cls()
        for name, rows in data.get("counters", {}).items():
            store.counters[name] = {tuple(k): int(v) for k, v in rows}
        for name, hist in data.get("histograms", {}).items():
            spec = specs.get(name)
            if spec is None or hist["edges_us"] != bucket_edges_us(spec):
                raise ValueError(
                    f"checkpoint histogram {name} has other bucket edges than the catalog"
                )
            store.histograms[name] = {
                tuple(k): HistogramValue(list(b), int(s), int(c)) for k, b, s, c in hist["series"]
            }
        return store


def _text_labels(frame: pl.DataFrame, labels: tuple[str, ...]) -> list[pl.Expr]:
    """Label columns as the text ``str()`` of each value gives (null as ``"None"``)."""
    exprs: list[pl.Expr] = []
    for name in labels:
        dtype = frame.schema[name]
        col = pl.col(name)
        if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum) or dtype.is_integer():
            text = col.cast(pl.String)
        elif dtype == pl.Boolean:
            text = pl.when(col).then(pl.lit("True")).when(~col).then(pl.lit("False"))
        else:  # floats, dates: Python's own spelling of the value
            text = col.map_elements(str, return_dtype=pl.String)
        exprs.append(text.fill_null("None").alias(name))
    return exprs
