"""The ``kpi`` console script: one typer app, one verb per module of ``kpi_cli``.

To add a verb: write ``kpi_cli/<verb>.py`` with one typed function (typer reads its
parameters), then register it below with one line. Verb modules import only typer and
``kpi_cli.options`` at the top and load the engine or a face inside the function, so
``kpi --help`` stays fast.
"""

from __future__ import annotations

import typer

from kpi_cli import api, backfill, docs, duty, exporter, mixin, report, serve, simulate

app = typer.Typer(
    name="kpi",
    help="Postal service-quality KPIs: validate, simulate, report, export, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The verbs, in the order `kpi --help` lists them: one line each.
app.command("report")(report.report)
app.command("validate")(report.validate)
app.command("simulate")(simulate.simulate)
app.command("mixin")(mixin.mixin)
app.command("api")(api.api)
app.command("exporter")(exporter.exporter)
app.command("serve")(serve.serve)
app.command("docs")(docs.docs)
app.command("backfill")(backfill.backfill)
app.command("duty-report")(duty.duty_report)


if __name__ == "__main__":
    app()
