"""``kpi serve``: the exporter and the analyst API in one process, for the demo and compose."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

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
    MaxFuture,
    Retention,
    database_url,
    parse_duration,
    parse_listen,
    parse_max_future,
    parse_retention,
    setup_logging,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from exporters.service import ExporterService

#: How often ``kpi serve`` checks that its exporter still runs.
_WATCH_INTERVAL: Final = 0.5


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
    max_future: MaxFuture = None,
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
            max_future=parse_max_future(max_future, "1h" if as_of == "now" else "off"),
            late_grace=parse_duration(late_grace),
            dedup_window=parse_retention(dedup_window),
        )
    )
    app = create_app(settings)
    exporter.start()
    _run_beside(app, api_host, api_port, exporter)


def _run_beside(app: FastAPI, host: str, port: int, exporter: ExporterService) -> None:
    """Serve the API until a signal, or until ``exporter`` fails (then exit 1); stop both.

    Half a stack must not look alive: a supervisor (compose, systemd) restarts a process
    that exits, not one whose API answers while its exporter is gone.
    """
    import uvicorn  # noqa: PLC0415

    api = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False)
    )
    failure: list[str] = []

    def watch() -> None:
        while not api.should_exit:
            reason = exporter.failure
            if reason:
                failure.append(reason)
                api.should_exit = True
                return
            time.sleep(_WATCH_INTERVAL)

    threading.Thread(target=watch, name="watch-exporter", daemon=True).start()
    try:
        # uvicorn handles SIGINT/SIGTERM; the exporter's final checkpoint follows in stop().
        api.run()
    finally:
        exporter.stop()
    if failure:
        typer.echo(f"error: the exporter stopped ({failure[0]}); the API stopped with it", err=True)
        raise typer.Exit(1)
