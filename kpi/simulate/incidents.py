"""Scripted incidents: a slow hub (a fluid FIFO queue), a delayed route, a failing office."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC as UTC_TZ
from datetime import datetime, timedelta
from typing import Final

import numpy as np

from kpi.simulate.config import F64, LOCAL_TZINFO

#: Processing centre whose throughput collapses mid-period and never fully recovers.
INCIDENT_SLOW_HUB: Final = "PC-GD-01"
#: Trunk route (origin region, destination region) with extra line-haul hours.
INCIDENT_ROUTE: Final = ("CN-ZJ", "CN-SC")
#: Delivery office with a high share of failed delivery attempts.
INCIDENT_FAILING_OFFICE: Final = "DO-SH-003"
#: Capacity of the slow hub while degraded, as a share of its arrival rate.
SLOW_HUB_CAPACITY_SHARE: Final = 0.4
#: Backlog the slow hub still holds at the end of the data, in backlog thresholds.
SLOW_HUB_END_BACKLOG: Final = 2.5
#: Extra line-haul hours on the delayed route (uniform range).
ROUTE_EXTRA_HOURS: Final = (72.0, 120.0)
#: First-attempt failure probability at the failing office during its incident.
FAILING_OFFICE_FAIL_P: Final = 0.45


@dataclass(frozen=True)
class Incidents:
    """When each scripted incident is active (timezone-aware UTC datetimes)."""

    slow_hub_degraded_from: datetime
    slow_hub_degraded_until: datetime
    #: After the degraded phase the hub runs below its arrival rate until the end.
    slow_hub_recovering_until: datetime
    route_from: datetime
    route_until: datetime
    failing_office_from: datetime
    failing_office_until: datetime


def incident_schedule(start: datetime, days: int) -> Incidents:
    """The incident windows for a run, scaled to its length (see docs/simulator.md)."""
    day0 = datetime.combine(start.astimezone(LOCAL_TZINFO).date(), datetime.min.time())
    day0 = day0.replace(tzinfo=LOCAL_TZINFO)
    end = start + timedelta(days=days)

    def at(day: int, hour: int = 0) -> datetime:
        return min(max(day0 + timedelta(days=day, hours=hour), start), end).astimezone(UTC_TZ)

    slow_from = days // 2
    route_from = days // 4
    return Incidents(
        slow_hub_degraded_from=at(slow_from, 6),
        slow_hub_degraded_until=at(slow_from + max(1, round(days * 4 / 30)), 6),
        slow_hub_recovering_until=end.astimezone(UTC_TZ),
        route_from=at(route_from),
        route_until=at(route_from + max(1, round(days * 7 / 30))),
        failing_office_from=at(round(days * 0.6)),
        failing_office_until=end.astimezone(UTC_TZ),
    )


def hub_queue(
    arrivals: F64,
    degraded: tuple[float, float],
    until: float,
    capacity_share: float,
    target_end: float,
) -> F64:
    """Release times of a FIFO hub whose capacity drops, as a fluid queue.

    Cumulative departures S(t) = C(t) + min_{s<=t}(A(s) - C(s)) (Reich's formula) on a
    quarter-hour grid; the n-th arrival leaves when S reaches n. Outside the incident the
    capacity is effectively unlimited, so the release equals the arrival.
    """
    if len(arrivals) == 0:
        return arrivals.copy()
    order = np.argsort(arrivals, kind="stable")
    a = arrivals[order]
    step = 0.25
    g0 = math.floor(a[0] / step) * step
    g1 = max(a[-1], until) + 24.0 * 60
    grid = g0 + step * np.arange(int((g1 - g0) / step) + 2)
    arrived = np.searchsorted(a, grid, side="right").astype(np.float64)
    d0, d1 = degraded
    in_deg = (grid >= d0) & (grid < d1)
    deg_rate = max(1.0, float(np.count_nonzero((a >= d0) & (a < d1)))) / max(d1 - d0, step)
    unlimited = 1e7
    cap = np.full(len(grid), unlimited)
    cap[in_deg] = capacity_share * deg_rate * step

    def departures(c: F64) -> F64:
        cum = np.concatenate(([0.0], np.cumsum(c[:-1])))
        s: F64 = cum + np.minimum.accumulate(arrived - cum)
        return s

    # Recovery: run below the arrival rate so the backlog at the end is `target_end`.
    rec = (grid >= d1) & (grid < until)
    if until > d1 and rec.any():
        s = departures(cap)
        k1 = int(np.searchsorted(grid, d1))
        backlog_d1 = float(arrived[k1] - s[k1])
        k_end = int(np.searchsorted(grid, until))
        arrivals_rec = float(arrived[k_end] - arrived[k1])
        hours_rec = until - d1
        rate = (backlog_d1 + arrivals_rec - target_end) / hours_rec
        rate = max(rate, 0.6 * arrivals_rec / hours_rec, 0.01)
        cap[rec] = rate * step
    s = departures(cap)
    rank = np.arange(1, len(a) + 1, dtype=np.float64)
    idx = np.minimum(np.searchsorted(s, rank - 0.5, side="left"), len(grid) - 1)
    release = np.empty_like(arrivals)
    release[order] = grid[idx]
    return release
