"""``kpi report`` and ``kpi validate``: KPIs and data checks on a data folder."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kpi_cli.options import DataDir, MaxFuture, parse_max_future, setup_logging

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Collection

    import polars as pl

    from kpi.kpis.query import KpiQuery, Snapshot


# The cluster engine's options (``--engine dask``), kept beside the verb's signature.
Engine = Annotated[
    str,
    typer.Option(
        "--engine", help="polars (one process) or dask (DATA_DIR is a `kpi compact` lake)"
    ),
]
Workers = Annotated[
    int, typer.Option("--workers", min=1, help="dask: local cluster of N worker processes")
]
Scheduler = Annotated[
    str | None, typer.Option("--scheduler", help="dask: an existing cluster, e.g. tcp://HOST:8786")
]
ConnectTimeout = Annotated[
    float, typer.Option("--connect-timeout", help="dask: seconds to reach --scheduler")
]
RunTimeout = Annotated[
    float,
    typer.Option(
        "--timeout", min=0.001, help="dask: seconds the run may take once connected, else an error"
    ),
]


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _not_after(as_of: dt.datetime | None, max_future: float | None) -> dt.datetime | None:
    """Latest acceptable event time: the as-of (else the wall clock) plus ``--max-future``."""
    if max_future is None:
        return None
    return (as_of or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=max_future)


def _margin(max_future: str | None, as_of: dt.datetime | None) -> float | None:
    """``--max-future``; by default 1 h past an explicit as-of, else off (data dated ahead of
    the wall clock, e.g. generated, is read on its own clock as the report's as-of is)."""
    return parse_max_future(max_future, "1h" if as_of is not None else "off")


_Format = Annotated[str, typer.Option("--format", help="table, csv, json, parquet or arrow")]
_Output = Annotated[
    Path | None, typer.Option("--output", help="write to this file instead of stdout")
]
_StallHours = Annotated[float, typer.Option("--stall-hours", help="no scan for longer = stalled")]
_List = Annotated[bool, typer.Option("--list", help="print the KPI catalog and exit")]
_LogLevel = Annotated[
    str, typer.Option("--log-level", help="INFO shows how the lifecycle was built (to stderr)")
]


def report(
    data_dir: DataDir,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="snapshot instant (default: latest event)")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="window start, inclusive (default: earliest event)")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="window end, exclusive (default: just after as-of)")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="comma-separated dimensions")] = None,
    granularity: Annotated[
        str | None, typer.Option("--granularity", help="hour, day, week or month")
    ] = None,
    tz: Annotated[str, typer.Option("--tz", help="time zone of the time buckets")] = "UTC",
    kpi: Annotated[
        str | None, typer.Option("--kpi", help="comma-separated KPI names (default: all that fit)")
    ] = None,
    fmt: _Format = "table",
    output: _Output = None,
    stall_hours: _StallHours = 48.0,
    list_kpis: _List = False,
    log_level: _LogLevel = "WARNING",
    engine: Engine = "polars",
    workers: Workers = 2,
    scheduler: Scheduler = None,
    connect_timeout: ConnectTimeout = 10.0,
    timeout: RunTimeout = 3600.0,
    max_future: MaxFuture = None,
) -> None:
    """Compute KPIs over a data folder (one row per group and period, one column per KPI)."""
    setup_logging(log_level)
    # Lazy: the engine loads polars, which `kpi --help` and the other verbs do not need.
    from kpi.kpis.catalog import KpiError  # noqa: PLC0415
    from kpi.kpis.docs import catalog_table  # noqa: PLC0415
    from kpi.kpis.query import KpiQuery, Snapshot, wants_stages  # noqa: PLC0415
    from kpi.lake import LakeError  # noqa: PLC0415
    from kpi.lake_snapshot import LakeReader, is_lake  # noqa: PLC0415
    from kpi.lake_tables import TablesError  # noqa: PLC0415
    from kpi.output import FORMATS, TimestampError, parse_timestamp  # noqa: PLC0415
    from kpi.sources.folder import load_data_dir  # noqa: PLC0415
    from kpi.standards import ReferenceFileError  # noqa: PLC0415

    if list_kpis:
        typer.echo(catalog_table())
        return
    _check_choices(fmt, FORMATS, engine)
    try:
        as_of_ts = parse_timestamp(as_of, "--as-of") if as_of else None
        query = KpiQuery(
            kpis=_split(kpi) or None,
            by=_split(by),
            start=parse_timestamp(start, "--from") if start else None,
            end=parse_timestamp(end, "--to") if end else None,
            granularity=granularity,
            tz=tz,
            stall_hours=stall_hours,
        )
        if engine == "dask":
            reach = (scheduler, workers, connect_timeout, timeout)
            return _emit(_on_cluster(data_dir, query, as_of_ts, reach), fmt, output)
        if is_lake(data_dir):
            # A lake: the snapshot starts from its per-bucket lifecycle tables.
            reader = LakeReader.open(data_dir)
            snap = reader.snapshot() if as_of_ts is None else reader.snapshot_at(as_of_ts)
        else:
            snap = Snapshot.from_dataset(
                load_data_dir(data_dir, _not_after(as_of_ts, _margin(max_future, as_of_ts))),
                as_of_ts,
                stages=wants_stages(query),
            )
        frame = snap.query(query)
    except (KpiError, TimestampError, ReferenceFileError, LakeError, TablesError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _notes(snap, data_dir)
    _emit(frame, fmt, output)


def _check_choices(fmt: str, formats: Collection[str], engine: str) -> None:
    """Refuse an unknown output format or engine before anything is read."""
    if fmt not in formats:
        raise typer.BadParameter(f"use one of {', '.join(formats)}", param_hint="--format")
    if engine not in ("polars", "dask"):
        raise typer.BadParameter("use polars or dask", param_hint="--engine")


def _notes(snap: Snapshot, data_dir: Path) -> None:
    """Left-out rows never vanish silently: say how many and where to see them."""
    if snap.rejected_events:
        typer.echo(
            f"note: {snap.rejected_events} event row(s) were left out (failed validation"
            f" or repeated an event id); `kpi validate {data_dir}` lists them",
            err=True,
        )
    if snap.unreadable_event_files:
        typer.echo(
            f"note: {snap.unreadable_event_files} event file(s) could not be read;"
            f" `kpi validate {data_dir}` says why",
            err=True,
        )


def _on_cluster(
    lake: Path,
    query: KpiQuery,
    as_of: dt.datetime | None,
    reach: tuple[str | None, int, float, float],
) -> pl.DataFrame:
    """``--engine dask``: the answer from a lake, one task per bucket on a Dask cluster
    (``reach``: the scheduler, else a local cluster's workers; the connect and run timeouts)."""
    from kpi.cluster import ClusterError, connect  # noqa: PLC0415  (lazy: distributed)
    from kpi.cluster import report as cluster_report  # noqa: PLC0415
    from kpi.lake import LakeError  # noqa: PLC0415

    try:
        scheduler, workers, connect_timeout, timeout = reach
        with connect(scheduler, workers, connect_timeout) as client:
            return cluster_report(lake, query, client, as_of, timeout)
    except (ClusterError, LakeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _emit(frame: pl.DataFrame, fmt: str, output: Path | None) -> None:
    """The answer in ``fmt`` to ``output``, or to stdout."""
    from kpi.output import to_bytes, to_table  # noqa: PLC0415  (lazy: polars)

    if fmt == "table":
        text = to_table(frame)
        if output:
            output.write_text(text + "\n")
        else:
            typer.echo(text)
        return
    data = to_bytes(frame, fmt)  # type: ignore[arg-type]
    if output:
        output.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        if fmt == "json":
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()


def validate(
    data_dir: DataDir,
    rejects: Annotated[
        Path | None,
        typer.Option("--rejects", help="folder for rejects files (default DATA_DIR/_rejects)"),
    ] = None,
    max_future: MaxFuture = None,
) -> None:
    """Check every file of a data folder; exit 1 when any row was rejected or a reference file is bad."""
    # Lazy: rich and the engine load only when this verb runs.
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from kpi.sources.folder import reference_problems, validate_data_dir  # noqa: PLC0415

    bad_reference = reference_problems(data_dir)
    for file, problems in bad_reference.items():
        for problem in problems:
            typer.echo(f"{file}: {problem}", err=True)
    reports = validate_data_dir(
        data_dir, rejects, _not_after(None, parse_max_future(max_future, "off"))
    )
    table = Table(title=f"validation of {data_dir}")
    for col in (
        "file",
        "rows read",
        "accepted",
        "rejected",
        "by reason",
        "duplicate ids",
        "invalid S10",
    ):
        table.add_column(col, justify="left" if col in ("file", "by reason") else "right")
    for r in reports:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(r.rejected.items()))
        table.add_row(
            str(Path(r.source).relative_to(data_dir))
            if r.source.startswith(str(data_dir))
            else r.source,
            str(r.rows_read),
            str(r.accepted),
            str(r.rejected_total),
            reasons,
            str(r.duplicate_ids),
            str(r.invalid_s10),
        )
    total_rejected = sum(r.rejected_total for r in reports)
    Console(width=160).print(table)
    typer.echo(
        f"files: {len(reports)}, rows read: {sum(r.rows_read for r in reports)}, "
        f"accepted: {sum(r.accepted for r in reports)}, rejected: {total_rejected}, "
        f"duplicate event ids: {sum(r.duplicate_ids for r in reports)}, "
        f"invalid S10 ids: {sum(r.invalid_s10 for r in reports)}"
    )
    if bad_reference:
        typer.echo(
            f"refused reference file(s): {', '.join(bad_reference)} (the exporter keeps the"
            " previous version; kpi report stops)",
            err=True,
        )
    if total_rejected:
        typer.echo(f"rejects written to {rejects or data_dir / '_rejects'}", err=True)
    if total_rejected or bad_reference:
        raise typer.Exit(1)
