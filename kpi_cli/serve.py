"""``kpi serve``: the exporter and the analyst API in one process, for the demo and compose."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpi_cli.options import (
    DEDUP_WINDOW_DEFAULT,
    LATE_GRACE_DEFAULT,
    RETENTION_DEFAULT,
    DatabaseOption,
    DataDir,
    DedupWindow,
    InsecureOption,
    LateGrace,
    Retention,
    database_url,
    parse_duration,
    parse_listen,
    parse_retention,
    setup_logging,
)


def serve(
    data_dir: DataDir,
    exporter_listen: Annotated[
        str, typer.Option("--exporter-listen", help="HOST:PORT of /metrics")
    ] = "127.0.0.1:9108",
    api_listen: Annotated[str, typer.Option("--api-listen", help="HOST:PORT of the API")] = (
        "127.0.0.1:8000"
    ),
    state: Annotated[
        Path | None,
        typer.Option("--state", help="exporter state folder (default DATA_DIR/_exporter)"),
    ] = None,
    as_of: Annotated[
        str, typer.Option("--as-of", help="exporter gauges as of `now` or the `latest` event")
    ] = "now",
    refresh_interval: Annotated[
        str, typer.Option("--refresh-interval", help="how often gauges are recomputed")
    ] = "15s",
    config: Annotated[
        Path | None,
        typer.Option("--config", exists=True, dir_okay=False, help="API settings (YAML or JSON)"),
    ] = None,
    retention: Retention = RETENTION_DEFAULT,
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    ] = "INFO",
    late_grace: LateGrace = LATE_GRACE_DEFAULT,
    dedup_window: DedupWindow = DEDUP_WINDOW_DEFAULT,
    database: DatabaseOption = "sqlite:///var/duty.db",
    insecure_no_auth: InsecureOption = False,
) -> None:
    """Run the exporter (background threads) and the API (foreground) over DATA_DIR."""
    # Lazy: uvicorn, the exporter and the API load only when this verb runs.
    import uvicorn  # noqa: PLC0415

    from exporters.service import (  # noqa: PLC0415
        AS_OF_CHOICES,
        ExporterConfig,
        ExporterService,
    )
    from kpi.api import create_app, load_settings  # noqa: PLC0415
    from kpi.api.settings import StartupError  # noqa: PLC0415
    from kpi.api.startup import check_startup  # noqa: PLC0415

    if as_of not in AS_OF_CHOICES:
        raise typer.BadParameter(f"use one of {', '.join(AS_OF_CHOICES)}", param_hint="--as-of")
    setup_logging(log_level)
    ex_host, ex_port = parse_listen(exporter_listen)
    api_host, api_port = parse_listen(api_listen)
    settings = load_settings(config, data_dir=data_dir, database=database_url(database))
    try:
        warning = check_startup(settings, api_host, insecure_no_auth=insecure_no_auth)
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if warning:
        typer.echo(f"WARNING: {warning}", err=True)
    exporter = ExporterService(
        ExporterConfig(
            data_dir=data_dir,
            state_dir=state or data_dir / "_exporter",
            host=ex_host,
            port=ex_port,
            refresh_interval=parse_duration(refresh_interval),
            as_of="latest" if as_of == "latest" else "now",
            retention=parse_retention(retention),
            late_grace=parse_duration(late_grace),
            dedup_window=parse_retention(dedup_window),
        )
    )
    exporter.start()
    try:
        app = create_app(settings)
        # uvicorn handles SIGINT/SIGTERM; the exporter's final checkpoint follows in stop().
        uvicorn.run(app, host=api_host, port=api_port, log_level="info", access_log=False)
    finally:
        exporter.stop()
