"""Peak-season scenario generator: a synthetic but plausible data folder.

The engine works on whole columns: one row per item and one column per lifecycle
slot (accepted, departed, arrived, ...), all numpy, so a million items take seconds.
Every random number comes from ``Generator(PCG64(...))`` streams split off the seed
(items, complaints, feeds) and drawn in a fixed order, so the same arguments always
give byte-identical files.

Times are float64 hours since the Unix epoch (UTC) inside the engine; Asia/Shanghai
has had no daylight-saving time since 1991, so local time is exactly UTC+8.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC as UTC_TZ
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl

from kpi import contract

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

# --- calendar ------------------------------------------------------------------

LOCAL_TZ: Final = "Asia/Shanghai"
LOCAL_OFFSET_H: Final = 8
LOCAL_TZINFO: Final = timezone(timedelta(hours=LOCAL_OFFSET_H))
DEFAULT_START: Final = datetime(2027, 1, 11, tzinfo=LOCAL_TZINFO)
DEFAULT_DAYS: Final = 30
DEFAULT_ITEMS: Final = 100_000
SCENARIOS: Final = ("spring-festival", "steady")
DEFAULT_SCENARIO: Final = "spring-festival"

#: Spring Festival (lunar new year) days the surge/dip is anchored to.
FESTIVAL_DAYS: Final = (date(2026, 2, 17), date(2027, 2, 6))


def _date_range(first: date, last: date) -> tuple[date, ...]:
    return tuple(first + timedelta(days=i) for i in range((last - first).days + 1))


#: Holidays of the default service standard (standard/economy working days skip them);
#: mirrors the defaults in ``kpi/standards.py``.
HOLIDAYS: Final = _date_range(date(2026, 2, 15), date(2026, 2, 23)) + _date_range(
    date(2027, 2, 5), date(2027, 2, 11)
)

# --- scripted incidents ----------------------------------------------------------

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
ROUTE_EXTRA_HOURS: Final = (20.0, 44.0)
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


# --- network -----------------------------------------------------------------------

#: code -> (name, capital, latitude, longitude, relative outbound volume).
REGION_INFO: Final[dict[str, tuple[str, str, float, float, float]]] = {
    "CN-AH": ("Anhui", "Hefei", 31.82, 117.23, 3.0),
    "CN-BJ": ("Beijing", "Beijing", 39.90, 116.40, 4.0),
    "CN-CQ": ("Chongqing", "Chongqing", 29.56, 106.55, 2.0),
    "CN-FJ": ("Fujian", "Fuzhou", 26.07, 119.30, 4.0),
    "CN-GD": ("Guangdong", "Guangzhou", 23.13, 113.26, 16.0),
    "CN-GS": ("Gansu", "Lanzhou", 36.06, 103.83, 0.6),
    "CN-GX": ("Guangxi", "Nanning", 22.82, 108.37, 1.5),
    "CN-GZ": ("Guizhou", "Guiyang", 26.65, 106.63, 1.0),
    "CN-HA": ("Henan", "Zhengzhou", 34.75, 113.63, 4.0),
    "CN-HB": ("Hubei", "Wuhan", 30.59, 114.31, 3.0),
    "CN-HE": ("Hebei", "Shijiazhuang", 38.04, 114.51, 4.0),
    "CN-HI": ("Hainan", "Haikou", 20.04, 110.20, 0.5),
    "CN-HL": ("Heilongjiang", "Harbin", 45.80, 126.53, 1.0),
    "CN-HN": ("Hunan", "Changsha", 28.23, 112.94, 3.0),
    "CN-JL": ("Jilin", "Changchun", 43.82, 125.32, 0.8),
    "CN-JS": ("Jiangsu", "Nanjing", 32.06, 118.80, 8.0),
    "CN-JX": ("Jiangxi", "Nanchang", 28.68, 115.86, 2.0),
    "CN-LN": ("Liaoning", "Shenyang", 41.81, 123.43, 2.0),
    "CN-NM": ("Inner Mongolia", "Hohhot", 40.84, 111.75, 0.8),
    "CN-NX": ("Ningxia", "Yinchuan", 38.49, 106.23, 0.3),
    "CN-QH": ("Qinghai", "Xining", 36.62, 101.78, 0.2),
    "CN-SC": ("Sichuan", "Chengdu", 30.57, 104.07, 3.5),
    "CN-SD": ("Shandong", "Jinan", 36.65, 117.12, 5.0),
    "CN-SH": ("Shanghai", "Shanghai", 31.23, 121.47, 5.0),
    "CN-SN": ("Shaanxi", "Xi'an", 34.34, 108.94, 2.0),
    "CN-SX": ("Shanxi", "Taiyuan", 37.87, 112.55, 1.2),
    "CN-TJ": ("Tianjin", "Tianjin", 39.34, 117.36, 1.5),
    "CN-XJ": ("Xinjiang", "Urumqi", 43.83, 87.62, 0.6),
    "CN-XZ": ("Tibet", "Lhasa", 29.65, 91.17, 0.1),
    "CN-YN": ("Yunnan", "Kunming", 25.04, 102.71, 1.5),
    "CN-ZJ": ("Zhejiang", "Hangzhou", 30.27, 120.15, 12.0),
}
#: Remote regions of the default service standard.
REMOTE_REGIONS: Final = ("CN-XZ", "CN-XJ", "CN-QH")
#: Regions where local legs take twice as long (vast, thinly served).
_WIDE_REGIONS: Final = ("CN-XZ", "CN-XJ", "CN-QH", "CN-NM")

FT_COLLECTION: Final = 0
FT_PROCESSING: Final = 1
FT_DELIVERY: Final = 2


@dataclass(frozen=True)
class Network:
    """The facility network: ids plus the index arrays the engine routes with."""

    facility: tuple[str, ...]
    name: tuple[str, ...]
    ftype: I64
    region: I64
    #: For collection/delivery offices the processing centre they are attached to.
    home_pc: I64
    co_start: I64
    co_count: I64
    do_start: I64
    do_count: I64
    #: Facilities published without a backlog threshold (not yet calibrated).
    no_threshold: BOOL

    def index(self, facility: str) -> int:
        """Position of a facility id in the network."""
        return self.facility.index(facility)


def build_network() -> Network:
    """The built-in network: 1-2 processing centres, collection and delivery offices per region."""
    ids: list[str] = []
    names: list[str] = []
    ftype: list[int] = []
    region: list[int] = []
    home: list[int] = []
    no_thr: list[bool] = []
    co_start: list[int] = []
    co_count: list[int] = []
    do_start: list[int] = []
    do_count: list[int] = []
    for r, code in enumerate(contract.PROVINCES):
        prov, city, _, _, weight = REGION_INFO[code]
        short = code[3:]
        n_pc = 2 if weight >= 5 else 1
        n_co = min(16, max(2, int(2 + 0.9 * weight + 0.5)))
        n_do = min(20, max(3, int(3 + 1.1 * weight + 0.5)))
        pcs = []
        for k in range(1, n_pc + 1):
            pcs.append(len(ids))
            ids.append(f"PC-{short}-{k:02d}")
            names.append(f"{prov} Processing Centre {k}")
            ftype.append(FT_PROCESSING)
            region.append(r)
            home.append(len(ids) - 1)
            no_thr.append(False)
        co_start.append(len(ids))
        co_count.append(n_co)
        for k in range(1, n_co + 1):
            ids.append(f"CO-{short}-{k:03d}")
            names.append(f"{city} Collection Office {k}")
            ftype.append(FT_COLLECTION)
            region.append(r)
            home.append(pcs[(k - 1) % n_pc])
            # A few offices opened recently: operations has not calibrated them yet.
            no_thr.append(k == 7)
        do_start.append(len(ids))
        do_count.append(n_do)
        for k in range(1, n_do + 1):
            ids.append(f"DO-{short}-{k:03d}")
            names.append(f"{city} Delivery Office {k}")
            ftype.append(FT_DELIVERY)
            region.append(r)
            home.append(pcs[(k - 1) % n_pc])
            no_thr.append(k == 11)
    return Network(
        facility=tuple(ids),
        name=tuple(names),
        ftype=np.array(ftype, dtype=np.int64),
        region=np.array(region, dtype=np.int64),
        home_pc=np.array(home, dtype=np.int64),
        co_start=np.array(co_start, dtype=np.int64),
        co_count=np.array(co_count, dtype=np.int64),
        do_start=np.array(do_start, dtype=np.int64),
        do_count=np.array(do_count, dtype=np.int64),
        no_threshold=np.array(no_thr, dtype=np.bool_),
    )


def _region_distances() -> F64:
    """Road distance (km) between regional capitals: great circle times a detour factor."""
    lat = np.radians([REGION_INFO[c][2] for c in contract.PROVINCES])
    lon = np.radians([REGION_INFO[c][3] for c in contract.PROVINCES])
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin(dlon / 2) ** 2
    great_circle: F64 = 2 * 6371.0 * np.arcsin(np.sqrt(a))
    return great_circle * 1.3


# --- products, standard, lifecycle slots ----------------------------------------------

PRODUCTS: Final = ("express", "standard", "economy")
PRODUCT_MIX: Final = (0.35, 0.50, 0.15)
#: S10 service indicators per product (EMS, parcel, registered).
S10_PREFIX: Final = ("EE", "CP", "RR")
#: Prefixes for items created by the live appender, so they never collide with a base run.
S10_PREFIX_LIVE: Final = ("EV", "CV", "RV")
S10_COUNTRY: Final = "CN"
#: Days of the default standard per product and (same region, other region, remote).
_STANDARD_DAYS: Final = ((1, 2, 4), (2, 4, 7), (3, 6, 10))
_CUTOFF_H: Final = (17.0, 15.0, 15.0)
_CALENDAR_DAYS: Final = (True, False, False)
#: Share of items whose accepted event carries an explicit promised_by.
EXPLICIT_PROMISE_SHARE: Final = 0.05
LOCAL_SHARE: Final = 0.28
STUCK_SHARE: Final = 0.0025
#: Background disruptions that make some items late without any incident.
MISSED_LINEHAUL_SHARE: Final = 0.04
MISSORT_SHARE: Final = 0.04

FAILURE_REASONS: Final = ("addressee_absent", "refused", "wrong_address", "office_closed")
_REASON_P: Final = (0.62, 0.12, 0.16, 0.10)
_REASON_P_FAILING: Final = (0.55, 0.05, 0.10, 0.30)
_REFUSED: Final = 1

#: (event, facility role) of each lifecycle slot; slot order is lifecycle order.
SLOTS: Final = (
    ("accepted", "co"),
    ("departed", "co"),
    ("arrived", "hub1"),
    ("departed", "hub1"),
    ("arrived", "hub2"),
    ("departed", "hub2"),
    ("arrived", "do"),
    ("out_for_delivery", "do"),
    ("delivery_failed", "do"),
    ("out_for_delivery", "do"),
    ("delivery_failed", "do"),
    ("out_for_delivery", "do"),
    ("delivery_failed", "do"),
    ("delivered", "do"),
    ("returned", "do"),
)
_S_ACC, _S_CO_DEP, _S_ARR1, _S_DEP1, _S_ARR2, _S_DEP2, _S_DO = range(7)
_S_OFD: Final = (7, 9, 11)
_S_FAIL: Final = (8, 10, 12)
_S_DELIVERED: Final = 13
_S_RETURNED: Final = 14
_ROLES: Final = ("co", "hub1", "hub2", "do")
_SLOT_ROLE: Final = np.array([_ROLES.index(role) for _, role in SLOTS], dtype=np.int64)
_SLOT_EVENT: Final = np.array([contract.EVENT_TYPES.index(e) for e, _ in SLOTS], dtype=np.int64)

# Acceptance intensity by local hour: counters open 08:00-20:00, online pickups trail off.
_HOUR_PROFILE: Final = (
    0.05, 0.03, 0.02, 0.02, 0.03, 0.05, 0.12, 0.30, 0.75, 1.00, 1.00, 0.95,
    0.80, 0.85, 0.95, 1.00, 0.95, 0.90, 0.80, 0.70, 0.55, 0.35, 0.20, 0.10,
)  # fmt: skip
_WEEKDAY_FACTOR: Final = (1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.75)

_H_PER_S: Final = 1.0 / 3600.0
_EPOCH_DAY_WEEKDAY: Final = 3  # 1970-01-01 was a Thursday (Monday = 0)


def _epoch_hours(ts: datetime) -> float:
    return ts.timestamp() / 3600.0


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


# --- configuration and results ----------------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    """Arguments of one generator run."""

    items: int = DEFAULT_ITEMS
    days: int = DEFAULT_DAYS
    seed: int = 0
    scenario: str = DEFAULT_SCENARIO
    start: datetime = DEFAULT_START
    bad_rows: float = 0.0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {', '.join(SCENARIOS)}")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("start must carry a UTC offset")
        if not 1 <= self.items < 2**24:
            raise ValueError("items must be between 1 and 16,777,215")
        if not 1 <= self.days <= 366:
            raise ValueError("days must be between 1 and 366")
        if not 0.0 <= self.bad_rows <= 0.5:
            raise ValueError("bad_rows must be between 0 and 0.5")

    @property
    def end(self) -> datetime:
        """End of the data (exclusive, UTC): start + days."""
        return (self.start + timedelta(days=self.days)).astimezone(UTC_TZ)


@dataclass
class Feeds:
    """Text feeds (relative path -> all-string rows) and which good rows moved into them."""

    files: dict[str, pl.DataFrame] = field(default_factory=dict)
    #: Unparseable lines to splice in: path -> [(data row they precede, line)].
    raw_lines: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    event_moved: pl.Series | None = None
    complaint_moved: pl.Series | None = None


@dataclass
class SimResult:
    """Everything a run produces, as polars frames (the writers only serialise these)."""

    events: pl.DataFrame
    complaints: pl.DataFrame
    facilities: pl.DataFrame
    #: Ground truth per item (not written): product, regions, deadline, outcome.
    items: pl.DataFrame
    incidents: Incidents
    config: SimConfig
    feeds: Feeds = field(default_factory=Feeds)


# --- schedules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Calendar:
    """Sorted instants (epoch hours) of the network's fixed timetables."""

    pickups: F64
    trunks: F64
    trunks_standard: F64
    rounds: F64
    rounds_economy: F64
    #: Local-day numbers (days since epoch) on the holiday timetable.
    ops_days: I64


