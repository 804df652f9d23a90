"""``kpi simulate``: write a synthetic data folder, optionally keep appending live events."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kpi.signals import SignalStop

if TYPE_CHECKING:
    from rich.console import Console


class ScenarioChoice(StrEnum):
    """Scenarios offered on the command line (mirrors ``kpi.simulate.SCENARIOS``)."""

    SPRING_FESTIVAL = "spring-festival"
    STEADY = "steady"


def parse_start(value: str | None, days: int) -> datetime | None:
    """``--start``: ISO 8601 with a UTC offset, or ``now`` (the data then ends now)."""
    if value is None:
        return None
    if value.strip().lower() == "now":
        return datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
    try:
        start = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 timestamp: {value!r}") from exc
    if start.tzinfo is None or start.utcoffset() is None:
        raise typer.BadParameter(f"needs a UTC offset, e.g. {value}+08:00")
    return start


def simulate(
    out: Annotated[Path, typer.Option("--out", help="Data folder to write (created if missing).")],
    items: Annotated[
        int | None,
        typer.Option(
            help="Items to simulate [default: 100000]. With --live on an existing folder, "
            "leave it out to only append.",
            min=1,
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="Length of the period in days.", min=1, max=366)] = 30,
    seed: Annotated[int, typer.Option(help="Random seed; same arguments, same bytes.")] = 0,
    scenario: Annotated[
        ScenarioChoice, typer.Option(help="Volume scenario.")
    ] = ScenarioChoice.SPRING_FESTIVAL,
    start: Annotated[
        str | None,
        typer.Option(
            help="Start of the period, ISO 8601 with offset, or 'now' to end the data now "
            "[default: 2027-01-11T00:00:00+08:00].",
        ),
    ] = None,
    bad_rows: Annotated[
        float,
        typer.Option(
            "--bad-rows",
            help="Share of malformed rows mixed into extra CSV/JSONL feeds.",
            min=0.0,
            max=0.5,
        ),
    ] = 0.0,
    live: Annotated[
        bool, typer.Option("--live", help="Then keep appending wall-clock events until Ctrl-C.")
    ] = False,
    rate: Annotated[float, typer.Option(help="Live events per second.", min=0.01)] = 20.0,
    kafka: Annotated[
        str | None,
        typer.Option(
            "--kafka",
            help="With --live: publish the live events to this Kafka (bootstrap "
            "HOST:PORT[,HOST:PORT]) instead of appending them to OUT, keyed as kpi publish does.",
            metavar="HOST:PORT",
        ),
    ] = None,
    topic: Annotated[
        str, typer.Option(help="With --kafka: the events topic (created when missing).")
    ] = "postal.events",
    partitions: Annotated[
        int, typer.Option(help="With --kafka: partitions of a topic created here.", min=1)
    ] = 8,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
) -> None:
    """Generate a peak-season data folder (events/, complaints/, facilities.csv)."""
    # Lazy: rich loads only when this verb runs.
    from rich.console import Console  # noqa: PLC0415

    if kafka is not None and not live:
        raise typer.BadParameter("--kafka publishes the live feed: add --live")
    console = Console(stderr=True, quiet=quiet)
    if items is not None or not live or not (out / "facilities.csv").exists():
        _write_base(
            console, out, items, days, seed, scenario.value, parse_start(start, days), bad_rows
        )
    if live:
        _live(console, out, rate, seed, None if kafka is None else (kafka, topic, partitions))


def _write_base(
    console: Console,
    out: Path,
    items: int | None,
    days: int,
    seed: int,
    scenario: str,
    start: datetime | None,
    bad_rows: float,
) -> None:
    """Generate and write the data folder, with a progress bar on a terminal."""
    # Lazy: the engine pulls in numpy and polars; keep `kpi --help` and other verbs fast.
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from kpi import simulate as engine  # noqa: PLC0415

    try:
        cfg = engine.SimConfig(
            items=engine.DEFAULT_ITEMS if items is None else items,
            days=days,
            seed=seed,
            scenario=scenario,
            start=start or engine.DEFAULT_START,
            bad_rows=bad_rows,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    began = time.perf_counter()
    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console.quiet or not console.is_terminal,
        transient=True,
    ) as progress:
        task = progress.add_task("simulating", total=1.0)

        def report(step: str, done: float) -> None:
            progress.update(task, description=step, completed=done)

        result = engine.generate(cfg, report)
        written = engine.write_data_folder(result, out, report)
    elapsed = time.perf_counter() - began
    n_events = sum(v for k, v in written.items() if k.startswith("events/"))
    console.print(
        f"wrote {out}: {cfg.items:,} items, {n_events:,} event rows in "
        f"{sum(k.startswith('events/') for k in written)} files, "
        f"{written['complaints/complaints.parquet']:,} complaint rows, "
        f"{result.facilities.height} facilities ({elapsed:.1f} s)"
    )


def _live(
    console: Console, out: Path, rate: float, seed: int, kafka: tuple[str, str, int] | None
) -> None:
    """Append (or, with ``kafka``, publish) wall-clock events until SIGINT or SIGTERM."""
    # Lazy: numpy, polars and the Kafka client load only when this verb runs.
    from kpi import simulate as engine  # noqa: PLC0415
    from kpi.simulate.live_kafka import live_publish  # noqa: PLC0415

    stop = SignalStop()
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if kafka is None:
            console.print(
                f"appending ~{rate:g} events/s to {out / 'events'}/live-*.jsonl (Ctrl-C stops)"
            )
            run = engine.live_append(out, rate=rate, seed=seed, stop=stop.event)
            summary = f"live: {run.events:,} events in {run.path}"
        else:
            bootstrap, topic, partitions = kafka
            console.print(f"publishing ~{rate:g} events/s to {topic} on {bootstrap} (Ctrl-C stops)")
            sent = live_publish(
                bootstrap, topic, rate, seed=seed, stop=stop.event, partitions=partitions
            )
            summary = f"live: {sent.delivered:,} events published to {topic}"
            if sent.failed:
                summary += f", {sent.failed:,} not delivered: {sent.errors[:3]}"
    finally:
        stop.event.set()  # ends the watcher
        # Once stopped by a signal, keep absorbing repeats until exit: a supervisor's
        # second TERM must not kill the process halfway through its summary.
        if not stop.requested:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    console.print(summary)
