"""Prometheus scrape configs and the Alertmanager config, generated so names cannot drift."""

from __future__ import annotations

from typing import Any, Final

from exporters.catalog import API_JOB, API_PORT, EXPORTER_JOB, EXPORTER_PORT
from exporters.kafka.scrape import SHARD_JOB, shard_job
from exporters.mixin import alerts as al
from exporters.mixin.config import MixinConfig

PROMETHEUS_PORT: Final = 9090
#: docker-compose.yml's exporter shards (profile ``kafka``), each listening on EXPORTER_PORT.
COMPOSE_SHARDS: Final = ("shard-1", "shard-2")
ALERTMANAGER_PORT: Final = 9093
#: Placeholder webhook receiver: nothing listens there until a site wires its pager.
WEBHOOK_BASE: Final = "http://127.0.0.1:5001/alerts"
#: The duty desk: every postal alert becomes an incident on record in the API.
DUTY_RECEIVER: Final = "duty-desk"
DUTY_WEBHOOK_PATH: Final = "/api/v1/incidents/alertmanager"
#: The bearer token Alertmanager sends, in a file next to alertmanager.yml (relative paths
#: are read from the config's folder); the API keeps only its digest (``webhook_tokens``).
DUTY_TOKEN_FILE: Final = "duty-webhook.token"

#: Regional duty desks (China's seven geographic regions) by ISO 3166-2:CN code.
REGION_DESKS: Final[dict[str, tuple[str, ...]]] = {
    "north": ("CN-BJ", "CN-TJ", "CN-HE", "CN-SX", "CN-NM"),
    "northeast": ("CN-LN", "CN-JL", "CN-HL"),
    "east": ("CN-SH", "CN-JS", "CN-ZJ", "CN-AH", "CN-FJ", "CN-JX", "CN-SD"),
    "central": ("CN-HA", "CN-HB", "CN-HN"),
    "south": ("CN-GD", "CN-GX", "CN-HI"),
    "southwest": ("CN-CQ", "CN-SC", "CN-GZ", "CN-YN", "CN-XZ"),
    "northwest": ("CN-SN", "CN-GS", "CN-QH", "CN-NX", "CN-XJ"),
}


def prometheus_config(
    *,
    exporter: str,
    api: str,
    alertmanager: str,
    prometheus: str,
    scrape_interval: str = "15s",
    evaluation_interval: str = "30s",
) -> dict[str, Any]:
    """A Prometheus config scraping the exporter, the API, itself and Alertmanager."""

    def job(name: str, target: str) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": [target]}]}

    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
            "external_labels": {"monitor": "postal-kpi"},
        },
        "rule_files": ["rules.yml", "alerts.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            job(EXPORTER_JOB, exporter),
            job(API_JOB, api),
            job("prometheus", prometheus),
            job("alertmanager", alertmanager),
        ],
    }


def local_prometheus_config() -> dict[str, Any]:
    """``prometheus/prometheus.yml``: everything on 127.0.0.1 (``kpi serve`` on this host)."""
    return prometheus_config(
        exporter=f"127.0.0.1:{EXPORTER_PORT}",
        api=f"127.0.0.1:{API_PORT}",
        alertmanager=f"127.0.0.1:{ALERTMANAGER_PORT}",
        prometheus=f"127.0.0.1:{PROMETHEUS_PORT}",
    )


def compose_prometheus_config() -> dict[str, Any]:
    """``prometheus/prometheus.compose.yml``: the docker-compose service names.

    The exporter shards of the ``kafka`` profile (``COMPOSE_SHARDS``) are found by DNS:
    without the profile their names do not resolve and they are no targets at all.
    """
    config = prometheus_config(
        exporter=f"kpi:{EXPORTER_PORT}",
        api=f"kpi:{API_PORT}",
        alertmanager=f"alertmanager:{ALERTMANAGER_PORT}",
        prometheus=f"localhost:{PROMETHEUS_PORT}",
    )
    shards = shard_job(SHARD_JOB, dns_names=list(COMPOSE_SHARDS), port=EXPORTER_PORT)
    config["scrape_configs"].insert(1, shards)
    return config


