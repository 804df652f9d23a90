"""The metric families of a shard's exposition: per-partition copies, merged by name."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters import catalog as cat
from exporters.view import MetricsView

#: A partition held: ((topic, partition), high watermark, next offset, caught up at).
Lag = tuple[tuple[str, int], int, int, float]


class Families(Collector):
    """A fixed list of metric families (one refresh's), for a registry to render."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def labelled(families: Iterable[Metric], labels: dict[str, str]) -> list[Metric]:
    """Copies of ``families`` with ``labels`` added to every sample."""
    out = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [s._replace(labels={**s.labels, **labels}) for s in family.samples]
        out.append(copy)
    return out


def merged(groups: Iterable[list[Metric]]) -> list[Metric]:
    """One family per name, with the samples of every group (each name exposed once)."""
    by_name: dict[str, Metric] = {}
    for families in groups:
        for family in families:
            into = by_name.get(family.name)
            if into is None:
                into = Metric(family.name, family.documentation, family.type, family.unit)
                by_name[family.name] = into
            into.samples.extend(family.samples)
    return list(by_name.values())


def constant(view: MetricsView) -> Callable[[], MetricsView]:
    """A view source that always answers ``view`` (the collectors' argument)."""
    return lambda: view


def lag_families(held: list[Lag], topics: Iterable[str]) -> list[Metric]:
    """Consumer lag and its age per partition held, and the partitions held per topic."""
    lag = cat.KAFKA_LAG.family()
    age = cat.KAFKA_LAG_AGE.family()
    assigned = cat.KAFKA_PARTITIONS.family()
    per_topic: dict[str, int] = {}
    now = time.time()
    for (topic, partition), high, offset, caught_up_at in sorted(held):
        behind = max(0, high - offset)
        lag.add_metric([topic, str(partition)], float(behind))  # type: ignore[attr-defined]
        seconds = 0.0 if behind == 0 else max(0.0, now - caught_up_at)
        age.add_metric([topic, str(partition)], seconds)  # type: ignore[attr-defined]
        per_topic[topic] = per_topic.get(topic, 0) + 1
    for topic in sorted(topics):
        assigned.add_metric([topic], float(per_topic.get(topic, 0)))  # type: ignore[attr-defined]
    return [lag, age, assigned]