def _build_calendar(lo_h: float, hi_h: float, festival: bool) -> _Calendar:
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
    return _Calendar(
        pickups=np.array(pickups),
        trunks=np.array(trunks),
        trunks_standard=np.array(trunks_std),
        rounds=np.array(rounds),
        rounds_economy=np.array(rounds_eco),
        ops_days=np.array(sorted((d - date(1970, 1, 1)).days for d in ops), dtype=np.int64),
    )


def _next_at(t: F64, instants: F64) -> F64:
    """The first timetable instant at or after each time."""
    idx = np.searchsorted(instants, t, side="left")
    out: F64 = instants[np.minimum(idx, len(instants) - 1)]
    return out


def _local_day(t: F64) -> I64:
    days: I64 = np.floor((t + LOCAL_OFFSET_H) / 24.0).astype(np.int64)
    return days


def _on_ops_day(t: F64, cal: _Calendar) -> BOOL:
    out: BOOL = np.isin(_local_day(t), cal.ops_days)
    return out


def _line_haul(ready: F64, product: I64, same: BOOL, cal: _Calendar) -> F64:
    """Departure from the origin hub: express leaves when sorted, others wait for a truck."""
    standard = _next_at(ready, cal.trunks_standard)
    economy = _next_at(ready, cal.trunks)
    # Within a region standard mail rides the frequent shuttles, like express.
    out: F64 = np.select(
        [product == 0, (product == 1) & same, product == 1], [ready, ready, standard], economy
    )
    return out


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> F64:
    out: F64 = median * np.exp(sigma * rng.standard_normal(n))
    return out


# --- acceptance volume -------------------------------------------------------------------


def _acceptance_times(rng: np.random.Generator, cfg: SimConfig) -> F64:
    """Acceptance instants (sorted epoch hours) following daily, weekly and festival cycles."""
    start_h = _epoch_hours(cfg.start)
    hours = cfg.days * 24
    bin_start = start_h + np.arange(hours, dtype=np.float64)
    mid = bin_start + 0.5
    local_day = _local_day(mid)
    hour_of_day = np.floor(mid + LOCAL_OFFSET_H - local_day * 24.0).astype(np.int64)
    weekday = (local_day + _EPOCH_DAY_WEEKDAY) % 7
    weight = np.asarray(_HOUR_PROFILE)[hour_of_day] * np.asarray(_WEEKDAY_FACTOR)[weekday]
    if cfg.scenario == "spring-festival":
        day_factor = {
            d: festival_factor(date(1970, 1, 1) + timedelta(days=int(d)))
            for d in np.unique(local_day)
        }
        weight = weight * np.array([day_factor[d] for d in local_day])
    counts = rng.multinomial(cfg.items, weight / weight.sum())
    t = np.repeat(bin_start, counts) + rng.random(cfg.items)
    # The last partial hour must not spill past the end of the data.
    out: F64 = np.sort(np.minimum(t, start_h + hours - _H_PER_S))
    return out


# --- deadlines (the simulator's reading of the default standard) ---------------------------


