"""``kpi publish``: send a data folder's records to Kafka topics (keyed JSON messages)."""

from __future__ import annotations

from typing import Annotated

import typer

from kpi_cli.options import DataDir

Bootstrap = Annotated[
    str,
    typer.Option(
        "--kafka", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT]", metavar="HOST:PORT"
    ),
]


def publish(
    data_dir: DataDir,
    kafka: Bootstrap,
    topic: Annotated[str, typer.Option(help="topic of the events (keyed by item_id)")] = (
        "postal.events"
    ),
    complaints_topic: Annotated[
        str | None,
        typer.Option(help="topic of the complaints (keyed by complaint_id); left out: not sent"),
    ] = None,
    partitions: Annotated[
        int, typer.Option(help="partitions of a topic that does not exist yet", min=1)
    ] = 8,
    rate: Annotated[
        float | None, typer.Option(help="at most this many messages per second", min=0.01)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Publish a data folder's events (and complaints) to Kafka, in file order."""
    # Lazy: polars and the Kafka client are not needed by `kpi --help`.
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
    )

    from kpi.contract import Kind  # noqa: PLC0415
    from kpi.streams import kafka as streams  # noqa: PLC0415

    console = Console(stderr=True, quiet=quiet)
    counts = streams.count_rows(data_dir)
    total = counts[Kind.EVENTS] + (counts[Kind.COMPLAINTS] if complaints_topic else 0)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=not console.is_terminal,
    ) as progress:
        task = progress.add_task(f"publishing to {kafka}", total=total)
        report = streams.publish_folder(
            data_dir,
            kafka,
            topic,
            complaints_topic,
            partitions=partitions,
            rate=rate,
            progress=lambda n: progress.advance(task, n),
        )
    console.print(
        f"published {report.sent[Kind.EVENTS]:,} events to {topic}"
        + (
            f", {report.sent[Kind.COMPLAINTS]:,} complaints to {complaints_topic}"
            if complaints_topic
            else ""
        )
    )
    for source, n in report.unparsed.items():
        console.print(f"  {source}: {n:,} unparseable lines not sent")
    if report.skipped_complaints:
        console.print(
            f"  {report.skipped_complaints:,} complaints not sent (no --complaints-topic)"
        )
    if report.failed:
        typer.echo(f"{report.failed:,} messages not delivered: {report.errors[:3]}", err=True)
        raise typer.Exit(1)
