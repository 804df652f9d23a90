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
    #: Files whose current version is refused (file -> why); the previous one stays in use.
    errors: dict[str, str] = field(default_factory=dict)
    #: False while no valid service standard was ever loaded (nothing is applied then).
    standards_loaded: bool = False


def standards_missing(reference: Reference) -> tuple[str, ...]:
    """The ``/readyz`` reasons while no valid service standard was ever loaded (else none)."""
    if reference.standards_loaded:
        return ()
    return tuple(
        f"no valid service standard, nothing is read: {why}" for why in reference.errors.values()
    )


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def reload(data_dir: Path, current: Reference, force: bool = False) -> Reference:
    """``current``, or the files re-read when they changed.

    A bad new version (``ReferenceFileError``: validated completely on load) is refused
    with its reasons in ``errors``, logged once, and the last good one stays in use.
    """
    stamps = (_stamp(data_dir / FACILITIES_FILE), _stamp(data_dir / STANDARDS_FILE))
    if not force and stamps == current.stamps:
        return current
    facilities, standards = current.facilities, current.standards
    loaded = current.standards_loaded
    errors: dict[str, str] = {}
    try:
        facilities = load_facilities(data_dir)
    except Exception as exc:  # a bad new version is refused: the last good one stays
        errors[FACILITIES_FILE] = str(exc)
    try:
        standards = load_standards(data_dir)
        loaded = True
    except Exception as exc:
        errors[STANDARDS_FILE] = str(exc)
    for file, why in errors.items():
        if current.errors.get(file) != why:
            log.error("refusing this version of %s, keeping the previous one: %s", file, why)
    for file in set(current.errors) - set(errors):
        log.info("%s is valid again and in use", file)
    return Reference(facilities, standards, stamps, errors, loaded)
