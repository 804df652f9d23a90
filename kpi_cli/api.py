"""``kpi api``: serve the analyst API over a data folder."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kpi_cli.options import (
    DatabaseOption,
    DataDir,
    InsecureOption,
    database_url,
    parse_as_of,
    parse_listen,
    setup_logging,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    from distributed import Client

    from kpi.api.settings import Settings
    from kpi.lake_snapshot import LakeStart

_Engine = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="KPI endpoints computed by polars (this process) or dask (a cluster; DATA_DIR is a"
        " `kpi compact` lake). Default: the config's cluster.engine, else polars",
    ),
]
_Scheduler = Annotated[
    str | None, typer.Option("--scheduler", help="dask: an existing cluster, e.g. tcp://HOST:8786")
]
_Workers = Annotated[
    int | None, typer.Option("--workers", min=1, help="dask: local cluster of N worker processes")
]
_ConnectTimeout = Annotated[
    float | None,
    typer.Option("--connect-timeout", help="dask: seconds to reach the scheduler (default 10)"),
]
_RunTimeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0.001,
        help="dask: seconds one question's run may take on the cluster, else a 503"
        " (default: the config's cluster.run_timeout_seconds, else 600)",
    ),
]


def api(
    data_dir: DataDir,
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to listen on")
    ] = "127.0.0.1:8000",
    config: Annotated[
        Path | None,
        typer.Option("--config", exists=True, dir_okay=False, help="settings file (YAML or JSON)"),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="default snapshot instant (default: latest event)")
    ] = None,
    database: DatabaseOption = "sqlite:///var/duty.db",
    insecure_no_auth: InsecureOption = False,
    engine: _Engine = None,
    scheduler: _Scheduler = None,
    workers: _Workers = None,
    connect_timeout: _ConnectTimeout = None,
    timeout: _RunTimeout = None,
) -> None:
    """Serve the analyst API (KPIs, drill-downs, exports, the duty desk) over a data folder."""
    # A lake's read starts first, in a thread: importing the web stack overlaps its work.
    lake_start = _start_reading(data_dir, as_of)
    # Lazy: uvicorn, pydantic and the API load only when this verb runs, not for `kpi --help`.
    import uvicorn  # noqa: PLC0415
    from pydantic import ValidationError  # noqa: PLC0415

    from kpi.api import create_app, load_settings  # noqa: PLC0415
    from kpi.api.settings import StartupError  # noqa: PLC0415
    from kpi.api.startup import check_startup  # noqa: PLC0415

    setup_logging("INFO")  # the audit log (kpi.api.audit) and the duty desk's lines
    host, port = parse_listen(listen)
    try:
        settings = load_settings(
            config,
            data_dir=data_dir,
            as_of=parse_as_of(as_of) if as_of else None,
            database=database_url(database),
            cluster=_given(engine, scheduler, workers, connect_timeout, timeout),
        )
    except (ValidationError, ValueError, OSError) as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        warning = check_startup(settings, host, insecure_no_auth=insecure_no_auth)
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if warning:
        typer.echo(f"WARNING: {warning}", err=True)
    with ExitStack() as stack:
        # The duty desk opens after the server listens: its routes answer 503 until then,
        # the KPI routes (the main traffic) do not wait for SQLAlchemy and the database.
        app = create_app(
            settings,
            cluster=_cluster(settings, stack),
            lake_start=lake_start,
            duty_in_background=True,
        )
        # The store drops the read once its first load took it: its tables are not kept.
        del lake_start
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


def _start_reading(data_dir: Path, as_of: str | None) -> Future[LakeStart] | None:
    """The lake's default snapshot, being read (None: not a lake, or another as-of asked)."""
    from kpi.lake_snapshot import is_lake, start_reading  # noqa: PLC0415

    if as_of is not None or not is_lake(data_dir):
        return None
    return start_reading(data_dir)


def _given(
    engine: str | None,
    scheduler: str | None,
    workers: int | None,
    connect_timeout: float | None,
    run_timeout: float | None,
) -> dict[str, Any]:
    """The cluster settings given on the command line (they win over the config's)."""
    given = {
        "engine": engine,
        "scheduler": scheduler,
        "workers": workers,
        "connect_timeout_seconds": connect_timeout,
        "run_timeout_seconds": run_timeout,
    }
    return {k: v for k, v in given.items() if v is not None}


def _cluster(settings: Settings, stack: ExitStack) -> Client | None:
    """``--engine dask``: the cluster's client for the server's lifetime, reached (or started)
    before it listens; a lake missing or a scheduler not answering stops here, in time."""
    cfg = settings.cluster
    if cfg.engine != "dask":
        return None
    # Only for dask: kpi.cluster imports numpy (~0.6 s of a start compiling its sources).
    from kpi.cluster import ClusterError, connect  # noqa: PLC0415  (lazy: distributed)
    from kpi.lake_snapshot import is_lake  # noqa: PLC0415

    if not is_lake(settings.data_dir):
        typer.echo(
            f"error: --engine dask reads a lake: {settings.data_dir} is not one"
            f" (run `kpi compact {settings.data_dir} --out LAKE_DIR` first)",
            err=True,
        )
        raise typer.Exit(2)
    try:
        return stack.enter_context(connect(cfg.scheduler, cfg.workers, cfg.connect_timeout_seconds))
    except ClusterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
