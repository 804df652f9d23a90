"""Reference data of the exporter: facilities.csv and the service standards, re-read on change."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kpi.contract import FACILITY_SCHEMA
from kpi.sources.folder import FACILITIES_FILE, load_facilities
from kpi.standards import DEFAULT_STANDARDS, STANDARDS_FILE, ServiceStandards, load_standards

log = logging.getLogger(__name__)

Stamp = tuple[int, int] | None


@dataclass(frozen=True)
class Reference:
    """facilities.csv and the service standards, with the file stamps they were read at."""

    facilities: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=FACILITY_SCHEMA))
    standards: ServiceStandards = DEFAULT_STANDARDS
    stamps: tuple[Stamp, ...] = (None, None)


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def reload(data_dir: Path, current: Reference, force: bool = False) -> Reference:
    """``current``, or the files re-read when they changed (a broken file keeps the last good one)."""
    stamps = (_stamp(data_dir / FACILITIES_FILE), _stamp(data_dir / STANDARDS_FILE))
    if not force and stamps == current.stamps:
        return current
    facilities, standards = current.facilities, current.standards
    try:
        facilities = load_facilities(data_dir)
    except Exception as exc:  # keep serving with the last good table
        log.error("cannot read %s, keeping the previous one: %s", FACILITIES_FILE, exc)
    try:
        standards = load_standards(data_dir)
    except Exception as exc:
        log.error("cannot read %s, keeping the previous one: %s", STANDARDS_FILE, exc)
    return Reference(facilities, standards, stamps)
