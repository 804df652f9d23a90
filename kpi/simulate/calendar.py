"""Calendar: Spring Festival volume, holidays and the network's fixed timetables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

import numpy as np

from kpi.simulate.config import BOOL, F64, I64, LOCAL_OFFSET_H

#: Spring Festival (lunar new year) days the surge/dip is anchored to.
FESTIVAL_DAYS: Final = (date(2026, 2, 17), date(2027, 2, 6))


def _date_range(first: date, last: date) -> tuple[date, ...]:
    return tuple(first + timedelta(days=i) for i in range((last - first).days + 1))


#: Holidays of the default service standard (standard/economy working days skip them);
#: mirrors the defaults in ``kpi/standards.py``.
HOLIDAYS: Final = _date_range(date(2026, 2, 15), date(2026, 2, 23)) + _date_range(
    date(2027, 2, 5), date(2027, 2, 11)
)


def festival_factor(day: date) -> float:
    """Relative acceptance volume of a local day around the nearest Spring Festival."""
    x = min((abs((f - day).days), (f - day).days) for f in FESTIVAL_DAYS)[1]
    if x > 21:
        return 1.0
    if x > 7:  # online shopping for the holiday ramps up
        return 1.0 + 0.7 * (21 - x) / 14
    if x > 2:  # senders stop early, carriers announce last collection days
        return 1.7 - 1.1 * (7 - x) / 5
    if x >= -4:
        return 0.3
    if x >= -14:  # staff return over the following week
        return 0.3 + 0.6 * (-4 - x) / 10
    return 1.0


def _festival_ops_days(first: date, last: date) -> set[date]:
    """Local days on which the network runs a holiday timetable (festival holidays)."""
    return {d for d in HOLIDAYS if first <= d <= last}


@dataclass(frozen=True)
class Calendar:
    """Sorted instants (epoch hours) of the network's fixed timetables."""

    pickups: F64
    trunks: F64
    trunks_standard: F64
    rounds: F64
    rounds_economy: F64
    #: Local-day numbers (days since epoch) on the holiday timetable.
    ops_days: I64


def build_calendar(lo_h: float, hi_h: float, festival: bool) -> Calendar:
    """The timetables from a day before ``lo_h`` to 45 days after ``hi_h`` (epoch hours)."""
    first = date(1970, 1, 1) + timedelta(days=math.floor((lo_h + LOCAL_OFFSET_H) / 24) - 1)
    last = date(1970, 1, 1) + timedelta(days=math.floor((hi_h + LOCAL_OFFSET_H) / 24) + 45)
    ops = _festival_ops_days(first, last) if festival else set()
    pickups: list[float] = []
    trunks: list[float] = []
    trunks_std: list[float] = []
    rounds: list[float] = []
    rounds_eco: list[float] = []
    for day in _date_range(first, last):
        base = (day - date(1970, 1, 1)).days * 24.0 - LOCAL_OFFSET_H
        if day in ops:  # holiday timetable: skeleton crews, fewer rounds
            pickups += [base + 11.0, base + 17.0]
            trunks += [base + 22.0]
            trunks_std += [base + 22.0]
            rounds += [base + 9.5, base + 14.5]
            rounds_eco += [base + 9.5]
            continue
        pickups += [base + 11.0, base + 17.5, base + 20.5]
        trunks += [base + 22.0]
        trunks_std += [base + 10.0, base + 22.0]
        if day.weekday() == 6:  # Sunday: morning round only
            rounds += [base + 9.0]
            rounds_eco += [base + 9.0]
        else:
            rounds += [base + 8.5, base + 13.5]
            rounds_eco += [base + 8.5]
    return Calendar(
        pickups=np.array(pickups),
        trunks=np.array(trunks),
        trunks_standard=np.array(trunks_std),
        rounds=np.array(rounds),
        rounds_economy=np.array(rounds_eco),
        ops_days=np.array(sorted((d - date(1970, 1, 1)).days for d in ops), dtype=np.int64),
    )


def next_at(t: F64, instants: F64) -> F64:
    """The first timetable instant at or after each time."""
    idx = np.searchsorted(instants, t, side="left")
    out: F64 = instants[np.minimum(idx, len(instants) - 1)]
    return out


def local_days(t: F64) -> I64:
    """Local (UTC+8) day number since the epoch of each instant."""
    days: I64 = np.floor((t + LOCAL_OFFSET_H) / 24.0).astype(np.int64)
    return days


def on_ops_day(t: F64, cal: Calendar) -> BOOL:
    """Whether each instant falls on a holiday-timetable day."""
    out: BOOL = np.isin(local_days(t), cal.ops_days)
    return out
