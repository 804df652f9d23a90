"""``kpi duty-report``: the daily duty report from the incident register."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from kpi_cli.options import DatabaseOption


def duty_report(
    date: Annotated[str, typer.Option("--date", help="the day, YYYY-MM-DD")],
    database: DatabaseOption = "sqlite:///var/duty.db",
    fmt: Annotated[str, typer.Option("--format", help="md, csv or json")] = "md",
    tz: Annotated[str, typer.Option("--tz", help="time zone the day is counted in")] = "UTC",
    out: Annotated[
        Path | None, typer.Option("--out", help="write here instead of standard output")
    ] = None,
) -> None:
    """Incidents opened and resolved, time to acknowledge and resolve, open at end of day."""
    # Lazy: SQLAlchemy and Alembic load only when this verb runs, not for `kpi --help`.
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from kpi.duty.register import open_register  # noqa: PLC0415
    from kpi.duty.report import FORMATS, daily_report, day_window, render  # noqa: PLC0415

    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    try:
        day = dt.date.fromisoformat(date)
    except ValueError as exc:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint="--date") from exc
    try:
        start, end = day_window(day, tz)
    except (KeyError, ValueError) as exc:
        raise typer.BadParameter(f"unknown time zone {tz!r}", param_hint="--tz") from exc
    try:
        register = open_register(database)
        text = render(daily_report(register.overlapping(start, end), day, tz), fmt)
    except (SQLAlchemyError, ValueError) as exc:
        typer.echo(f"error: {database}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
