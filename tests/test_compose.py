"""docker-compose.yml: valid against the Compose Specification, and every host path exists."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import typer
import yaml

from exporters import catalog as cat
from exporters.kafka.scrape import PARTITION_RELABEL, SHARD_JOB
from kpi_cli.app import app as kpi_app

REPO = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).parent / "fixtures" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts, short or long syntax."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def _validator() -> jsonschema.Draft7Validator:
    # The spec names draft-07 by a URL jsonschema does not map, so pick the draft explicitly.
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_is_valid_against_the_spec(compose: dict[str, Any]) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in _validator().iter_errors(compose)]
    assert errors == []


def test_schema_rejects_an_invalid_file() -> None:
    # Guard against a schema that accepts anything.
    bad = {"services": {"x": {"image": "a", "ports": {"not": "a list"}, "unknown_key": 1}}}
    assert len(list(_validator().iter_errors(bad))) >= 2


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "simulate-history",
        "simulate-live",
        "kpi",
        "prometheus",
        "alertmanager",
        "grafana",
        "kafka",
        "kafka-publish",
        "shard-1",
        "shard-2",
        "lake-compact",
        "dask-scheduler",
        "dask-worker",
        "report-dask",
        "api-dask",
    }
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("kpi", "prometheus", "alertmanager", "grafana"):
        assert "healthcheck" in services[name], name
    assert services["kpi"]["command"][:2] == ["serve", "/data"]
    history = services["simulate-history"]["command"]
    assert history[:3] == ["simulate", "--out", "/data"]
    assert history[history.index("--start") + 1] == "now"  # the live feed continues it
    assert services["simulate-live"]["command"][:4] == ["simulate", "--out", "/data", "--live"]
    # Every option a kpi service passes is one its verb really has.
    group = typer.main.get_command(kpi_app)
    kpi_verbs = ("simulate-history", "simulate-live", "kpi", "kafka-publish", "shard-1", "shard-2",
                 "lake-compact", "report-dask", "api-dask")  # fmt: skip
    for name in kpi_verbs:
        verb, *args = services[name]["command"]
        sub = group.commands[verb]  # type: ignore[attr-defined]
        known = {opt for p in sub.params for opt in p.opts}
        used = {a for a in args if a.startswith("--")}
        assert used <= known, (name, used - known)


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    assert {"postal-data", "postal-state", "prometheus-data", "grafana-data"} <= declared


def test_kafka_profile_runs_a_broker_and_two_shards_of_one_group(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("kafka", "kafka-publish", "shard-1", "shard-2"):
        assert services[name]["profiles"] == ["kafka"], name  # the default stack is unchanged
    shards = [services[n]["command"] for n in ("shard-1", "shard-2")]
    assert shards[0] == shards[1]  # same group, same topics, same shared state
    group = shards[0][shards[0].index("--group") + 1]
    assert group == "postal-exporters"
    assert services["shard-1"]["volumes"] == services["shard-2"]["volumes"]
    bootstrap = shards[0][shards[0].index("--kafka") + 1]
    assert bootstrap.split(":")[0] == "kafka"
    publish = services["kafka-publish"]["command"]
    assert publish[publish.index("--topic") + 1] == shards[0][shards[0].index("--topic") + 1]


def test_dask_profile_runs_a_scheduler_a_worker_and_the_report_on_them(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("lake-compact", "dask-scheduler", "dask-worker", "report-dask", "api-dask"):
        assert services[name]["profiles"] == ["dask"], name  # the default stack is unchanged
    scheduler = services["dask-scheduler"]
    assert scheduler["image"].startswith("ghcr.io/dask/dask:")  # the official image
    port = scheduler["command"][scheduler["command"].index("--port") + 1]
    address = f"tcp://dask-scheduler:{port}"
    worker = services["dask-worker"]["entrypoint"]
    assert worker[:3] == ["dask", "worker", address]
    report = services["report-dask"]["command"]
    assert report[report.index("--engine") + 1] == "dask"
    assert report[report.index("--scheduler") + 1] == address
    # The API's KPI endpoints run on the same scheduler, over the same lake.
    api = services["api-dask"]["command"]
    assert api[:2] == ["api", report[1]]
    assert api[api.index("--engine") + 1] == "dask"
    assert api[api.index("--scheduler") + 1] == address
    # The report reads the lake the compaction writes, and the worker sees it at that path.
    compact = services["lake-compact"]["command"]
    lake = compact[compact.index("--out") + 1]
    assert report[1] == lake
    for name in ("lake-compact", "dask-worker", "report-dask", "api-dask"):
        assert any(v.split(":")[1] == lake for v in services[name]["volumes"]), name
    # Client and scheduler speak the same distributed version (the image tag).
    assert scheduler["image"].split(":")[1].split("-")[0] == version("distributed")


def test_every_host_path_and_build_context_exists(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), name
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (context / dockerfile).is_file(), name
            checked += 1
        for source, _ in _bind_mounts(service):
            assert (REPO / source).exists(), f"{name}: {source}"
            checked += 1
    assert checked >= 6


def test_prometheus_in_compose_reads_the_compose_config(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_flag = next(c for c in prometheus["command"] if c.startswith("--config.file="))
    container_path = config_flag.split("=", 1)[1]
    mounts = dict((target, source) for source, target in _bind_mounts(prometheus))
    mount_dir = str(Path(container_path).parent)
    host_file = REPO / mounts[mount_dir] / Path(container_path).name
    assert host_file.is_file()
    config = yaml.safe_load(host_file.read_text())
    # Rule files resolve next to the config inside the same mount.
    for rule_file in config["rule_files"]:
        assert (host_file.parent / rule_file).is_file()
    # Scrape targets are compose service names on the ports the services listen on.
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0]
        for job in config["scrape_configs"]
        if "static_configs" in job
    }
    assert targets[cat.EXPORTER_JOB] == f"kpi:{cat.EXPORTER_PORT}"
    assert targets[cat.API_JOB] == f"kpi:{cat.API_PORT}"
    host, _ = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].split(":")
    assert host in compose["services"]
    assert f"0.0.0.0:{cat.EXPORTER_PORT}" in compose["services"]["kpi"]["command"]


def test_grafana_provisioning_points_at_the_mounted_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    mounts = {target: source for source, target in _bind_mounts(grafana)}
    assert mounts[env["POSTAL_DASHBOARDS_DIR"]] == "./dashboards"
    assert env["PROMETHEUS_URL"] == "http://prometheus:9090"
    provider = yaml.safe_load((REPO / "dashboards/provisioning/dashboards/postal.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "${POSTAL_DASHBOARDS_DIR}"
    datasource = yaml.safe_load(
        (REPO / "dashboards/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["type"] == "prometheus"
    assert datasource["datasources"][0]["url"] == "${PROMETHEUS_URL}"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO / "dashboards" / Path(home).name).is_file()


def test_prometheus_in_compose_scrapes_every_exporter_shard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # The shards: every service running `kpi exporter --kafka`, on the port it listens on.
    shards = {
        name: service["command"][service["command"].index("--listen") + 1]
        for name, service in services.items()
        if (service.get("command") or [None])[0] == "exporter" and "--kafka" in service["command"]
    }
    assert sorted(shards) == ["shard-1", "shard-2"]
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.compose.yml").read_text())
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == SHARD_JOB]
    assert len(jobs) == 1
    (sd,) = jobs[0]["dns_sd_configs"]
    assert sorted(sd["names"]) == sorted(shards)
    assert {f"0.0.0.0:{sd['port']}"} == set(shards.values())
    # Each partition's series continues across its owners (docs/scaling.md).
    assert jobs[0]["metric_relabel_configs"] == PARTITION_RELABEL
    # The file exporter keeps the job the rules read: the shards' own job counts nothing twice.
    exporter_jobs = [j for j in config["scrape_configs"] if j["job_name"] == cat.EXPORTER_JOB]
    assert exporter_jobs[0]["static_configs"][0]["targets"] == [f"kpi:{cat.EXPORTER_PORT}"]
