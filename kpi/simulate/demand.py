"""Demand: products, acceptance volume (daily, weekly, festival cycles), deadlines, item ids."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Final

import numpy as np
import polars as pl

from kpi import contract
from kpi.simulate.calendar import HOLIDAYS, festival_factor, local_days
from kpi.simulate.config import (
    F64,
    I64,
    LOCAL_OFFSET_H,
    SimConfig,
    epoch_hours,
)
from kpi.simulate.network import REMOTE_REGIONS

PRODUCTS: Final = ("express", "standard", "economy")
PRODUCT_MIX: Final = (0.35, 0.50, 0.15)
#: S10 service indicators per product (EMS, parcel, registered).
S10_PREFIX: Final = ("EE", "CP", "RR")
#: Prefixes for items created by the live appender, so they never collide with a base run.
S10_PREFIX_LIVE: Final = ("EV", "CV", "RV")
S10_COUNTRY: Final = "CN"
_H_PER_S: Final = 1.0 / 3600.0
_EPOCH_DAY_WEEKDAY: Final = 3  # 1970-01-01 was a Thursday (Monday = 0)
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


# Acceptance intensity by local hour: counters open 08:00-20:00, online pickups trail off.
_HOUR_PROFILE: Final = (
    0.05, 0.03, 0.02, 0.02, 0.03, 0.05, 0.12, 0.30, 0.75, 1.00, 1.00, 0.95,
    0.80, 0.85, 0.95, 1.00, 0.95, 0.90, 0.80, 0.70, 0.55, 0.35, 0.20, 0.10,
)  # fmt: skip
_WEEKDAY_FACTOR: Final = (1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.75)


def acceptance_times(rng: np.random.Generator, cfg: SimConfig) -> F64:
    """Acceptance instants (sorted epoch hours) following daily, weekly and festival cycles."""
    start_h = epoch_hours(cfg.start)
    hours = cfg.days * 24
    bin_start = start_h + np.arange(hours, dtype=np.float64)
    mid = bin_start + 0.5
    local_day = local_days(mid)
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


def deadlines(acc: F64, product: I64, origin: I64, dest: I64) -> F64:
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


# --- identifiers -----------------------------------------------------------------------------

# Serial numbers are an affine permutation of 0..10^8-1, so ids look random but never repeat.
_SERIAL_MULT: Final = 7_919_333
SERIAL_SPACE: Final = 10**8


def item_ids(
    product: I64, seed: int, prefixes: tuple[str, ...] = S10_PREFIX, base: int = 0
) -> pl.Series:
    """Unique, valid S10 ids for items ``base .. base+n`` (service indicator by product)."""
    n = len(product)
    offset = (seed * 2_654_435_761 + 12_345_678) % SERIAL_SPACE
    i = np.arange(base, base + n, dtype=np.int64) % SERIAL_SPACE
    serial = (_SERIAL_MULT * i + offset) % SERIAL_SPACE
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
