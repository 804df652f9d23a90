"""``kpi.kpis.exprs.periods`` (per-minute truncation) equals truncating every value."""

from __future__ import annotations

import contextlib
import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi.kpis.exprs import Window, period, periods

ZONES = [
    "UTC",
    "Asia/Shanghai",
    "Asia/Kathmandu",  # +05:45 (+05:30 before 1986)
    "America/St_Johns",  # -03:30 with DST
    "Australia/Lord_Howe",  # half-hour DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "Europe/London",
    "America/New_York",
    "Pacific/Apia",  # skipped 2011-12-30
    "Europe/Amsterdam",  # +00:19:32 before 1937: offsets with seconds
]
EVERY = ["1h", "1d", "1w", "1mo"]


def direct(s: pl.Series, tz: str, every: str) -> pl.Series:
    """The reference: each value converted and truncated on its own."""
    return s.dt.convert_time_zone(tz).dt.truncate(every)


def outcome(fn: object, *args: object) -> object:
    """The values, or the error's class when the truncation refuses (a non-existent time)."""
    try:
        return fn(*args).to_list()  # type: ignore[operator]
    except pl.exceptions.ComputeError as exc:
        return type(exc)


@settings(max_examples=60, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    every=st.sampled_from(EVERY),
    start=st.datetimes(min_value=dt.datetime(1880, 1, 1), max_value=dt.datetime(2060, 1, 1)),
    span_minutes=st.integers(min_value=1, max_value=400_000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    nulls=st.booleans(),
)
def test_periods_equal_direct_truncation(
    tz: str, every: str, start: dt.datetime, span_minutes: int, seed: int, nulls: bool
) -> None:
    base = int(start.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)
    offsets = pl.int_range(0, 5000, eager=True).sample(5000, seed=seed, with_replacement=True)
    # Microsecond instants spread over the span (many share a minute, some sit on edges).
    us = base + (offsets * 7_919_000_003 + seed) % (span_minutes * 60_000_000)
    s = us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if nulls:
        s = s.scatter([0, 17, 4999], None)
    assert outcome(periods, s, tz, every) == outcome(direct, s, tz, every)
    if s.len():
        with contextlib.suppress(pl.exceptions.ComputeError):
            assert periods(s, tz, every).dtype == pl.Datetime("us", tz)


@pytest.mark.parametrize("tz", ["Asia/Kathmandu", "Europe/London", "America/New_York"])
def test_every_minute_around_transitions(tz: str) -> None:
    """Every minute (and the microsecond before it) of days with offset changes."""
    days = [dt.datetime(1986, 1, 1), dt.datetime(2026, 3, 8), dt.datetime(2026, 3, 29)]
    days += [dt.datetime(2026, 10, 25), dt.datetime(2026, 11, 1)]
    frames = []
    for d in days:
        mins = pl.datetime_range(
            d - dt.timedelta(days=1), d + dt.timedelta(days=1), "1m", eager=True, time_zone="UTC"
        )
        frames += [mins, mins - dt.timedelta(microseconds=1)]
    s = pl.concat(frames).cast(pl.Datetime("us", "UTC"))
    for every in EVERY:
        assert outcome(periods, s, tz, every) == outcome(direct, s, tz, every)
        # Each day on its own: where the reference answers, the answer is the same.
        for part in s.to_frame("t").group_by(pl.col("t").dt.date().alias("d")).agg("t")["t"]:
            assert outcome(periods, part, tz, every) == outcome(direct, part, tz, every)


def test_period_expression_in_a_frame() -> None:
    ts = pl.datetime_range(
        dt.datetime(2027, 1, 1), dt.datetime(2027, 1, 9), "7s", eager=True, time_zone="UTC"
    ).cast(pl.Datetime("us", "UTC"))
    w = Window(as_of=dt.datetime(2027, 2, 1, tzinfo=dt.UTC), granularity="day", tz="Asia/Shanghai")
    out = pl.DataFrame({"t": ts}).lazy().with_columns(period("t", w)).collect()
    assert out["period"].to_list() == direct(ts, "Asia/Shanghai", "1d").to_list()
    assert out["period"].dtype == pl.Datetime("us", "Asia/Shanghai")
