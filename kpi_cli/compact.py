"""``kpi compact``: a data folder's validated events as a bucketed Parquet lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kpi_cli.options import DataDir


def compact(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("--out", help="lake folder (created, or added to)")],
    buckets: Annotated[
        int, typer.Option("--buckets", min=1, max=4096, help="hash buckets of item_id")
    ] = 64,
    batch_rows: Annotated[
        int,
        typer.Option(
            "--batch-rows",
            min=1,
            help="rows read at once (whole files): bounds the run's memory, not its answer",
        ),
    ] = 2_000_000,
) -> None:
    """Add a folder's new validated, de-duplicated events and complaints to a lake."""
    # Lazy: the engine loads polars, which `kpi --help` does not need.
    from kpi.lake import LakeError  # noqa: PLC0415
    from kpi.lake import compact as run  # noqa: PLC0415

    try:
        rep = run(data_dir, out, buckets, batch_rows)
    except LakeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(rep.rejected.items()))
    typer.echo(
        f"files: {rep.files}, rows read: {rep.rows_read}, new events: {rep.new_events},"
        f" already in the lake: {rep.duplicate_events}, complaints: {rep.complaints},"
        f" parts written: {rep.parts}, rejected: {sum(rep.rejected.values())}"
        + (f" ({reasons})" if reasons else "")
    )
    if rep.rejected:
        typer.echo(f"rejects written to {out / '_rejects'}", err=True)
