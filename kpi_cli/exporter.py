"""``kpi exporter``: follow a data folder live and serve Prometheus metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kpi_cli.options import (
    DEDUP_WINDOW_DEFAULT,
    LATE_GRACE_DEFAULT,
    RETENTION_DEFAULT,
    DataDir,
    DedupWindow,
    LateGrace,
    MaxFuture,
    Retention,
    parse_duration,
    parse_listen,
    parse_max_future,
    parse_retention,
    setup_logging,
)

# The verb's options, declared once here so that the verb itself reads as their list.
_Listen = Annotated[
    str, typer.Option("--listen", help="HOST:PORT to serve /metrics, /healthz, /readyz on")
]

_State = Annotated[
    Path | None,
    typer.Option(
        "--state", help="state folder: checkpoints and rejects (default DATA_DIR/_exporter)"
    ),
]

_RefreshInterval = Annotated[
    str, typer.Option("--refresh-interval", help="how often gauges are recomputed")
]

_AsOf = Annotated[
    str,
    typer.Option("--as-of", help="gauges as of the wall clock (now) or the newest event (latest)"),
]

_BatchInterval = Annotated[
    str, typer.Option("--batch-interval", help="pause between micro-batches when idle")
]

_CheckpointInterval = Annotated[
    str, typer.Option("--checkpoint-interval", help="minimum time between checkpoints")
]

_ServeInProcess = Annotated[
    bool,
    typer.Option(
        "--serve-in-process",
        help="serve /metrics from a thread of the exporter (default: a serving process "
        "of its own, which does not share the ingest's interpreter lock)",
    ),
]
_StallHours = Annotated[float, typer.Option("--stall-hours", help="no scan for longer = stalled")]

_Grace = Annotated[
    str,
    typer.Option(
        "--partial-line-grace",
        help="read a last line without newline once the file is idle this long",
    ),
]

_RejectsMaxBytes = Annotated[
    str,
    typer.Option(
        "--rejects-max-bytes",
        help="rotate the state folder's rejects.jsonl at this size (e.g. 64MiB, 500KiB)",
    ),
]

_LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR")]

_Kafka = Annotated[
    str | None,
    typer.Option(
        "--kafka",
        help="consume the events from Kafka (bootstrap HOST:PORT[,HOST:PORT]) as one shard "
        "of --group instead of following DATA_DIR's files (docs/scaling.md)",
        metavar="HOST:PORT",
    ),
]

_Topic = Annotated[str, typer.Option(help="Kafka: the events topic")]

_ComplaintsTopic = Annotated[
    str | None, typer.Option(help="Kafka: the complaints topic (none: no complaints)")
]

_Group = Annotated[str, typer.Option(help="Kafka: the consumer group the shards share")]

_SessionTimeout = Annotated[
    str,
    typer.Option("--session-timeout", help="Kafka: a silent shard loses its partitions after this"),
]


_ApplyThreads = Annotated[
    int,
    typer.Option(
        "--apply-threads",
        min=0,
        help="Kafka: partitions' sets applied side by side (0: the cores this process may use)",
    ),
]


def exporter(
    data_dir: DataDir,
    listen: _Listen = "127.0.0.1:9108",
    state: _State = None,
    refresh_interval: _RefreshInterval = "15s",
    as_of: _AsOf = "now",
    batch_interval: _BatchInterval = "1s",
    checkpoint_interval: _CheckpointInterval = "10s",
    stall_hours: _StallHours = 48.0,
    grace: _Grace = "10s",
    retention: Retention = RETENTION_DEFAULT,
    late_grace: LateGrace = LATE_GRACE_DEFAULT,
    dedup_window: DedupWindow = DEDUP_WINDOW_DEFAULT,
    max_future: MaxFuture = None,
    rejects_max_bytes: _RejectsMaxBytes = "64MiB",
    log_level: _LogLevel = "INFO",
    kafka: _Kafka = None,
    topic: _Topic = "postal.events",
    complaints_topic: _ComplaintsTopic = None,
    group: _Group = "postal-exporters",
    session_timeout: _SessionTimeout = "10s",
    apply_threads: _ApplyThreads = 0,
    serve_in_process: _ServeInProcess = False,
) -> None:
    """Follow DATA_DIR live (events/, complaints/), or a Kafka topic, and serve Prometheus metrics."""
    # Lazy: the exporter loads polars and prometheus_client, which `kpi --help` does not need.
    from exporters.rejects import parse_size  # noqa: PLC0415
    from exporters.service import AS_OF_CHOICES  # noqa: PLC0415

    if as_of not in AS_OF_CHOICES:
        raise typer.BadParameter(f"--as-of must be one of {', '.join(AS_OF_CHOICES)}")
    setup_logging(log_level)
    host, port = parse_listen(listen)
    from exporters.engine import use_in_memory_engine  # noqa: PLC0415

    use_in_memory_engine()
    # What the file exporter and a Kafka shard share: the time rules of their books too.
    common: dict[str, Any] = {
        "data_dir": data_dir,
        "state_dir": state or data_dir / "_exporter",
        "host": host,
        "port": port,
        "refresh_interval": parse_duration(refresh_interval),
        "checkpoint_interval": parse_duration(checkpoint_interval),
        "stall_hours": stall_hours,
        "retention": parse_retention(retention),
        "late_grace": parse_duration(late_grace),
        "dedup_window": parse_retention(dedup_window),
        "rejects_max_bytes": parse_size(rejects_max_bytes),
        "serve_in_process": serve_in_process,
    }
    if kafka is not None:
        # A shard's gauges are always as of the wall clock: --max-future defaults to 1h.
        _shard(
            **common,
            bootstrap=kafka,
            topic=topic,
            complaints_topic=complaints_topic,
            group=group,
            session_timeout=parse_duration(session_timeout),
            apply_threads=apply_threads,
            max_future=parse_max_future(max_future, "1h"),
        )
        return
    _follow_files(
        listen,
        **common,
        batch_interval=parse_duration(batch_interval),
        as_of="latest" if as_of == "latest" else "now",
        grace=parse_duration(grace),
        max_future=parse_max_future(max_future, "1h" if as_of == "now" else "off"),
    )


def _follow_files(listen: str, **settings: Any) -> None:
    """Run the file exporter until SIGTERM/SIGINT (``settings``: its ``ExporterConfig``)."""
    from exporters.service import ExporterConfig, ExporterService  # noqa: PLC0415

    try:
        ExporterService(ExporterConfig(**settings)).run()
    except (RuntimeError, ValueError) as exc:  # state folder locked, bad checkpoint, serving failed
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:  # port in use
        typer.echo(f"error: cannot listen on {listen}: {exc}", err=True)
        raise typer.Exit(1) from exc


def _shard(**settings: Any) -> None:
    """Run one Kafka shard until SIGTERM/SIGINT (``settings``: its ``ShardConfig``)."""
    from exporters.kafka.config import ShardConfig  # noqa: PLC0415
    from exporters.kafka.shard import KafkaShard  # noqa: PLC0415

    config = ShardConfig(**settings)
    host, port = config.host, config.port
    try:
        shard = KafkaShard(config)
    except ValueError as exc:  # time rules that contradict each other
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        shard.run()
    except RuntimeError as exc:  # the serving process kept dying
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except OSError as exc:  # port in use
        typer.echo(f"error: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from exc
