"""``kpi api``: serve the analyst API over a data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpi_cli.options import DataDir, parse_as_of, parse_listen


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
) -> None:
    """Serve the analyst API (KPIs, drill-downs, exports) over a data folder."""
    # Lazy: uvicorn, pydantic and the API load only when this verb runs, not for `kpi --help`.
    import uvicorn  # noqa: PLC0415
    from pydantic import ValidationError  # noqa: PLC0415

    from kpi.api import create_app, load_settings  # noqa: PLC0415

    host, port = parse_listen(listen)
    try:
        settings = load_settings(
            config, data_dir=data_dir, as_of=parse_as_of(as_of) if as_of else None
        )
    except (ValidationError, ValueError, OSError) as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)
