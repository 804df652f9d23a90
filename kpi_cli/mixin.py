"""``kpi mixin``: regenerate the Prometheus rules, configs, dashboards and metric docs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: The repository root: generated files live beside ``kpi/``.
ROOT = Path(__file__).resolve().parents[1]


def mixin(
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Fail (exit 1) if a generated file is out of date; write nothing."
        ),
    ] = False,
) -> None:
    """Regenerate prometheus/*.yml, dashboards/*.json and docs/metrics.md from exporters/mixin."""
    # Lazy: `kpi --help` does not load polars, pydantic and prometheus_client.
    from exporters.mixin.render import diff, generate, write  # noqa: PLC0415

    files = generate()
    if check:
        stale = diff(ROOT, files)
        for text in stale.values():
            typer.echo(text, err=True)
        if stale:
            typer.echo(f"out of date: {', '.join(sorted(stale))}; run `kpi mixin`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{len(files)} generated files up to date")
        return
    changed = write(ROOT, files)
    typer.echo(f"wrote {len(changed)} of {len(files)} generated files")
    for rel in changed:
        typer.echo(f"  {rel}")
