"""Checks before the API listens: closed to strangers by default, key configuration sane."""

from __future__ import annotations

import logging

from kpi.api.settings import Settings, check_exposure, check_keys
from kpi.sources.folder import FACILITIES_FILE, load_facilities

log = logging.getLogger("kpi.api")


def known_regions(settings: Settings) -> frozenset[str] | None:
    """The regions of ``facilities.csv`` (None when the folder has none: nothing to check)."""
    if not (settings.data_dir / FACILITIES_FILE).exists():
        return None
    regions = load_facilities(settings.data_dir)["region"].drop_nulls().unique().to_list()
    return frozenset(str(r) for r in regions)


def check_startup(settings: Settings, host: str, *, insecure_no_auth: bool) -> str | None:
    """Raise ``StartupError`` naming the fix; returns a warning to print when one applies."""
    check_keys(settings, known_regions(settings) if settings.api_keys else None)
    warning = check_exposure(host, settings, insecure_no_auth=insecure_no_auth)
    if warning:
        log.warning("%s", warning)
    return warning
