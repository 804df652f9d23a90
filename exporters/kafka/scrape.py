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

#: The scrape job of the exporter shards beside a file exporter (docker compose's
#: ``kafka`` profile): its own job, since the same events counted by two jobs would
#: double every sum over one. Where the shards are the only exporter (``make
#: demo-kafka``) they are scraped as the exporter's job and the rules run on them.
SHARD_JOB: Final = "postal-exporter-kafka"

#: ``metric_relabel_configs`` of the exporter's scrape job when it scrapes Kafka shards.
PARTITION_RELABEL: Final[list[dict[str, Any]]] = [
    {
        "source_labels": ["partition"],
        "regex": ".+",
        "target_label": "instance",
        "replacement": "",
    }
]


def shard_job(
    name: str, targets: list[str] | None = None, dns_names: list[str] | None = None, port: int = 0
) -> dict[str, Any]:
    """A scrape job over shards: ``targets`` (HOST:PORT), or ``dns_names`` resolved to
    every address on ``port`` (a name that does not resolve adds no target, so a shard
    that is not deployed is not a target down)."""
    job: dict[str, Any] = {"job_name": name}
    if targets:
        job["static_configs"] = [{"targets": targets}]
    if dns_names:
        job["dns_sd_configs"] = [
            {"names": dns_names, "type": "A", "port": port, "refresh_interval": "15s"}
        ]
    job["metric_relabel_configs"] = PARTITION_RELABEL
    return job
