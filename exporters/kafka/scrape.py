"""How Prometheus scrapes Kafka shards: the relabelling that makes a partition one series.

Every series about a partition (its state's counters and gauges, its consumer lag)
carries ``topic`` and ``partition``. Dropping the ``instance`` (the shard) from those
series makes each continue across owners: a failover is a new sample of the same
series, never a new series, and never a reset, since the next owner shows a partition
only once it has caught up with what the previous one had applied. Shard-level series
(partitions held) keep their ``instance``.
"""

from __future__ import annotations

from typing import Any, Final

#: ``metric_relabel_configs`` of the exporter's scrape job when it scrapes Kafka shards.
PARTITION_RELABEL: Final[list[dict[str, Any]]] = [
    {
        "source_labels": ["partition"],
        "regex": ".+",
        "target_label": "instance",
        "replacement": "",
    }
]