def _deadlines(acc: F64, product: I64, origin: I64, dest: I64) -> F64:
    """End of the due day (epoch hours of the next local midnight) under the default standard.

    Same rules as ``kpi.standards``: acceptance after the cut-off counts from the next
    day, a deposit on a non-counting day rolls forward, the zone is remote when the
    destination is remote, and the promise is the last instant of the due day.
    """
    remote = np.isin(
        np.arange(len(contract.PROVINCES)), [contract.PROVINCES.index(r) for r in REMOTE_REGIONS]
    )
    region_class = np.where(remote[dest], 2, np.where(origin == dest, 0, 1))
    n_days = np.asarray(_STANDARD_DAYS, dtype=np.int64)[product, region_class]
    local = acc + LOCAL_OFFSET_H
    day = np.floor(local / 24.0).astype(np.int64)
    after_cutoff = (local - day * 24.0) > np.asarray(_CUTOFF_H)[product]
    start_day = day + after_cutoff
    calendar = np.asarray(_CALENDAR_DAYS)[product]
    holidays = np.array(HOLIDAYS, dtype="datetime64[D]")
    working = np.busday_offset(
        start_day.astype("datetime64[D]"),
        n_days,
        roll="forward",
        weekmask="1111110",
        holidays=holidays,
    ).astype(np.int64)
    due = np.where(calendar, start_day + n_days, working)
    out: F64 = (due + 1) * 24.0 - LOCAL_OFFSET_H
    return out


def _promise_series(name: str, midnight_h: F64) -> pl.Series:
    """Promised-by column from next-midnight instants: 23:59:59.999999 local (NaN = null)."""
    sec = pl.Series(name, np.round(midnight_h * 3600.0), nan_to_null=True)
    us = (sec * 1_000_000).cast(pl.Int64) - 1
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


# --- the slow hub -------------------------------------------------------------------------


