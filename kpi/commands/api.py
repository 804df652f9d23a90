"""``kpi api``: serve the analyst API over a data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpi.commands.options import DataDir, parse_as_of, parse_listen

#: ``--database`` of ``kpi api`` and ``kpi serve`` (the duty desk's incident register).
DatabaseOption = Annotated[
    str,
    typer.Option(
        "--database",
        help="incident register: sqlite:///FILE or postgresql://USER@HOST/DB; `none` turns the duty desk off",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="serve without API keys on a non-loopback address (anyone on the network reads and acts)",
    ),
]


def database_url(value: str) -> str | None:
    """The ``--database`` value, None for ``none``."""
    return None if value.strip().lower() == "none" else value


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
    import logging

    import uvicorn
    from pydantic import ValidationError

    from kpi.api import create_app, load_settings
    from kpi.api.settings import StartupError
    from kpi.api.startup import check_startup

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
