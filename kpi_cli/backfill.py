"""``kpi backfill``: the folder's history as Prometheus TSDB blocks (docs/backfill.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from kpi_cli.options import DataDir, parse_as_of, parse_duration


def _instant(text: str | None, param: str) -> dt.datetime | None:
    if text is None:
        return None
    if text.strip().lower() == "now":
        return dt.datetime.now(dt.UTC)
    return parse_as_of(text, param)


def backfill(
    data_dir: DataDir,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="where the blocks go: a new directory (made atomically) or an existing one"
            " such as a stopped Prometheus' --storage.tsdb.path (complete blocks moved in)",
        ),
    ],
    start: Annotated[
        str | None,
        typer.Option("--from", help="first step (default: the first event, on the step grid)"),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to", help="last step, or `now` (default: the first step after the newest event)"
        ),
    ] = None,
    step: Annotated[str, typer.Option("--step", help="time between samples")] = "5m",
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="read only events up to this instant (default: all)"),
    ] = None,
    job: Annotated[
        str, typer.Option("--job", help="`job` label of the series (as the live scrape's)")
    ] = "postal-exporter",
    instance: Annotated[
        str,
        typer.Option("--instance", help="`instance` label of the series (as the live scrape's)"),
    ] = "127.0.0.1:9108",
    stall_hours: Annotated[
        float, typer.Option("--stall-hours", help="no scan for longer = stalled")
    ] = 48.0,
    rules: Annotated[
        bool,
        typer.Option("--rules/--no-rules", help="also backfill the recording rules"),
    ] = True,
    rules_file: Annotated[
        Path | None,
        typer.Option("--rules-file", help="recording rules (default: the project's rules)"),
    ] = None,
) -> None:
    """Write the metrics of docs/metrics.md over the folder's history as TSDB blocks."""
    # Lazy: the face loads polars and prometheus_client, which `kpi --help` does not need.
    from exporters.backfill import BackfillError, Options  # noqa: PLC0415
    from exporters.backfill import backfill as run  # noqa: PLC0415

    opts = Options(
        data_dir=data_dir,
        out=out,
        start=_instant(start, "--from"),
        end=_instant(end, "--to"),
        step=dt.timedelta(seconds=parse_duration(step)),
        as_of=_instant(as_of, "--as-of"),
        job=job,
        instance=instance,
        stall_hours=stall_hours,
        rules=rules,
        rules_file=rules_file,
    )
    try:
        result = run(opts, progress=lambda msg: typer.echo(msg, err=True))
    except BackfillError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    typer.echo(
        f"backfilled {result.start.isoformat()} .. {result.end.isoformat()} into {out}:"
        f" {result.steps} steps, {result.series} series, {result.samples} samples,"
        f" {len(result.blocks)} blocks + {len(result.rule_blocks)} recording-rule blocks ({timings})"
    )
