"""The ``kpi`` console script: one typer app, one verb per module in ``kpi.commands``."""

from __future__ import annotations

import typer

from kpi.commands import simulate

app = typer.Typer(
    name="kpi",
    help="Postal service-quality KPIs: validate, simulate, report, export, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("simulate")(simulate.simulate)


if __name__ == "__main__":
    app()
