"""Option parsers shared by the ``kpi`` verbs."""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Final

import typer

#: The data folder argument every verb that reads one takes.
DataDir = Annotated[
    Path,
    typer.Argument(exists=True, file_okay=False, help="data folder (events/, complaints/, ...)"),
]

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``15s``, ``500ms``, ``2m``, ``1h``, ``30d`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"not a duration: {text!r} (e.g. 15s, 500ms, 2m)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


#: ``--retention`` of the exporter (``kpi exporter`` and ``kpi serve``), and its default
#: (``exporters.service.RETENTION_DEFAULT`` in seconds).
RETENTION_DEFAULT: Final = "30d"
Retention = Annotated[
    str,
    typer.Option(
        "--retention",
        help="exporter: finished items leave the state this long after their last scan (event"
        " time; their later scans are rejected as retired_item), or `forever`",
    ),
]


def parse_retention(text: str) -> float | None:
    """``--retention``: a duration, or ``forever`` (None: finished items are kept)."""
    if text.strip().lower() == "forever":
        return None
    if _DURATION.match(text) is None:
        raise typer.BadParameter(f"not a duration: {text!r} (e.g. 30d, 12h) nor `forever`")
    return parse_duration(text)


#: ``--late-grace`` and ``--dedup-window`` of the exporter, and their defaults
#: (``exporters.service.LATE_GRACE_DEFAULT`` / ``DEDUP_WINDOW_DEFAULT`` in seconds).
LATE_GRACE_DEFAULT: Final = "24h"
DEDUP_WINDOW_DEFAULT: Final = "14d"
LateGrace = Annotated[
    str,
    typer.Option(
        "--late-grace",
        help="exporter: attempts, deliveries and returns wait this long (event time) for"
        " their item's acceptance before they are counted with unknown labels",
    ),
]
DedupWindow = Annotated[
    str,
    typer.Option(
        "--dedup-window",
        help="exporter: event ids are remembered this long (event time, at least"
        " --late-grace); older events are rejected as too_old; or `forever`",
    ),
]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT`` for all interfaces) as a (host, port) pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def parse_as_of(text: str, param: str = "--as-of") -> dt.datetime:
    """An ISO 8601 instant with a UTC offset (never guessed), as a CLI parameter."""
    # Lazy: kpi.output loads polars, which `kpi --help` does not need.
    from kpi.output import TimestampError, parse_timestamp  # noqa: PLC0415

    try:
        return parse_timestamp(text, param)
    except TimestampError as exc:
        raise typer.BadParameter(str(exc), param_hint=param) from exc


LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str) -> None:
    """The one logging set-up of every verb: timestamped lines on stderr at ``level``."""
    if level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    # force: a second verb in the same process (tests, `kpi serve`) replaces the handler and
    # writes to the stderr of its own run.
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


#: ``--database`` of ``kpi api`` and ``kpi serve`` (the duty desk's incident register).
DatabaseOption = Annotated[
    str,
    typer.Option(
        "--database",
        help="incident register: sqlite:///FILE or postgresql://USER@HOST/DB; `none` turns the duty desk off",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="serve without API keys on a non-loopback address (anyone on the network reads and acts)",
    ),
]


def database_url(value: str) -> str | None:
    """The ``--database`` value, None for ``none``."""
    return None if value.strip().lower() == "none" else value
