"""The daily duty report: incidents opened and resolved, time to acknowledge and resolve, open at end.

Definitions, for the day [start, end) (midnight to midnight in the report's time zone):

- *opened*: ``starts_at`` in the day;
- *resolved*: the incident stopped being open in the day (the earlier of the alert's
  ``endsAt`` and the duty desk's close); *minutes to resolve* is that end minus
  ``starts_at``, for the incidents resolved in the day;
- *acknowledged*: acknowledged in the day; *minutes to acknowledge* is the
  acknowledgement minus ``starts_at``;
- *open at end of day*: opened before ``end`` and not ended before it;
  *unacknowledged at end of day*: of those, the ones nobody had acknowledged by ``end``.

One row per region and severity that had anything to report, then one ``all``/``all`` row.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

COLUMNS: Final = (
    "date",
    "region",
    "severity",
    "opened",
    "resolved",
    "acknowledged",
    "mean_minutes_to_acknowledge",
    "max_minutes_to_acknowledge",
    "mean_minutes_to_resolve",
    "max_minutes_to_resolve",
    "open_at_end_of_day",
    "unacknowledged_at_end_of_day",
)
ALL: Final = "all"
NONE: Final = "-"
FORMATS: Final = ("md", "csv", "json")


def day_window(day: dt.date, tz: str = "UTC") -> tuple[dt.datetime, dt.datetime]:
    """[midnight, next midnight) of ``day`` in ``tz``, in UTC (23 or 25 hours across DST)."""
    zone = ZoneInfo(tz)
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def ended_at(row: Mapping[str, Any]) -> dt.datetime | None:
    """When the incident stopped being open: the earlier of resolution and closing."""
    ends = [t for t in (row["resolved_at"], row["closed_at"]) if t is not None]
    return min(ends) if ends else None


@dataclass
class _Group:
    opened: int = 0
    resolved: int = 0
    open_at_end: int = 0
    unacked_at_end: int = 0
    ack_minutes: list[float] = field(default_factory=list)
    resolve_minutes: list[float] = field(default_factory=list)

    def row(self, day: dt.date, region: str, severity: str) -> dict[str, Any]:
        def mean(xs: list[float]) -> float | None:
            return round(sum(xs) / len(xs), 2) if xs else None

        def top(xs: list[float]) -> float | None:
            return round(max(xs), 2) if xs else None

        return {
            "date": day.isoformat(),
            "region": region,
            "severity": severity,
            "opened": self.opened,
            "resolved": self.resolved,
            "acknowledged": len(self.ack_minutes),
            "mean_minutes_to_acknowledge": mean(self.ack_minutes),
            "max_minutes_to_acknowledge": top(self.ack_minutes),
            "mean_minutes_to_resolve": mean(self.resolve_minutes),
            "max_minutes_to_resolve": top(self.resolve_minutes),
            "open_at_end_of_day": self.open_at_end,
            "unacknowledged_at_end_of_day": self.unacked_at_end,
        }

    @property
    def empty(self) -> bool:
        return not (self.opened or self.resolved or self.open_at_end or self.ack_minutes)


def daily_report(
    incidents: Iterable[Mapping[str, Any]], day: dt.date, tz: str = "UTC"
) -> list[dict[str, Any]]:
    """The report rows for ``day`` (see the module docstring for every definition)."""
    start, end = day_window(day, tz)
    groups: dict[tuple[str, str], _Group] = {}
    total = _Group()
    for inc in incidents:
        key = (inc["region"] or NONE, inc["severity"] or NONE)
        group = groups.setdefault(key, _Group())
        begun, ended, acked = inc["starts_at"], ended_at(inc), inc["acknowledged_at"]
        for g in (group, total):
            if start <= begun < end:
                g.opened += 1
            if ended is not None and start <= ended < end:
                g.resolved += 1
                g.resolve_minutes.append((ended - begun).total_seconds() / 60)
            if acked is not None and start <= acked < end:
                g.ack_minutes.append((acked - begun).total_seconds() / 60)
            if begun < end and (ended is None or ended >= end):
                g.open_at_end += 1
                if acked is None or acked >= end:
                    g.unacked_at_end += 1
    rows = [g.row(day, r, s) for (r, s), g in sorted(groups.items()) if not g.empty]
    rows.append(total.row(day, ALL, ALL))
    return rows


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """The report as a Markdown table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt == "md":

        def cell(v: Any) -> str:
            return "" if v is None else str(v)

        lines = [
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "|".join("---" for _ in COLUMNS) + "|",
            *("| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows),
        ]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