def shards_prometheus_config(
    shards: list[str],
    api: str,
    prometheus: str,
    alertmanager: str = f"127.0.0.1:{ALERTMANAGER_PORT}",
    interval: str = "15s",
) -> dict[str, Any]:
    """A Prometheus config where Kafka shards are the exporter (``make demo-kafka``).

    The shards are scraped as the exporter's job, so the generated recording rules,
    alerts and dashboards aggregate over them (sums over shards and partitions, oldest
    ages as maxima) with no edit per shard count; the partition relabelling keeps each
    partition one series across its owners (docs/scaling.md).
    """
    config = prometheus_config(
        exporter=shards[0],
        api=api,
        alertmanager=alertmanager,
        prometheus=prometheus,
        scrape_interval=interval,
        evaluation_interval=interval,
    )
    config["scrape_configs"][0] = shard_job(EXPORTER_JOB, targets=list(shards))
    return config


def _receiver(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "webhook_configs": [{"url": f"{WEBHOOK_BASE}/{name}", "send_resolved": True}],
    }


def duty_receiver(api: str = f"127.0.0.1:{API_PORT}") -> dict[str, Any]:
    """The webhook receiver that records every alert as an incident in the API at ``api``."""
    return {
        "name": DUTY_RECEIVER,
        "webhook_configs": [
            {
                "url": f"http://{api}{DUTY_WEBHOOK_PATH}",
                "send_resolved": True,
                "http_config": {
                    "authorization": {"type": "Bearer", "credentials_file": DUTY_TOKEN_FILE}
                },
            }
        ],
    }


def _regex(values: tuple[str, ...]) -> str:
    return "|".join(values)


def alertmanager_config(config: MixinConfig) -> dict[str, Any]:
    """Route by severity and region, group by facility, inhibit on exporter health and severity."""
    health = _regex(al.EXPORTER_HEALTH_ALERTS)
    desk_routes: list[dict[str, Any]] = []
    for desk, regions in REGION_DESKS.items():
        # Facility and complaint alerts carry ``region``, timeliness ones ``destination``.
        for label in ("region", "destination"):
            desk_routes.append(
                {"receiver": f"desk-{desk}", "matchers": [f'{label}=~"{_regex(regions)}"']}
            )
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "national-ops",
            "group_by": ["alertname", "job", "facility", "region"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    # Every postal alert is recorded first; `continue` lets routing go on
                    # to the pagers and desks below. Small group_wait and group_interval:
                    # the record's times come from the alerts, but the desk sees them soon.
                    "receiver": DUTY_RECEIVER,
                    "matchers": ['alertname=~"Postal.+"'],
                    "group_wait": "5s",
                    "group_interval": "30s",
                    "continue": True,
                },
                {
                    # Pages go to the national 24-hour duty desk and, via continue,
                    # on to the regional desk below.
                    "receiver": "national-duty-pager",
                    "matchers": ['severity="critical"'],
                    "group_wait": "10s",
                    "repeat_interval": "1h",
                    "continue": True,
                },
                {
                    "receiver": "national-ops-info",
                    "matchers": ['severity="info"'],
                    "repeat_interval": "24h",
                },
                *desk_routes,
            ],
        },
        "inhibit_rules": [
            {
                # No data or stale data: the data alerts of that job mean nothing.
                "source_matchers": [f'alertname=~"{health}"'],
                "target_matchers": ['alertname=~"Postal.+"', 'alertname!~"PostalExporter.+"'],
                "equal": ["job"],
            },
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "job", "facility", "region", "product", "destination"],
            },
        ],
        "receivers": [
            duty_receiver(),
            _receiver("national-ops"),
            _receiver("national-duty-pager"),
            _receiver("national-ops-info"),
            *(_receiver(f"desk-{desk}") for desk in REGION_DESKS),
        ],
    }
