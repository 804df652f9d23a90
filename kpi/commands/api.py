"""``kpi api``: serve the analyst API over a data folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter("use HOST:PORT, e.g. 127.0.0.1:8000", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parse_as_of(value: str) -> dt.datetime:
    try:
        ts = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"not an ISO 8601 timestamp: {value!r}", param_hint="--as-of"
        ) from exc
    if ts.tzinfo is None:
        raise typer.BadParameter(
            "add a UTC offset (e.g. +08:00 or Z); a time zone is never guessed",
            param_hint="--as-of",
        )
    return ts


def api(
    data_dir: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="data folder (events/, complaints/, ...)"
        ),
    ],
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
) -> None:
    """Serve the analyst API (KPIs, drill-downs, exports) over a data folder."""
    import uvicorn
    from pydantic import ValidationError

    from kpi.api import create_app, load_settings

    host, port = _parse_listen(listen)
    try:
        settings = load_settings(
            config, data_dir=data_dir, as_of=_parse_as_of(as_of) if as_of else None
        )
    except (ValidationError, ValueError, OSError) as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)
