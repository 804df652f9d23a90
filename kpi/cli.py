"""The ``kpi`` console script: one typer app, one verb per module in ``kpi.commands``.

Command modules import their heavy dependencies inside the command, so
``kpi --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpi.commands import api, exporter, mixin, publish, report, serve, simulate

app = typer.Typer(
    name="kpi",
    help="Postal service-quality KPIs: validate, simulate, report, export, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("report")(report.report)
app.command("validate")(report.validate)
app.command("simulate")(simulate.simulate)
app.command("mixin")(mixin.mixin)
app.command("api")(api.api)
app.command("exporter")(exporter.exporter)
app.command("serve")(serve.serve)
app.command("publish")(publish.publish)


@app.command("docs")
def docs(
    check: Annotated[
        bool, typer.Option("--check", help="fail if docs/kpis.md is not current")
    ] = False,
    out: Annotated[Path, typer.Option(help="where the KPI catalog page goes")] = Path(
        "docs/kpis.md"
    ),
) -> None:
    """Write docs/kpis.md from the KPI catalog."""
    from kpi.kpis.docs import catalog_markdown

    text = catalog_markdown()
    if check:
        if not out.exists() or out.read_text() != text:
            typer.echo(f"{out} is out of date: run `kpi docs`", err=True)
            raise typer.Exit(1)
        return
    out.write_text(text)


if __name__ == "__main__":
    app()
