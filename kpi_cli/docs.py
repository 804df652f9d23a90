"""``kpi docs``: write docs/kpis.md from the KPI catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def docs(
    check: Annotated[
        bool, typer.Option("--check", help="fail if docs/kpis.md is not current")
    ] = False,
    out: Annotated[Path, typer.Option(help="where the KPI catalog page goes")] = Path(
        "docs/kpis.md"
    ),
) -> None:
    """Write docs/kpis.md from the KPI catalog."""
    # Lazy: the catalog pulls in polars, which `kpi --help` does not need.
    from kpi.kpis.docs import catalog_markdown  # noqa: PLC0415

    text = catalog_markdown()
    if check:
        if not out.exists() or out.read_text() != text:
            typer.echo(f"{out} is out of date: run `kpi docs`", err=True)
            raise typer.Exit(1)
        return
    out.write_text(text)
