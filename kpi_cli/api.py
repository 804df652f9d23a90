"""``kpi api``: serve the analyst API over a data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
) -> None:
    """Serve the analyst API (KPIs, drill-downs, exports, the duty desk) over a data folder."""
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
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)