def _hub_queue(
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


# --- routing ------------------------------------------------------------------------------


@dataclass
class _Routes:
    """Per-item route: facilities, slot times (n x slots, NaN = no such event), outcome."""

    product: I64
    origin: I64
    dest: I64
    fac: I64  # (4, n): co, hub1, hub2 (-1 when same region), do
    times: F64  # (n, len(SLOTS))
    reasons: I64  # (n, 3) reason index per attempt, -1 = none
    cut: I64  # last slot index kept for stuck items (len(SLOTS) when not stuck)
    #: Hub-visit times without the slow-hub incident (for threshold calibration).
    hub1_dep_base: F64
    hub2_dep_base: F64


def _route(
    rng: np.random.Generator,
    net: Network,
    acc: F64,
    cal: _Calendar,
    incidents: Incidents | None,
    festival_ops: bool,
    slow_hub_threshold: Callable[[F64, F64], float] | None = None,
) -> _Routes:
    """Route every item through the hub-and-spoke network, fully vectorised."""
    n = len(acc)
    n_regions = len(contract.PROVINCES)
    weights = np.array([REGION_INFO[c][4] for c in contract.PROVINCES])
    dest_weights = weights**0.7  # deliveries follow population more than e-commerce origin
    product = rng.choice(3, size=n, p=PRODUCT_MIX).astype(np.int64)
    origin = rng.choice(n_regions, size=n, p=weights / weights.sum()).astype(np.int64)
    local = rng.random(n) < LOCAL_SHARE
    dest_draw = rng.choice(n_regions, size=n, p=dest_weights / dest_weights.sum()).astype(np.int64)
    dest = np.where(local, origin, dest_draw)
    same = origin == dest
    co = net.co_start[origin] + (rng.random(n) * net.co_count[origin]).astype(np.int64)
    do = net.do_start[dest] + (rng.random(n) * net.do_count[dest]).astype(np.int64)
    hub1 = net.home_pc[co]
    hub2 = np.where(same, -1, net.home_pc[do])

    wide = np.isin(np.arange(n_regions), [contract.PROVINCES.index(r) for r in _WIDE_REGIONS])
    dist = _region_distances()[origin, dest]

    # Draw every random column up front so the draw order never depends on data.
    u_pick = rng.uniform(0.25, 0.75, n)
    leg_co = _lognormal(rng, 1.0, 0.4, n)
    dwell1 = _lognormal(rng, 2.5, 0.5, n)
    trunk_noise = np.exp(rng.standard_normal(n) * np.array([0.2, 0.15, 0.2])[product])
    missed = rng.random(n) < MISSED_LINEHAUL_SHARE
    missed_h = rng.uniform(20.0, 48.0, n)
    missort = rng.random(n) < MISSORT_SHARE
    missort_h = rng.uniform(24.0, 72.0, n)
    route_extra = rng.uniform(*ROUTE_EXTRA_HOURS, n)
    dwell2 = _lognormal(rng, 2.0, 0.5, n)
    leg_do = _lognormal(rng, 1.5, 0.4, n)
    release_jitter = rng.uniform(0.2, 1.0, n)
    u_fail = rng.random((n, 3))
    u_reason = rng.random((n, 3))
    u_return = rng.random((n, 3))
    after_ofd = rng.uniform(0.3, 5.0, (n, 3))
    return_h = rng.uniform(2.0, 30.0, n)
    stuck = rng.random(n) < STUCK_SHARE
    stuck_stage = rng.choice(np.array([_S_ARR1, _S_ARR2, _S_DO, _S_OFD[0]]), size=n)

    wide_o = np.where(wide[origin], 2.0, 1.0)
    wide_d = np.where(wide[dest], 2.0, 1.0)
    ops_mult = 1.5 if festival_ops else 1.0

    t_acc = acc
    t_co_dep = _next_at(t_acc + u_pick, cal.pickups)
    t_arr1 = t_co_dep + (1.0 + leg_co) * wide_o
    d1 = (1.5 + dwell1) * np.where(_on_ops_day(t_arr1, cal), ops_mult, 1.0)
    # A missorted item rides to the wrong hub and back before it continues.
    d1 = d1 + np.where(missort, missort_h, 0.0)
    ready1 = t_arr1 + d1
    is_eco = product == 2
    t_dep1 = _line_haul(ready1, product, same, cal)
    hub1_dep_base = t_dep1.copy()

    express_air = (product == 0) & (dist > 700)
    trunk = np.select(
        [express_air, product == 0, product == 1],
        [5.0 + dist / 650, 1.5 + dist / 70, 2.0 + dist / 55],
        4.0 + dist / 45,
    ) * trunk_noise + np.where(missed, missed_h, 0.0)
    route_hit = np.zeros(n, dtype=np.bool_)
    if incidents is not None:
        ro, rd = (contract.PROVINCES.index(r) for r in INCIDENT_ROUTE)
        route_hit = (
            (origin == ro)
            & (dest == rd)
            & (t_dep1 >= _epoch_hours(incidents.route_from))
            & (t_dep1 < _epoch_hours(incidents.route_until))
        )
    trunk = trunk + np.where(route_hit, route_extra, 0.0)
    t_arr2 = np.where(same, np.nan, t_dep1 + trunk)

    def dwell_hub2(arrived: F64) -> F64:
        on_ops = _on_ops_day(np.nan_to_num(arrived), cal)
        out: F64 = (1.0 + dwell2) * np.where(on_ops, ops_mult, 1.0)
        return out

    if incidents is not None:
        slow = net.index(INCIDENT_SLOW_HUB)
        at1 = hub1 == slow
        at2 = hub2 == slow
        # Items reaching the slow hub second came from another region's hub, so every
        # arrival there is known before the queue runs.
        arrivals = np.concatenate((t_arr1[at1], t_arr2[at2]))
        base_leave = np.concatenate((t_dep1[at1], (t_arr2 + dwell_hub2(t_arr2))[at2]))
        threshold = slow_hub_threshold(arrivals, base_leave) if slow_hub_threshold else 0.0
        release = _hub_queue(
            arrivals,
            (
                _epoch_hours(incidents.slow_hub_degraded_from),
                _epoch_hours(incidents.slow_hub_degraded_until),
            ),
            _epoch_hours(incidents.slow_hub_recovering_until),
            SLOW_HUB_CAPACITY_SHARE,
            SLOW_HUB_END_BACKLOG * threshold,
        )
        n1 = int(at1.sum())
        rel1 = np.full(n, -np.inf)
        rel2 = np.full(n, -np.inf)
        rel1[at1] = release[:n1] + release_jitter[at1]
        rel2[at2] = release[n1:] + release_jitter[at2]
        ready1 = np.maximum(ready1, rel1)
        t_dep1 = _line_haul(ready1, product, same, cal)
        t_arr2 = np.where(same, np.nan, t_dep1 + trunk)
    else:
        rel2 = np.full(n, -np.inf)

    d2 = dwell_hub2(t_arr2)
    hub2_dep_base = t_arr2 + d2
    t_dep2 = np.where(same, np.nan, np.maximum(t_arr2 + d2, rel2))
    last_dep = np.where(same, t_dep1, t_dep2)
    t_do = last_dep + (1.0 + leg_do) * wide_d

    # Delivery attempts: up to three rounds, then back to the sender.
    p_base = np.array([0.05, 0.07, 0.08])[product]
    failing = np.zeros(n, dtype=np.bool_)
    if incidents is not None:
        failing = do == net.index(INCIDENT_FAILING_OFFICE)
    reason_cdf = np.cumsum(_REASON_P)
    reason_cdf_failing = np.cumsum(_REASON_P_FAILING)
    times = np.full((n, len(SLOTS)), np.nan)
    reasons = np.full((n, 3), -1, dtype=np.int64)
    active = np.ones(n, dtype=np.bool_)
    earliest = t_do + 0.5
    for k in range(3):  # over attempts, not items
        ofd = np.where(
            is_eco, _next_at(earliest, cal.rounds_economy), _next_at(earliest, cal.rounds)
        )
        p = p_base if k == 0 else np.full(n, 0.3)
        if incidents is not None:
            window = (ofd >= _epoch_hours(incidents.failing_office_from)) & (
                ofd < _epoch_hours(incidents.failing_office_until)
            )
            p = np.where(failing & window, FAILING_OFFICE_FAIL_P if k == 0 else 0.5, p)
            cdf_hit = failing & window
        else:
            cdf_hit = np.zeros(n, dtype=np.bool_)
        fail = active & (u_fail[:, k] < p)
        success = active & ~fail
        done = ofd + after_ofd[:, k]
        reason = np.where(
            cdf_hit,
            np.searchsorted(reason_cdf_failing, u_reason[:, k] * reason_cdf_failing[-1]),
            np.searchsorted(reason_cdf, u_reason[:, k] * reason_cdf[-1]),
        )
        times[:, _S_OFD[k]] = np.where(active, ofd, np.nan)
        times[:, _S_FAIL[k]] = np.where(fail, done, np.nan)
        reasons[:, k] = np.where(fail, reason, -1)
        times[:, _S_DELIVERED] = np.where(success, done, times[:, _S_DELIVERED])
        give_up = fail & ((k == 2) | ((reason == _REFUSED) & (u_return[:, k] < 0.8)))
        times[:, _S_RETURNED] = np.where(give_up, done + return_h, times[:, _S_RETURNED])
        active = fail & ~give_up
        earliest = done + 10.0  # the next attempt is on a later round, normally next day

    times[:, _S_ACC] = t_acc
    times[:, _S_CO_DEP] = t_co_dep
    times[:, _S_ARR1] = t_arr1
    times[:, _S_DEP1] = t_dep1
    times[:, _S_ARR2] = t_arr2
    times[:, _S_DEP2] = t_dep2
    times[:, _S_DO] = t_do
    # Scanners record whole seconds; rounding once here keeps every later use consistent.
    times = np.round(times * 3600.0) / 3600.0
    cut = np.where(stuck, stuck_stage, len(SLOTS)).astype(np.int64)
    # A "stuck after the second hub" item of a same-region route sticks at its only hub.
    cut = np.where(stuck & same & (cut == _S_ARR2), _S_ARR1, cut)
    return _Routes(
        product=product,
        origin=origin,
        dest=dest,
        fac=np.stack((co, hub1, hub2, do)),
        times=times,
        reasons=reasons,
        cut=cut,
        hub1_dep_base=hub1_dep_base,
        hub2_dep_base=hub2_dep_base,
    )


# --- identifiers -----------------------------------------------------------------------------

# Serial numbers are an affine permutation of 0..10^8-1, so ids look random but never repeat.
_SERIAL_MULT: Final = 7_919_333
_SERIAL_SPACE: Final = 10**8


def item_ids(
    product: I64, seed: int, prefixes: tuple[str, ...] = S10_PREFIX, base: int = 0
) -> pl.Series:
    """Unique, valid S10 ids for items ``base .. base+n`` (service indicator by product)."""
    n = len(product)
    offset = (seed * 2_654_435_761 + 12_345_678) % _SERIAL_SPACE
    i = np.arange(base, base + n, dtype=np.int64) % _SERIAL_SPACE
    serial = (_SERIAL_MULT * i + offset) % _SERIAL_SPACE
    digits = (serial[:, None] // 10 ** np.arange(7, -1, -1, dtype=np.int64)) % 10
    total = digits @ np.array([8, 6, 4, 2, 3, 5, 9, 7], dtype=np.int64)
    check = 11 - total % 11
    check = np.where(check == 10, 0, np.where(check == 11, 5, check))
    frame = pl.DataFrame(
        {
            "p": pl.Series(prefixes).gather(pl.Series(product)),
            "s": pl.Series(serial).cast(pl.String).str.zfill(8),
            "c": pl.Series(check).cast(pl.String),
        }
    )
    return frame.select(
        pl.concat_str([pl.col("p"), pl.col("s"), pl.col("c"), pl.lit(S10_COUNTRY)]).alias("item_id")
    ).to_series()


def _gather(values: tuple[str, ...] | pl.Series, idx: I64) -> pl.Series:
    """``values[idx]`` as a string column, null where ``idx`` is negative."""
    i = pl.Series("i", idx, dtype=pl.Int64)
    src = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.String)
    return src.gather(i.to_frame().select(pl.when(i >= 0).then(i)).to_series())


def _utc_series(name: str, hours: F64) -> pl.Series:
    """Epoch hours (NaN = null) to a Datetime('us', 'UTC') column, whole seconds."""
    sec = pl.Series(name, np.round(hours * 3600.0), nan_to_null=True)
    us = (sec * 1_000_000).cast(pl.Int64)
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


# --- facilities and backlog thresholds --------------------------------------------------------


def _peak_presence(fac: I64, enter: F64, leave: F64, n_fac: int, lo: float, n_snap: int) -> I64:
    """Most items present at once per facility, over hourly snapshots from ``lo``."""
    w = n_snap + 1
    i0 = np.clip(np.ceil(enter - lo), 0, n_snap).astype(np.int64)
    i1 = np.clip(np.ceil(np.nan_to_num(leave - lo, nan=float(n_snap))), 0, n_snap).astype(np.int64)
    i1 = np.maximum(i0, i1)
    size = n_fac * w
    diff = np.bincount(fac * w + i0, minlength=size) - np.bincount(fac * w + i1, minlength=size)
    counts = np.cumsum(diff.reshape(n_fac, w), axis=1)[:, :n_snap]
    peak: I64 = counts.max(axis=1) if n_snap > 0 else np.zeros(n_fac, dtype=np.int64)
    return peak


def _nice_threshold(peak: I64) -> I64:
    """1.5 x the healthy peak, at least 10, rounded up to two significant digits."""
    raw = np.maximum(10.0, 1.5 * peak.astype(np.float64))
    scale = 10.0 ** np.maximum(0, np.floor(np.log10(raw)) - 1)
    out: I64 = (np.ceil(raw / scale) * scale).astype(np.int64)
    return out


def _thresholds(net: Network, r: _Routes, start_h: float, days: int) -> I64:
    """Backlog thresholds scaled to each facility's simulated healthy load."""
    t = r.times
    same = r.fac[2] < 0
    leave_do = np.where(np.isnan(t[:, _S_DELIVERED]), t[:, _S_RETURNED], t[:, _S_DELIVERED])
    fac = np.concatenate((r.fac[0], r.fac[1], r.fac[2][~same], r.fac[3]))
    enter = np.concatenate((t[:, _S_ACC], t[:, _S_ARR1], t[~same, _S_ARR2], t[:, _S_DO]))
    # The slow hub is calibrated on its normal dwell times, not on the incident.
    leave = np.concatenate((t[:, _S_CO_DEP], r.hub1_dep_base, r.hub2_dep_base[~same], leave_do))
    peak = _peak_presence(fac, enter, leave, len(net.facility), start_h, days * 24)
    return _nice_threshold(peak)


def facilities_frame(net: Network, thresholds: I64 | None) -> pl.DataFrame:
    """facilities.csv content: id, name, type, region, backlog threshold (null if uncalibrated)."""
    n = len(net.facility)
    thr = pl.Series(thresholds if thresholds is not None else [None] * n, dtype=pl.Int64)
    frame = pl.DataFrame(
        {
            "facility": list(net.facility),
            "name": list(net.name),
            "type": pl.Series(contract.FACILITY_TYPES).gather(pl.Series(net.ftype)),
            "region": pl.Series(contract.PROVINCES).gather(pl.Series(net.region)),
            "backlog_threshold": thr,
        }
    )
    return frame.with_columns(
        pl.when(pl.Series(net.no_threshold))
        .then(None)
        .otherwise(pl.col("backlog_threshold"))
        .alias("backlog_threshold")
    )


# --- events ------------------------------------------------------------------------------------


def _visible(r: _Routes, end_h: float) -> BOOL:
    """Slots that were scanned before the end of the data (stuck items stop at their cut)."""
    slot = np.arange(len(SLOTS))
    out: BOOL = ~np.isnan(r.times) & (slot[None, :] <= r.cut[:, None]) & (r.times < end_h)
    return out


def _events_frame(
    r: _Routes,
    ids: pl.Series,
    promise: F64,
    explicit: BOOL,
    net: Network,
    start_h: float,
    end_h: float,
) -> pl.DataFrame:
    """One row per visible scan, sorted by time (then item, then lifecycle slot)."""
    ii, ss = np.nonzero(_visible(r, end_h))
    ii = ii.astype(np.int64)
    ss = ss.astype(np.int64)
    sec = np.round(r.times[ii, ss] * 3600.0).astype(np.int64)
    # One int64 key (seconds since start | item | slot) sorts 7 M rows in well under a second.
    key = ((sec - math.floor(start_h * 3600.0)) << 28) | (ii << 4) | ss
    order = np.argsort(key)
    ii, ss, sec = ii[order], ss[order], sec[order]
    item = ids.gather(pl.Series(ii))
    is_acc = ss == _S_ACC
    attempt = np.where(np.isin(ss, _S_FAIL), (ss - _S_FAIL[0]) // 2, 0)
    reason = np.where(np.isin(ss, _S_FAIL), r.reasons[ii, attempt], -1)
    promised = np.where(is_acc & explicit[ii], promise[ii], np.nan)
    slot_tag = tuple(f"{s:02d}" for s in range(len(SLOTS)))
    return pl.DataFrame(
        {
            "event_id": pl.DataFrame({"i": item, "s": _gather(slot_tag, ss)})
            .select(pl.concat_str(pl.col("i"), pl.lit("-"), pl.col("s")))
            .to_series(),
            "item_id": item,
            "event": _gather(contract.EVENT_TYPES, _SLOT_EVENT[ss]),
            "ts": pl.Series(sec * 1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "facility": _gather(net.facility, r.fac[_SLOT_ROLE[ss], ii]),
            "product": _gather(PRODUCTS, np.where(is_acc, r.product[ii], -1)),
            "origin": _gather(contract.PROVINCES, np.where(is_acc, r.origin[ii], -1)),
            "destination": _gather(contract.PROVINCES, np.where(is_acc, r.dest[ii], -1)),
            "promised_by": _promise_series("promised_by", promised),
            "reason": _gather(FAILURE_REASONS, reason),
        }
    )


# --- outcomes and complaints --------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    delivered: F64  # NaN when not delivered by the end of the data
    returned: F64
    last_seen: F64
    #: Hours past the end of the due day (delivered, or still open at the end; NaN if
    #: returned); late when >= 0.
    late_h: F64
    failed_attempts: I64
    first_failure: F64


def _outcome(r: _Routes, promise: F64, end_h: float) -> _Outcome:
    vis = _visible(r, end_h)
    t = np.where(vis, r.times, np.nan)
    delivered = t[:, _S_DELIVERED]
    returned = t[:, _S_RETURNED]
    # Every item has a visible acceptance, so the row maximum is never all-NaN.
    last_seen = np.nanmax(t, axis=1)
    late_h = np.where(
        ~np.isnan(delivered),
        delivered - promise,
        np.where(np.isnan(returned), end_h - promise, np.nan),
    )
    fails = t[:, list(_S_FAIL)]
    return _Outcome(
        delivered=delivered,
        returned=returned,
        last_seen=last_seen,
        late_h=late_h,
        failed_attempts=(~np.isnan(fails)).sum(axis=1).astype(np.int64),
        first_failure=fails[:, 0],
    )


#: Complaints per million items unrelated to lateness (one draw per item).
BASE_COMPLAINT_PPM: Final[dict[str, float]] = {
    "damage": 80.0,
    "misdelivery": 50.0,
    "staff_conduct": 40.0,
    "other": 50.0,
    "loss": 10.0,
}
#: Delay complaints per million on-time items ("where is my parcel?" before the promise).
DELAY_ON_TIME_PPM: Final = 50.0
#: Counter refusals per million items; these complaints carry no item id.
REFUSED_ACCEPTANCE_PPM: Final = 20.0
#: Reply deadline the complaint KPIs measure against (for documentation and tests).
REPLY_DEADLINE_DAYS: Final = 7
_CAT = {c: i for i, c in enumerate(contract.COMPLAINT_CATEGORIES)}


def delay_complaint_probability(late_days: F64) -> F64:
    """Chance a late item draws a delay complaint: 3% plus 2% per day late, at most 30%."""
    out: F64 = np.minimum(0.3, 0.03 + 0.02 * late_days)
    return out


def _complaints(
    rng: np.random.Generator,
    r: _Routes,
    ids: pl.Series,
    promise: F64,
    out: _Outcome,
    start_h: float,
    end_h: float,
) -> pl.DataFrame:
    """Complaint records (all versions), driven by each item's outcome."""
    n = len(promise)
    acc = r.times[:, _S_ACC]
    u = rng.random((n, 4))
    lag = rng.random((n, 4))
    pick = rng.random(n)
    late = np.nan_to_num(out.late_h, nan=-1.0) >= 0
    late_days = np.clip(np.nan_to_num(out.late_h) / 24.0, 0.0, None)

    p_delay = np.where(late, delay_complaint_probability(late_days), DELAY_ON_TIME_PPM * 1e-6)
    hit_delay = u[:, 0] < p_delay
    open_delay = np.where(late, promise + 6.0 + 66.0 * lag[:, 0], acc + 24.0 + 48.0 * lag[:, 0])

    base_names = tuple(BASE_COMPLAINT_PPM)
    base_p = np.array([BASE_COMPLAINT_PPM[c] for c in base_names]) * 1e-6
    hit_base = u[:, 1] < base_p.sum()
    base_cat = np.array([_CAT[c] for c in base_names])[
        np.minimum(np.searchsorted(np.cumsum(base_p), u[:, 1], side="right"), len(base_names) - 1)
    ]
    ref = np.where(np.isnan(out.delivered), out.last_seen, out.delivered)
    open_base = ref + 2.0 + 94.0 * lag[:, 1]

    # Failed attempts annoy addressees: "nobody rang", "left at the wrong door".
    hit_fail = (out.failed_attempts > 0) & (u[:, 2] < 0.003)
    fail_cat = np.where(pick < 0.6, _CAT["misdelivery"], _CAT["staff_conduct"])
    open_fail = out.first_failure + 2.0 + 46.0 * lag[:, 2]

    lost = np.isnan(out.delivered) & np.isnan(out.returned) & (out.last_seen < end_h - 72.0)
    # Customers report a loss once the promise has passed without news.
    hit_loss = lost & late & (u[:, 3] < 0.15)
    open_loss = out.last_seen + 72.0 + 96.0 * lag[:, 3]

    m = int(rng.poisson(n * REFUSED_ACCEPTANCE_PPM * 1e-6))
    weights = np.array([REGION_INFO[c][4] for c in contract.PROVINCES])
    ra_open = start_h + rng.random(m) * (end_h - start_h)
    ra_region = rng.choice(len(weights), size=m, p=weights / weights.sum())
    ra_product = rng.choice(3, size=m, p=PRODUCT_MIX)

    idx = np.arange(n, dtype=np.int64)
    item = np.concatenate(
        (idx[hit_delay], idx[hit_base], idx[hit_fail], idx[hit_loss], np.full(m, -1))
    )
    cat = np.concatenate(
        (
            np.full(int(hit_delay.sum()), _CAT["delay"]),
            base_cat[hit_base],
            fail_cat[hit_fail],
            np.full(int(hit_loss.sum()), _CAT["loss"]),
            np.full(m, _CAT["refused_acceptance"]),
        )
    ).astype(np.int64)
    opened = np.concatenate(
        (
            open_delay[hit_delay],
            open_base[hit_base],
            open_fail[hit_fail],
            open_loss[hit_loss],
            ra_open,
        )
    )
    region = np.concatenate((r.dest[item[item >= 0]], ra_region)).astype(np.int64)
    product = np.concatenate((r.product[item[item >= 0]], ra_product)).astype(np.int64)
    opened = np.round(opened * 3600.0) / 3600.0
    keep = opened < end_h
    item, cat, opened, region, product = (
        item[keep],
        cat[keep],
        opened[keep],
        region[keep],
        product[keep],
    )
    order = np.lexsort((cat, item, opened))
    item, cat, opened, region, product = (
        item[order],
        cat[order],
        opened[order],
        region[order],
        product[order],
    )
    k = len(item)

    # Validity after investigation: late-delay complaints are mostly upheld, others less so.
    item_late = np.where(item >= 0, late[np.maximum(item, 0)], False)
    item_lost = np.where(item >= 0, lost[np.maximum(item, 0)], False)
    p_valid = np.select(
        [cat == _CAT["delay"], cat == _CAT["loss"]],
        [np.where(item_late, 0.9, 0.15), np.where(item_lost, 0.95, 0.3)],
        0.6,
    )
    valid = rng.random(k) < p_valid
    reply_h = _lognormal(rng, 60.0, 0.7, k)
    resolved = np.round((opened + reply_h) * 3600.0) / 3600.0
    is_resolved = resolved < end_h
    two_versions = is_resolved & (rng.random(k) < 0.25)
    assessed = is_resolved | (opened < end_h - 24.0)

    cid = "CMP" + pl.Series(np.arange(1, k + 1, dtype=np.int64)).cast(pl.String).str.zfill(7)
    item_col = _gather(ids, item)
    final = pl.DataFrame(
        {
            "complaint_id": cid,
            "opened_at": _utc_series("opened_at", opened),
            "category": _gather(contract.COMPLAINT_CATEGORIES, cat),
            "item_id": item_col,
            "region": _gather(contract.PROVINCES, region),
            "product": _gather(PRODUCTS, product),
            "valid": pl.Series(valid)
            .to_frame()
            .select(pl.when(pl.Series(assessed)).then(pl.first()))
            .to_series(),
            "resolved_at": _utc_series("resolved_at", np.where(is_resolved, resolved, np.nan)),
            "updated_at": _utc_series("updated_at", np.where(is_resolved, resolved, opened)),
        }
    )
    # Resolved complaints sometimes arrive twice: first as opened, then with the reply.
    first = final.filter(pl.Series(two_versions)).with_columns(
        pl.lit(None, dtype=pl.Boolean).alias("valid"),
        pl.lit(None, dtype=contract.UTC).alias("resolved_at"),
        pl.col("opened_at").alias("updated_at"),
    )
    return pl.concat([first, final]).sort(["updated_at", "complaint_id"])


# --- text feeds with malformed rows (--bad-rows) ------------------------------------------------

_R = contract.RejectReason
#: Defect kind -> the reject reason the reader should give. Bad rows carry the kind in
#: their id (``BAD-<kind>-<csv|jsonl>-<n>``), except the missing-id kinds.
EVENT_DEFECTS: Final[dict[str, contract.RejectReason]] = {
    "missing_event_id": _R.MISSING_FIELD,
    "missing_item_id": _R.MISSING_FIELD,
    "missing_facility": _R.MISSING_FIELD,
    "missing_ts": _R.MISSING_FIELD,
    "accepted_without_product": _R.MISSING_FIELD,
    "accepted_without_route": _R.MISSING_FIELD,
    "failed_without_reason": _R.MISSING_FIELD,
    "unknown_event": _R.UNKNOWN_EVENT,
    "bad_timestamp": _R.BAD_TIMESTAMP,
    "timestamp_without_offset": _R.TIMESTAMP_WITHOUT_OFFSET,
    # The reader parses promised_by as a timestamp, so "soon" is a bad timestamp there.
    "bad_type": _R.BAD_TIMESTAMP,
    "malformed_row": _R.MALFORMED_ROW,
}
COMPLAINT_DEFECTS: Final[dict[str, contract.RejectReason]] = {
    "missing_complaint_id": _R.MISSING_FIELD,
    "missing_region": _R.MISSING_FIELD,
    "missing_opened_at": _R.MISSING_FIELD,
    "unknown_category": _R.UNKNOWN_CATEGORY,
    "bad_timestamp": _R.BAD_TIMESTAMP,
    "timestamp_without_offset": _R.TIMESTAMP_WITHOUT_OFFSET,
    "bad_type": _R.BAD_TYPE,
    "malformed_row": _R.MALFORMED_ROW,
}
#: Defects written as whole lines the parser cannot split into fields.
_LINE_DEFECTS: Final = ("malformed_row",)
#: Share of items whose (good) events travel in the text feeds instead of Parquet.
FEED_ITEM_SHARE: Final = 0.02
#: Share of complaint rows that travel in the text feeds.
FEED_COMPLAINT_SHARE: Final = 0.10
#: Feed items whose id is sent with a wrong S10 check digit.
WRONG_CHECK_DIGIT_ITEMS: Final = 5
EVENT_FEEDS: Final = ("events/partner-feed.csv", "events/partner-feed.jsonl")
COMPLAINT_FEEDS: Final = ("complaints/complaints-crm.csv", "complaints/complaints-crm.jsonl")
_ALIASES: Final = {
    "accepted": "EMA",
    "arrived": "EMD",
    "departed": "EMC",
    "delivery_failed": "EMH",
    "delivered": "EMI",
}
_ISO_LOCAL: Final = "%Y-%m-%dT%H:%M:%S%:z"
_ISO_Z: Final = "%Y-%m-%dT%H:%M:%SZ"


def _as_text(df: pl.DataFrame, timestamps: tuple[str, ...], jsonl: bool) -> pl.DataFrame:
    """Every column as a string the way a feed would send it (CSV: +08:00, JSONL: Z)."""
    fmt = [
        (
            pl.col(c).dt.strftime(_ISO_Z)
            if jsonl
            else pl.col(c).dt.convert_time_zone(LOCAL_TZ).dt.strftime(_ISO_LOCAL)
        )
        for c in timestamps
    ]
    rest = [pl.col(c).cast(pl.String) for c in df.columns if c not in timestamps]
    return df.select(*fmt, *rest).select(df.columns)


def _choose_variant(kind_idx: pl.Expr, variants: tuple[str, ...]) -> pl.Expr:
    """Cycle through a few spellings of the same defect."""
    expr = pl.lit(variants[0])
    for i, v in enumerate(variants[1:], start=1):
        expr = pl.when(kind_idx % len(variants) == i).then(pl.lit(v)).otherwise(expr)
    return expr


def _bad_events(
    rng: np.random.Generator, events: pl.DataFrame, count: int, jsonl: bool
) -> pl.DataFrame:
    """``count`` copies of random events, each with one defect, kinds in rotation."""
    kinds = tuple(k for k in EVENT_DEFECTS if k not in _LINE_DEFECTS)
    base = _as_text(
        events.gather(rng.integers(0, events.height, count)), contract.EVENT_TIMESTAMPS, jsonl
    )
    n = pl.int_range(pl.len(), dtype=pl.Int64)
    k = pl.Series("kind", [kinds[i % len(kinds)] for i in range(count)])
    base = base.with_columns(k, n.alias("_n"))
    kind = pl.col("kind")

    def when(name: str, value: pl.Expr, otherwise: str) -> pl.Expr:
        return pl.when(kind == name).then(value).otherwise(pl.col(otherwise))

    def kind_in(*names: str) -> pl.Expr:
        return pl.col("kind").is_in(list(names))

    null = pl.lit(None, dtype=pl.String)
    tag = pl.lit("jsonl" if jsonl else "csv")
    return base.with_columns(
        pl.when(kind == "missing_event_id")
        .then(null)
        .otherwise(
            pl.concat_str(
                [pl.lit("BAD-"), kind, pl.lit("-"), tag, pl.lit("-"), pl.col("_n").cast(pl.String)]
            )
        )
        .alias("event_id"),
        pl.when(kind_in("missing_item_id"))
        .then(null)
        .otherwise(pl.col("item_id"))
        .alias("item_id"),
        pl.when(kind_in("missing_facility"))
        .then(null)
        .otherwise(pl.col("facility"))
        .alias("facility"),
        pl.when(kind_in("missing_ts"))
        .then(null)
        .when(kind == "bad_timestamp")
        .then(
            _choose_variant(
                pl.col("_n"),
                ("yesterday 08:15", "2027-02-30T08:00:00+08:00", "2027-01-11T25:61:00Z"),
            )
        )
        .when(kind == "timestamp_without_offset")
        .then(pl.col("ts").str.slice(0, 19))
        .otherwise(pl.col("ts"))
        .alias("ts"),
        pl.when(kind_in("accepted_without_product", "accepted_without_route"))
        .then(pl.lit("accepted"))
        .when(kind == "failed_without_reason")
        .then(pl.lit("delivery_failed"))
        .when(kind == "unknown_event")
        .then(_choose_variant(pl.col("_n"), ("teleported", "EMZ", "scanned")))
        .otherwise(pl.col("event"))
        .alias("event"),
        # Rows that became `accepted` need the manifest fields, except the one left out.
        pl.when(kind == "accepted_without_product")
        .then(null)
        .when(kind == "accepted_without_route")
        .then(pl.coalesce(pl.col("product"), pl.lit("standard")))
        .otherwise(pl.col("product"))
        .alias("product"),
        pl.when(kind == "accepted_without_route")
        .then(null)
        .when(kind == "accepted_without_product")
        .then(pl.coalesce(pl.col("origin"), pl.lit("CN-BJ")))
        .otherwise(pl.col("origin"))
        .alias("origin"),
        pl.when(kind == "accepted_without_route")
        .then(null)
        .when(kind == "accepted_without_product")
        .then(pl.coalesce(pl.col("destination"), pl.lit("CN-SH")))
        .otherwise(pl.col("destination"))
        .alias("destination"),
        when("bad_type", pl.lit("soon"), "promised_by").alias("promised_by"),
        pl.when(kind == "failed_without_reason")
        .then(null)
        .otherwise(pl.col("reason"))
        .alias("reason"),
    ).drop("kind", "_n")


def _bad_complaints(
    rng: np.random.Generator, complaints: pl.DataFrame, count: int, jsonl: bool
) -> pl.DataFrame:
    """``count`` copies of random complaint rows, each with one defect, kinds in rotation."""
    kinds = tuple(k for k in COMPLAINT_DEFECTS if k not in _LINE_DEFECTS)
    if complaints.height:
        sample = complaints.gather(rng.integers(0, complaints.height, count))
    else:  # tiny runs may have no complaint to copy: use a plausible template
        sample = pl.DataFrame(
            {
                "complaint_id": ["CMP0000000"],
                "opened_at": [datetime(2027, 1, 12, 9, tzinfo=UTC_TZ)],
                "category": ["other"],
                "item_id": [None],
                "region": ["CN-BJ"],
                "product": ["standard"],
                "valid": [None],
                "resolved_at": [None],
                "updated_at": [datetime(2027, 1, 12, 9, tzinfo=UTC_TZ)],
            },
            schema={**contract.COMPLAINT_SCHEMA, "category": pl.String()},
        ).gather(np.zeros(count, dtype=np.int64))
    base = _as_text(sample, contract.COMPLAINT_TIMESTAMPS, jsonl)
    n = pl.int_range(pl.len(), dtype=pl.Int64)
    base = base.with_columns(
        pl.Series("kind", [kinds[i % len(kinds)] for i in range(count)]), n.alias("_n")
    )
    kind = pl.col("kind")
    null = pl.lit(None, dtype=pl.String)
    tag = pl.lit("jsonl" if jsonl else "csv")
    return base.with_columns(
        pl.when(kind == "missing_complaint_id")
        .then(null)
        .otherwise(
            pl.concat_str(
                [pl.lit("BAD-"), kind, pl.lit("-"), tag, pl.lit("-"), pl.col("_n").cast(pl.String)]
            )
        )
        .alias("complaint_id"),
        pl.when(kind == "missing_region").then(null).otherwise(pl.col("region")).alias("region"),
        pl.when(kind == "missing_opened_at")
        .then(null)
        .when(kind == "bad_timestamp")
        .then(_choose_variant(pl.col("_n"), ("last week", "2027-13-01T10:00:00+08:00")))
        .when(kind == "timestamp_without_offset")
        .then(pl.col("opened_at").str.slice(0, 19))
        .otherwise(pl.col("opened_at"))
        .alias("opened_at"),
        pl.when(kind == "unknown_category")
        .then(_choose_variant(pl.col("_n"), ("rudeness", "slow", "DELAYED")))
        .otherwise(pl.col("category"))
        .alias("category"),
        pl.when(kind == "bad_type").then(pl.lit("maybe")).otherwise(pl.col("valid")).alias("valid"),
    ).drop("kind", "_n")


def _malformed_lines(
    rng: np.random.Generator, rows: pl.DataFrame, id_col: str, jsonl: bool
) -> list[tuple[int, str]]:
    """A few lines a parser cannot read: truncated JSON, CSV rows with missing fields."""
    count = max(1, rows.height // 200)
    tag = "jsonl" if jsonl else "csv"
    lines = []
    for i in range(count):
        bad_id = f"BAD-malformed_row-{tag}-{i}"
        # A writer that died mid-line, or a CSV export that lost its trailing columns.
        text = f'{{"{id_col}": "{bad_id}", "item_id": "EE12' if jsonl else f"{bad_id},EE123,arrived"
        lines.append((int(rng.integers(0, rows.height + 1)), text))
    return lines


def _shuffle(rng: np.random.Generator, df: pl.DataFrame) -> pl.DataFrame:
    return df.gather(rng.permutation(df.height))


def _feeds(
    rng: np.random.Generator,
    cfg: SimConfig,
    events: pl.DataFrame,
    complaints: pl.DataFrame,
    ids: pl.Series,
) -> Feeds:
    """Move a few items' events and some complaints to CSV/JSONL and mix in malformed rows."""
    n_items = len(ids)
    in_feed = rng.random(n_items) < FEED_ITEM_SHARE
    to_jsonl = rng.random(n_items) < 0.5
    csv_ids = ids.filter(pl.Series(in_feed & ~to_jsonl))
    jsonl_ids = ids.filter(pl.Series(in_feed & to_jsonl))
    wrong = rng.permutation(np.flatnonzero(in_feed))[:WRONG_CHECK_DIGIT_ITEMS]
    wrong_ids = ids.gather(pl.Series(wrong, dtype=pl.Int64))
    feeds = Feeds()
    moved = pl.Series(np.zeros(events.height, dtype=np.bool_))
    in_parquet = events.filter(~events["item_id"].is_in(ids.filter(pl.Series(in_feed)).implode()))
    n_bad = max(2 * len(EVENT_DEFECTS), round(cfg.bad_rows * events.height))
    n_dup = max(4, round(0.01 * events.height * FEED_ITEM_SHARE))
    for path, feed_ids, jsonl in (
        (EVENT_FEEDS[0], csv_ids, False),
        (EVENT_FEEDS[1], jsonl_ids, True),
    ):
        mask = events["item_id"].is_in(feed_ids.implode())
        moved = moved | mask
        good = _as_text(events.filter(mask), contract.EVENT_TIMESTAMPS, jsonl)
        u = pl.Series(rng.random(good.height))
        alias = pl.col("event").replace_strict(_ALIASES, default=None)
        good = good.with_columns(
            pl.when(alias.is_not_null() & (u < 0.1))
            .then(alias.str.to_lowercase())
            .when(alias.is_not_null() & (u < 0.25))
            .then(alias)
            .otherwise(pl.col("event"))
            .alias("event"),
            # The partner's system mistypes a few ids: the check digit is off by one.
            pl.when(pl.col("item_id").is_in(wrong_ids.implode()))
            .then(
                pl.concat_str(
                    pl.col("item_id").str.slice(0, 10),
                    ((pl.col("item_id").str.slice(10, 1).cast(pl.Int64) + 1) % 10).cast(pl.String),
                    pl.col("item_id").str.slice(11, 2),
                )
            )
            .otherwise(pl.col("item_id"))
            .alias("item_id"),
        )
        parts = [good]
        if good.height:  # the same scan sent twice
            parts.append(good.gather(rng.integers(0, good.height, n_dup // 2)))
        if not jsonl and in_parquet.height:  # scans already in Parquet, re-sent by the partner
            parts.append(
                _as_text(
                    in_parquet.gather(rng.integers(0, in_parquet.height, n_dup // 2)),
                    contract.EVENT_TIMESTAMPS,
                    jsonl,
                )
            )
        half = n_bad // 2 if not jsonl else n_bad - n_bad // 2
        parts.append(_bad_events(rng, events, half, jsonl))
        feeds.files[path] = _shuffle(rng, pl.concat(parts))
        feeds.raw_lines[path] = _malformed_lines(rng, feeds.files[path], "event_id", jsonl)
    feeds.event_moved = moved

    n_rows = complaints.height
    c_in = rng.random(n_rows) < FEED_COMPLAINT_SHARE
    c_jsonl = rng.random(n_rows) < 0.5
    n_bad_c = max(2 * len(COMPLAINT_DEFECTS), round(cfg.bad_rows * n_rows))
    for path, sel, jsonl in (
        (COMPLAINT_FEEDS[0], c_in & ~c_jsonl, False),
        (COMPLAINT_FEEDS[1], c_in & c_jsonl, True),
    ):
        good = _as_text(complaints.filter(pl.Series(sel)), contract.COMPLAINT_TIMESTAMPS, jsonl)
        half = n_bad_c // 2 if not jsonl else n_bad_c - n_bad_c // 2
        bad = _bad_complaints(rng, complaints, half, jsonl)
        feeds.files[path] = _shuffle(rng, pl.concat([good, bad]))
        feeds.raw_lines[path] = _malformed_lines(rng, feeds.files[path], "complaint_id", jsonl)
    feeds.complaint_moved = pl.Series(c_in)
    return feeds


# --- the whole run ---------------------------------------------------------------------------------

#: Progress callback: (step description, fraction of the run done).
Report = Callable[[str, float], None]


def _no_report(_: str, __: float) -> None:
    return None


def generate(cfg: SimConfig, report: Report | None = None) -> SimResult:
    """Simulate a run in memory: events, complaints, facilities, ground truth, feeds."""
    say = report or _no_report
    items_seq, complaints_seq, feeds_seq = np.random.SeedSequence(cfg.seed).spawn(3)
    rng = np.random.Generator(np.random.PCG64(items_seq))
    net = build_network()
    incidents = incident_schedule(cfg.start, cfg.days)
    start_h = _epoch_hours(cfg.start)
    end_h = _epoch_hours(cfg.end)
    festival = cfg.scenario == "spring-festival"

    say("sampling acceptances", 0.02)
    acc = _acceptance_times(rng, cfg)
    cal = _build_calendar(start_h, end_h, festival)

    def slow_hub_threshold(enter: F64, leave: F64) -> float:
        peak = _peak_presence(
            np.zeros(len(enter), dtype=np.int64), enter, leave, 1, start_h, cfg.days * 24
        )
        return float(_nice_threshold(peak)[0])

    say("routing items", 0.08)
    routes = _route(rng, net, acc, cal, incidents, festival, slow_hub_threshold)
    promise = _deadlines(acc, routes.product, routes.origin, routes.dest)
    explicit = rng.random(cfg.items) < EXPLICIT_PROMISE_SHARE
    ids = item_ids(routes.product, cfg.seed)
    thresholds = _thresholds(net, routes, start_h, cfg.days)

    say("building events", 0.25)
    events = _events_frame(routes, ids, promise, explicit, net, start_h, end_h)
    outcome = _outcome(routes, promise, end_h)
    say("complaints", 0.4)
    complaints = _complaints(
        np.random.Generator(np.random.PCG64(complaints_seq)),
        routes,
        ids,
        promise,
        outcome,
        start_h,
        end_h,
    )
    items = pl.DataFrame(
        {
            "item_id": ids,
            "product": _gather(PRODUCTS, routes.product),
            "origin": _gather(contract.PROVINCES, routes.origin),
            "destination": _gather(contract.PROVINCES, routes.dest),
            "accepted_at": _utc_series("accepted_at", acc),
            "promised_by": _promise_series("promised_by", promise),
            "explicit_promise": explicit,
            "delivered_at": _utc_series("delivered_at", outcome.delivered),
            "returned_at": _utc_series("returned_at", outcome.returned),
            "last_seen": _utc_series("last_seen", outcome.last_seen),
            "late": np.nan_to_num(outcome.late_h, nan=-1.0) >= 0,
            "stuck": routes.cut < len(SLOTS),
            "failed_attempts": outcome.failed_attempts,
        }
    )
    feeds = Feeds()
    if cfg.bad_rows > 0:
        say("text feeds and bad rows", 0.45)
        feeds = _feeds(
            np.random.Generator(np.random.PCG64(feeds_seq)), cfg, events, complaints, ids
        )
    result = SimResult(
        events=events,
        complaints=complaints,
        facilities=facilities_frame(net, thresholds),
        items=items,
        incidents=incidents,
        config=cfg,
        feeds=feeds,
    )
    return result


# --- writers -------------------------------------------------------------------------------------------

#: Files a run writes (glob patterns relative to the data folder); a new run replaces them.
GENERATED_FILES: Final = (
    "facilities.csv",
    "events/events-*.parquet",
    *EVENT_FEEDS,
    "complaints/complaints.parquet",
    *COMPLAINT_FEEDS,
)


def _jsonl_complaints(df: pl.DataFrame) -> str:
    """JSON lines with a real JSON boolean for ``valid`` (a bad row's "maybe" stays a string)."""
    booleans = {"true": True, "false": False}
    out = []
    for row in df.iter_rows(named=True):
        row["valid"] = booleans.get(row["valid"], row["valid"])
        out.append(orjson.dumps(row).decode())
    return "\n".join(out)


def write_data_folder(
    result: SimResult, out_dir: Path, report: Report | None = None
) -> dict[str, int]:
    """Write a data folder (events/, complaints/, facilities.csv); returns rows per file."""
    say = report or _no_report
    out = Path(out_dir)
    (out / "events").mkdir(parents=True, exist_ok=True)
    (out / "complaints").mkdir(parents=True, exist_ok=True)
    for pattern in GENERATED_FILES:
        for old in out.glob(pattern):
            old.unlink()
    written: dict[str, int] = {}
    result.facilities.write_csv(out / "facilities.csv")
    written["facilities.csv"] = result.facilities.height

    events = result.events
    moved = result.feeds.event_moved
    # One file per local (Asia/Shanghai) day; the frame is sorted by ts, so days are slices.
    sec = events["ts"].dt.epoch("s").to_numpy()
    day = (sec + LOCAL_OFFSET_H * 3600) // 86_400
    cuts = np.flatnonzero(np.diff(day)) + 1
    bounds = [0, *cuts.tolist(), len(day)]
    for j, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        part = events.slice(lo, hi - lo)
        if moved is not None:
            part = part.filter(~moved.slice(lo, hi - lo))
        name = f"events/events-{date(1970, 1, 1) + timedelta(days=int(day[lo]))}.parquet"
        part.write_parquet(out / name, compression="zstd", compression_level=1)
        written[name] = part.height
        say(f"writing {name}", 0.5 + 0.45 * (j + 1) / max(1, len(bounds) - 1))

    complaints = result.complaints
    if result.feeds.complaint_moved is not None:
        complaints = complaints.filter(~result.feeds.complaint_moved)
    complaints.write_parquet(
        out / "complaints/complaints.parquet", compression="zstd", compression_level=1
    )
    written["complaints/complaints.parquet"] = complaints.height

    for rel, frame in result.feeds.files.items():
        if rel.endswith(".csv"):
            text = frame.write_csv()
        elif rel.startswith("complaints/"):
            text = _jsonl_complaints(frame)
        else:
            text = frame.write_ndjson()
        lines = text.splitlines()
        header = 1 if rel.endswith(".csv") else 0
        for at, line in sorted(result.feeds.raw_lines.get(rel, []), reverse=True):
            lines.insert(header + at, line)
        (out / rel).write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[rel] = len(lines) - header
    say("done", 1.0)
    return written


# --- live mode -------------------------------------------------------------------------------------------

#: Average scans per item, used to turn an events/second rate into items/second.
EVENTS_PER_ITEM: Final = 8.3


@dataclass(frozen=True)
class LiveRun:
    """What a live append wrote."""

    path: Path
    events: int


def _iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC_TZ).isoformat(timespec="microseconds")


def live_append(
    out_dir: Path,
    rate: float,
    seed: int = 0,
    stop: threading.Event | None = None,
    max_events: int | None = None,
    seconds_per_hour: float = 2.0,
    clock: Callable[[], float] = time.time,
    tick: float = 0.25,
) -> LiveRun:
    """Append wall-clock events (~``rate``/s) as JSON lines to ``events/live-*.jsonl`` until stopped.

    New items are accepted continuously and travel their route in compressed time
    (``seconds_per_hour`` wall seconds per simulated hour); each scan is written when
    its wall-clock time comes, with that time as ``ts``. Stops when ``stop`` is set or
    after ``max_events``.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    stop = stop or threading.Event()
    net = build_network()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 3])))
    wall0 = clock()
    events_dir = Path(out_dir) / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(wall0, UTC_TZ).strftime("%Y%m%dT%H%M%SZ")
    path = events_dir / f"live-{stamp}-s{seed}.jsonl"
    # Serials start from the wall clock so consecutive runs do not reuse item ids.
    serial_base = int(wall0 * 1000) % _SERIAL_SPACE
    chunk_s = 10.0
    pending: list[tuple[float, int, dict[str, str | None]]] = []
    made_until = wall0
    made_items = 0
    seq = 0
    written = 0
    sim0 = wall0 / 3600.0

    def make_chunk(w_from: float, w_to: float) -> None:
        nonlocal made_items, seq
        m = max(1, math.ceil(rate * (w_to - w_from) / EVENTS_PER_ITEM))
        acc = np.sort(
            sim0 + ((w_from - wall0) + rng.random(m) * (w_to - w_from)) / seconds_per_hour
        )
        cal = _build_calendar(float(acc[0]) - 24.0, float(acc[-1]) + 24.0 * 30, festival=False)
        r = _route(rng, net, acc, cal, None, False)
        ids = item_ids(r.product, seed, S10_PREFIX_LIVE, base=serial_base + made_items)
        made_items += m
        promise = _deadlines(acc, r.product, r.origin, r.dest)
        frame = _events_frame(
            r, ids, promise, np.zeros(m, dtype=np.bool_), net, float(acc[0]), math.inf
        )
        due = wall0 + (frame["ts"].dt.epoch("us").to_numpy() / 3.6e9 - sim0) * seconds_per_hour
        rows = frame.drop("ts").with_columns(pl.col("promised_by").cast(pl.String)).to_dicts()
        for d, row in zip(due.tolist(), rows, strict=True):
            heapq.heappush(pending, (d, seq, row))
            seq += 1

    with path.open("ab") as fh:
        while not stop.is_set():
            now = clock()
            while made_until < now + chunk_s:
                make_chunk(made_until, made_until + chunk_s)
                made_until += chunk_s
            lines: list[bytes] = []
            while pending and pending[0][0] <= now:
                due_s, _, row = heapq.heappop(pending)
                rec = {**row, "ts": _iso_utc(due_s)}
                rec = {c: rec[c] for c in contract.EVENT_SCHEMA}
                lines.append(orjson.dumps(rec) + b"\n")
                if max_events is not None and written + len(lines) >= max_events:
                    stop.set()
                    break
            if lines:
                fh.write(b"".join(lines))
                fh.flush()
                written += len(lines)
            if not stop.is_set():
                stop.wait(tick)
    return LiveRun(path=path, events=written)
