"""``python -m kpi_cli``: the ``kpi`` command without the console script."""

from kpi_cli.app import app

app()
