"""Service standards -> promised deadline: cut-off, working days, holidays, zones, time zones.

Every hand-computed case is checked against both the engine and the naive reference.
The default standard is in Asia/Shanghai (UTC+8, no DST): express 1/2/4 calendar days,
cut-off 17:00; standard 2/4/7 working days (Mon-Sat), cut-off 15:00, Spring Festival
holidays (2027-02-05 .. 2027-02-11). 2027-01-11 is a Monday.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import reference
import stage_reference
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import utc

from kpi.contract import UTC
from kpi.standards import (
    DEFAULT_STANDARDS,
    STANDARDS_FILE,
    ProductStandard,
    ReferenceFileError,
    ServiceStandards,
    StageTargets,
    ZoneDays,
    computed_deadline_expr,
    dispatch_deadline_expr,
    load_standards,
    promised_by_expr,
    with_dispatch_by,
    with_promised_by,
)

SH = dt.timezone(dt.timedelta(hours=8))


def end_of_local_day(day: str, tz: dt.tzinfo = SH) -> dt.datetime:
    """The last microsecond of a local day, in UTC."""
    d = dt.date.fromisoformat(day) + dt.timedelta(days=1)
    return dt.datetime.combine(d, dt.time(0), tzinfo=tz).astimezone(dt.UTC) - dt.timedelta(
        microseconds=1
    )


def local(text: str, tz: dt.tzinfo = SH) -> dt.datetime:
    """A local wall-clock time as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(dt.UTC)


def engine_deadlines(
    rows: list[tuple[dt.datetime, str | None, str | None, str | None]],
    standards: ServiceStandards = DEFAULT_STANDARDS,
) -> list[dt.datetime | None]:
    frame = pl.DataFrame(
        rows,
        schema={
            "accepted_at": UTC,
            "product": pl.String,
            "origin": pl.String,
            "destination": pl.String,
        },
        orient="row",
    )
    per_row = frame.select(computed_deadline_expr(standards).alias("d"))["d"]
    # The lifecycle's table-driven version must give the same deadlines, row for row.
    given = frame.with_columns(promised_by_given=pl.lit(None, UTC))
    table = with_promised_by(given.lazy(), standards).collect()["promised_by"]
    assert table.to_list() == per_row.to_list()
    # The stage tables' end of the deposit day: the keyed version equals the expression.
    dispatch = frame.select(dispatch_deadline_expr(standards).alias("d"))["d"]
    assert with_dispatch_by(frame, standards)["dispatch_by"].to_list() == dispatch.to_list()
    # typed as the event timestamps (aware datetimes compare equal across zone names)
    assert per_row.dtype == table.dtype == UTC
    return per_row.to_list()


def both(
    accepted_at: dt.datetime,
    product: str | None = "express",
    origin: str | None = "CN-BJ",
    destination: str | None = "CN-SH",
    standards: ServiceStandards = DEFAULT_STANDARDS,
) -> dt.datetime | None:
    """The deadline from the engine, asserting the reference agrees."""
    (got,) = engine_deadlines([(accepted_at, product, origin, destination)], standards)
    assert got == reference.deadline(accepted_at, product, origin, destination, standards)
    return got


# --- cut-off -------------------------------------------------------------------


def test_cutoff_exactly_at_boundary_is_same_day() -> None:
    # 17:00:00 local is not after the cut-off: deposit Monday, +2 days (other region).
    assert both(local("2027-01-11T17:00:00")) == end_of_local_day("2027-01-13")


def test_one_microsecond_after_cutoff_is_next_day() -> None:
    assert both(local("2027-01-11T17:00:00.000001")) == end_of_local_day("2027-01-14")


def test_midnight_and_last_microsecond_of_day() -> None:
    assert both(local("2027-01-11T00:00:00")) == end_of_local_day("2027-01-13")
    assert both(local("2027-01-11T23:59:59.999999")) == end_of_local_day("2027-01-14")


def test_deadline_is_last_microsecond_of_local_day() -> None:
    got = both(local("2027-01-11T09:00"))
    assert got == utc("2027-01-13T15:59:59.999999")
    assert got is not None
    assert got.astimezone(SH).time() == dt.time(23, 59, 59, 999999)


# --- zones -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "origin", "destination", "last_day"),
    [
        ("express", "CN-BJ", "CN-BJ", "2027-01-12"),  # same region: 1 day
        ("express", "CN-BJ", "CN-SH", "2027-01-13"),  # other region: 2 days
        ("express", "CN-BJ", "CN-XZ", "2027-01-15"),  # remote: 4 days
        ("express", "CN-XJ", "CN-BJ", "2027-01-13"),  # remote origin does not count
        ("express", "CN-XZ", "CN-XZ", "2027-01-15"),  # remote wins over same region
        ("standard", "CN-BJ", "CN-BJ", "2027-01-13"),  # 2 working days
        ("standard", "CN-BJ", "CN-SH", "2027-01-15"),  # 4 working days
        ("standard", "CN-BJ", "CN-QH", "2027-01-19"),  # 7 working days, Sunday 17th skipped
        ("economy", "CN-BJ", "CN-SH", "2027-01-18"),  # 6 working days, Sunday 17th skipped
    ],
)
def test_days_per_zone(product: str, origin: str, destination: str, last_day: str) -> None:
    assert both(local("2027-01-11T10:00"), product, origin, destination) == end_of_local_day(
        last_day
    )


# --- working days and holidays -----------------------------------------------------


def test_working_days_skip_sunday_but_calendar_days_do_not() -> None:
    friday = local("2027-01-15T10:00")
    # standard, same region: Sat 16th, (Sun 17th skipped), Mon 18th.
    assert both(friday, "standard", "CN-BJ", "CN-BJ") == end_of_local_day("2027-01-18")
    # express counts calendar days: Saturday acceptance + 1 = Sunday.
    assert both(local("2027-01-16T10:00"), "express", "CN-BJ", "CN-BJ") == end_of_local_day(
        "2027-01-17"
    )


def test_deposit_on_sunday_counts_from_monday() -> None:
    sunday = local("2027-01-17T10:00")
    assert both(sunday, "standard", "CN-BJ", "CN-BJ") == end_of_local_day("2027-01-20")


def test_after_cutoff_on_saturday_counts_from_next_working_day() -> None:
    # Saturday 15:30 is after the 15:00 cut-off: next day is Sunday -> Monday.
    late_saturday = local("2027-01-16T15:30")
    assert both(late_saturday, "standard", "CN-BJ", "CN-BJ") == end_of_local_day("2027-01-20")
    # Before the cut-off, Saturday itself is the day of deposit.
    early_saturday = local("2027-01-16T15:00")
    assert both(early_saturday, "standard", "CN-BJ", "CN-BJ") == end_of_local_day("2027-01-19")


def test_holidays_are_skipped() -> None:
    # Thu 4 Feb 2027; Spring Festival 5..11 Feb (7th also a Sunday): +1 = Fri 12, +2 = Sat 13.
    thursday = local("2027-02-04T10:00")
    assert both(thursday, "standard", "CN-BJ", "CN-BJ") == end_of_local_day("2027-02-13")
    # Express runs through the holidays.
    assert both(thursday, "express", "CN-BJ", "CN-BJ") == end_of_local_day("2027-02-05")


def test_deposit_during_holiday_counts_from_first_working_day_after() -> None:
    # Mon 8 Feb is a holiday -> deposit Fri 12; +1 = Sat 13, +2 = Mon 15 (Sun 14 skipped).
    assert both(local("2027-02-08T10:00"), "standard", "CN-BJ", "CN-BJ") == end_of_local_day(
        "2027-02-15"
    )


def test_holidays_also_skipped_by_calendar_day_products() -> None:
    standards = ServiceStandards(
        time_zone="UTC",
        products={
            "parcel": ProductStandard(
                cutoff=dt.time(12, 0),
                days=ZoneDays(same_region=1, other_region=2, remote=3),
                holidays=(dt.date(2027, 1, 12),),
            )
        },
    )
    # Monday + 1 calendar day, Tuesday 12th is a holiday -> Wednesday.
    got = both(utc("2027-01-11T10:00"), "parcel", "A", "A", standards)
    assert got == end_of_local_day("2027-01-13", dt.UTC)
    # Sunday still counts for a calendar-day product.
    got = both(utc("2027-01-16T10:00"), "parcel", "A", "A", standards)
    assert got == end_of_local_day("2027-01-17", dt.UTC)


# --- time zones --------------------------------------------------------------------


def test_acceptance_late_utc_is_next_day_in_shanghai() -> None:
    # 2027-01-11T23:30Z = 2027-01-12 07:30 in Shanghai: deposit the 12th, +2 days.
    got = both(utc("2027-01-11T23:30"))
    assert got == end_of_local_day("2027-01-14")
    assert got == utc("2027-01-14T15:59:59.999999")
    # The same instant under a UTC standard: the 11th is after the 17:00 cut-off -> 12th.
    in_utc = DEFAULT_STANDARDS.model_copy(update={"time_zone": "UTC"})
    assert both(utc("2027-01-11T23:30"), standards=in_utc) == end_of_local_day("2027-01-14", dt.UTC)
    assert both(utc("2027-01-11T16:30"), standards=in_utc) == end_of_local_day("2027-01-13", dt.UTC)


def test_cutoff_in_shanghai_local_time() -> None:
    # 09:00Z = 17:00 Shanghai (on time for the day), 09:00:00.000001Z is after it.
    assert both(utc("2027-01-11T09:00")) == end_of_local_day("2027-01-13")
    assert both(utc("2027-01-11T09:00:00.000001")) == end_of_local_day("2027-01-14")


def test_product_time_zone_overrides_standard_time_zone() -> None:
    standards = ServiceStandards(
        time_zone="Asia/Shanghai",
        products={
            "intl": ProductStandard(
                cutoff=dt.time(18, 0),
                days=ZoneDays(same_region=0, other_region=1, remote=2),
                time_zone="America/New_York",
            )
        },
    )
    ny = dt.timezone(dt.timedelta(hours=-5))  # EST in January
    # 17:59 New York, same region, 0 days: the deadline is the end of that very day.
    got = both(local("2027-01-11T17:59", ny), "intl", "US-NY", "US-NY", standards)
    assert got == end_of_local_day("2027-01-11", ny)
    got = both(local("2027-01-11T18:00:01", ny), "intl", "US-NY", "US-NY", standards)
    assert got == end_of_local_day("2027-01-12", ny)


def test_standards_without_products_promise_nothing() -> None:
    """No product has a standard: no deadline (on time unknown), still a UTC timestamp column."""
    empty = ServiceStandards(products={})
    assert engine_deadlines([(utc("2027-01-11T02:00"), "express", "CN-BJ", "CN-SH")], empty) == [
        None
    ]


@pytest.mark.parametrize("typo_in", ["standard", "product"])
def test_unknown_time_zone_is_refused_when_the_standards_load(typo_in: str) -> None:
    """A misspelt zone fails when the file is read, naming the zone, not later per batch."""
    days = ZoneDays(same_region=1, other_region=2, remote=4)

    def make(standard_tz: str, product_tz: str | None) -> ServiceStandards:
        product = ProductStandard(cutoff=dt.time(17), days=days, time_zone=product_tz)
        return ServiceStandards(time_zone=standard_tz, products={"express": product})

    assert make("Asia/Shanghai", "America/New_York").tz_of("express") == "America/New_York"
    bad = ("Asia/Shangai", None) if typo_in == "standard" else ("Asia/Shanghai", "America/NewYork")
    with pytest.raises(ValueError, match=r"unknown time zone '(Asia/Shangai|America/NewYork)'"):
        make(*bad)


# --- explicit promise and unknown products --------------------------------------------


def test_explicit_promised_by_wins(kit) -> None:
    given_promise = utc("2027-01-20T00:00")
    rows = [
        kit.ev("A", "accepted", "2027-01-11T02:00", promised_by=given_promise),
        kit.ev("B", "accepted", "2027-01-11T02:00"),
        kit.ev("C", "accepted", "2027-01-11T02:00", product="mystery", promised_by=given_promise),
        kit.ev("D", "accepted", "2027-01-11T02:00", product="mystery"),
    ]
    items = kit.lifecycle(rows)
    assert items["A"]["promised_by"] == given_promise
    assert items["B"]["promised_by"] == end_of_local_day("2027-01-13")
    assert items["C"]["promised_by"] == given_promise
    assert items["D"]["promised_by"] is None  # unknown product: never a guessed promise
    assert items == reference.lifecycle(rows, DEFAULT_STANDARDS)


def test_unknown_product_has_no_deadline() -> None:
    assert both(local("2027-01-11T10:00"), "mystery") is None
    assert both(local("2027-01-11T10:00"), None) is None


# --- property: engine == reference on random acceptances ------------------------------

CUSTOM = ServiceStandards(
    time_zone="Asia/Kolkata",
    remote_regions=("R",),
    products={
        "cal": ProductStandard(
            cutoff=dt.time(0, 0),
            days=ZoneDays(same_region=0, other_region=3, remote=9),
            holidays=(dt.date(2027, 1, 1), dt.date(2027, 1, 2), dt.date(2027, 3, 6)),
        ),
        "work": ProductStandard(
            cutoff=dt.time(23, 59, 59),
            days=ZoneDays(same_region=1, other_region=5, remote=12),
            working_days=True,
            holidays=(dt.date(2026, 12, 31), dt.date(2027, 1, 4), dt.date(2027, 1, 5)),
            time_zone="UTC",
        ),
        "tokyo": ProductStandard(
            cutoff=dt.time(9, 30),
            days=ZoneDays(same_region=2, other_region=2, remote=2),
            working_days=True,
            time_zone="Asia/Tokyo",
        ),
    },
)

instants = st.datetimes(
    min_value=dt.datetime(2026, 12, 20), max_value=dt.datetime(2027, 3, 10)
).map(lambda d: d.replace(tzinfo=dt.UTC))
regions = st.sampled_from(["CN-BJ", "CN-SH", "CN-XZ", "CN-QH", "R", "A"])


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            instants,
            st.sampled_from(["express", "standard", "economy", "cal", "work", "tokyo", "nope"]),
            regions,
            regions,
        ),
        min_size=1,
        max_size=40,
    ),
    custom=st.booleans(),
)
def test_engine_deadline_matches_reference(
    rows: list[tuple[dt.datetime, str, str, str]], custom: bool
) -> None:
    standards = CUSTOM if custom else DEFAULT_STANDARDS
    got = engine_deadlines(list(rows), standards)
    want = [reference.deadline(*row, standards) for row in rows]
    assert got == want


# --- daylight saving at midnight, cut-offs with minutes and seconds -------------------

HAVANA = ZoneInfo("America/Havana")
DST = ServiceStandards(
    time_zone="America/Havana",
    products={
        "hav": ProductStandard(
            cutoff=dt.time(17, 30, 15),
            days=ZoneDays(same_region=0, other_region=1, remote=2),
        ),
        "scl": ProductStandard(
            cutoff=dt.time(0, 0, 30),
            days=ZoneDays(same_region=1, other_region=2, remote=3),
            working_days=True,
            time_zone="America/Santiago",
        ),
    },
)


def test_day_ending_at_a_skipped_midnight_ends_at_the_transition() -> None:
    # Cuba springs forward at 00:00 on 2027-03-14 (00:00 CST -> 01:00 CDT): local midnight
    # never happens, the day of 03-13 ends at 05:00 UTC (midnight at CST, UTC-5).
    got = both(local("2027-03-13T10:00:00", HAVANA), "hav", "A", "A", DST)
    assert got == dt.datetime(2027, 3, 14, 4, 59, 59, 999999, tzinfo=dt.UTC)


def test_day_ending_at_a_doubled_midnight_ends_at_its_first_occurrence() -> None:
    # Cuba falls back at 01:00 CDT on 2026-11-01 to 00:00 CST: midnight happens twice,
    # the day of 10-31 ends at the first one, 04:00 UTC (CDT, UTC-4), not 05:00.
    got = both(local("2026-10-31T09:00:00", HAVANA), "hav", "A", "A", DST)
    assert got == dt.datetime(2026, 11, 1, 3, 59, 59, 999999, tzinfo=dt.UTC)


def test_day_whose_last_hour_is_skipped_ends_at_midnight() -> None:
    # Greenland springs forward at 23:00 on Saturday 2026-03-28 (23:00 -02 -> 00:00 -01):
    # 23:xx never happens, midnight does; the day of 03-28 ends at it, 01:00 UTC.
    nuuk = ZoneInfo("America/Nuuk")
    standards = ServiceStandards(
        time_zone="America/Nuuk",
        products={
            "gl": ProductStandard(
                cutoff=dt.time(17), days=ZoneDays(same_region=1, other_region=2, remote=3)
            )
        },
    )
    got = both(local("2026-03-27T10:00:00", nuuk), "gl", "A", "A", standards)
    assert got == dt.datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=dt.UTC)
    # the day before (no transition) ends at midnight -02
    got = both(local("2026-03-26T10:00:00", nuuk), "gl", "A", "A", standards)
    assert got == dt.datetime(2026, 3, 28, 1, 59, 59, 999999, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("wall", "last_day"),
    [
        ("2027-01-11T17:30:15", "2027-01-11"),  # exactly the cut-off: same day
        ("2027-01-11T17:30:15.000001", "2027-01-12"),
        ("2027-01-11T17:30:14", "2027-01-11"),
        ("2027-01-11T17:00:20", "2027-01-11"),  # after 17:00:15, before 17:30:15
        ("2027-01-11T17:29:00", "2027-01-11"),  # minutes count: 17:29 is before 17:30:15
    ],
)
def test_cutoff_with_minutes_and_seconds(wall: str, last_day: str) -> None:
    got = both(local(wall, HAVANA), "hav", "A", "A", DST)
    assert got == end_of_local_day(last_day, HAVANA)


dst_instants = st.one_of(
    st.datetimes(min_value=dt.datetime(2026, 10, 25), max_value=dt.datetime(2026, 11, 5)),
    st.datetimes(min_value=dt.datetime(2027, 3, 8), max_value=dt.datetime(2027, 3, 16)),
    st.datetimes(min_value=dt.datetime(2027, 3, 30), max_value=dt.datetime(2027, 4, 6)),
    st.datetimes(min_value=dt.datetime(2027, 9, 1), max_value=dt.datetime(2027, 9, 8)),
).map(lambda d: d.replace(tzinfo=dt.UTC))


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(dst_instants, st.sampled_from(["hav", "scl"]), regions, regions),
        min_size=1,
        max_size=30,
    )
)
def test_engine_deadline_matches_reference_across_dst(
    rows: list[tuple[dt.datetime, str, str, str]],
) -> None:
    got = engine_deadlines(list(rows), DST)
    assert got == [reference.deadline(*row, DST) for row in rows]


# --- the explicit promise, the dispatch deadline ---------------------------------------


def test_promised_by_expr_prefers_the_given_promise_and_agrees_with_the_table() -> None:
    given_promise = utc("2027-02-01T00:00")
    frame = pl.DataFrame(
        [
            (utc("2027-01-11T02:00"), "express", "CN-BJ", "CN-SH", given_promise),
            (utc("2027-01-11T02:00"), "express", "CN-BJ", "CN-SH", None),
            (utc("2027-01-11T02:00"), "mystery", "CN-BJ", "CN-SH", given_promise),
            (utc("2027-01-11T02:00"), "mystery", "CN-BJ", "CN-SH", None),
        ],
        schema={
            "accepted_at": UTC,
            "product": pl.String,
            "origin": pl.String,
            "destination": pl.String,
            "promised_by_given": UTC,
        },
        orient="row",
    )
    got = frame.select(promised_by_expr(DEFAULT_STANDARDS))
    assert got.columns == ["promised_by"] and got.schema["promised_by"] == UTC
    assert got["promised_by"].to_list() == [
        given_promise,
        end_of_local_day("2027-01-13"),  # Monday 10:00 Shanghai, other region: +2 days
        given_promise,
        None,
    ]
    table = with_promised_by(frame.lazy(), DEFAULT_STANDARDS).collect()["promised_by"]
    assert table.to_list() == got["promised_by"].to_list()


def dispatch(rows: list[tuple[dt.datetime, str | None]], standards: ServiceStandards) -> list:
    frame = pl.DataFrame(rows, schema={"accepted_at": UTC, "product": pl.String}, orient="row")
    got = frame.select(dispatch_deadline_expr(standards).alias("d"))["d"]
    assert got.dtype == UTC
    return got.to_list()


def test_dispatch_deadline_is_the_end_of_the_deposit_day_in_calendar_days() -> None:
    rows = [
        (local("2027-01-11T17:00"), "express"),  # at the cut-off: that day
        (local("2027-01-11T17:00:00.000001"), "express"),  # after it: the next day
        (local("2027-01-16T15:30"), "standard"),  # Saturday after 15:00: Sunday counts
        (local("2027-02-08T10:00"), "economy"),  # a holiday counts too
        (local("2027-01-11T10:00"), "mystery"),  # no standard: no deadline
        (local("2027-01-11T10:00"), None),
    ]
    assert dispatch(rows, DEFAULT_STANDARDS) == [
        end_of_local_day("2027-01-11"),
        end_of_local_day("2027-01-12"),
        end_of_local_day("2027-01-17"),
        end_of_local_day("2027-02-08"),
        None,
        None,
    ]
    by_reference = [stage_reference.dispatch_by(t, p, DEFAULT_STANDARDS) for t, p in rows]
    assert dispatch(rows, DEFAULT_STANDARDS) == by_reference


def test_dispatch_deadline_in_the_products_zone_with_a_cutoff_in_seconds() -> None:
    # "scl" (Santiago, UTC-3 in January) cuts off at 00:00:30, "hav" (Havana, UTC-5) at
    # 17:30:15; Havana's doubled midnight of 2026-11-01 ends 10-31 at its first occurrence
    # (CDT, 04:00 UTC), as for the delivery promise.
    santiago = ZoneInfo("America/Santiago")
    rows = [
        (local("2027-01-11T00:00:30", santiago), "scl"),
        (local("2027-01-11T00:00:30.000001", santiago), "scl"),
        (local("2027-01-11T17:30:15", HAVANA), "hav"),
        (local("2027-01-11T17:30:16", HAVANA), "hav"),
        (local("2026-10-31T09:00", HAVANA), "hav"),
        (local("2027-03-13T10:00", HAVANA), "hav"),
    ]
    assert dispatch(rows, DST) == [
        end_of_local_day("2027-01-11", santiago),
        end_of_local_day("2027-01-12", santiago),
        end_of_local_day("2027-01-11", HAVANA),
        end_of_local_day("2027-01-12", HAVANA),
        dt.datetime(2026, 11, 1, 3, 59, 59, 999999, tzinfo=dt.UTC),
        # midnight of 2027-03-14 is skipped (00:00 CST -> 01:00 CDT): the deposit day ends
        # at the transition, 05:00 UTC, as the delivery promise's day does (was: null)
        dt.datetime(2027, 3, 14, 4, 59, 59, 999999, tzinfo=dt.UTC),
    ]
    by_reference = [stage_reference.dispatch_by(t, p, DST) for t, p in rows]
    assert dispatch(rows, DST) == by_reference
    keyed = pl.DataFrame(rows, schema={"accepted_at": UTC, "product": pl.String}, orient="row")
    assert with_dispatch_by(keyed, DST)["dispatch_by"].to_list() == by_reference


# --- the standards file ---------------------------------------------------------------

STANDARDS_YAML = """
time_zone: Europe/Paris
remote_regions: [FR-COR]
products:
  lettre:
    cutoff: "16:30:00"
    days: {same_region: 1, other_region: 2, remote: 4}
    working_days: true
    holidays: [2027-05-01]
  colis:
    cutoff: "12:00:00"
    days: {same_region: 2, other_region: 3, remote: 5}
    time_zone: Europe/London
stages:
  dwell_hours: {processing: 6, default: 12}
  leg_hours: {default: 24}
"""


def test_a_folder_without_standards_gets_the_default(tmp_path: Path) -> None:
    assert load_standards(tmp_path) is DEFAULT_STANDARDS


def test_the_standards_file_is_read_whole(tmp_path: Path) -> None:
    (tmp_path / STANDARDS_FILE).write_text(STANDARDS_YAML)
    got = load_standards(tmp_path)
    assert got == ServiceStandards(
        time_zone="Europe/Paris",
        remote_regions=("FR-COR",),
        products={
            "lettre": ProductStandard(
                cutoff=dt.time(16, 30),
                days=ZoneDays(same_region=1, other_region=2, remote=4),
                working_days=True,
                holidays=(dt.date(2027, 5, 1),),
            ),
            "colis": ProductStandard(
                cutoff=dt.time(12),
                days=ZoneDays(same_region=2, other_region=3, remote=5),
                time_zone="Europe/London",
            ),
        },
        stages=StageTargets(
            dwell_hours={"processing": 6, "default": 12}, leg_hours={"default": 24}
        ),
    )
    assert (got.tz_of("lettre"), got.tz_of("colis")) == ("Europe/Paris", "Europe/London")
    assert got.deadline_days() == [1, 2, 3, 4, 5]
    assert DEFAULT_STANDARDS.deadline_days() == [1, 2, 3, 4, 6, 7, 10]


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        # every problem listed, each with where it is
        (
            STANDARDS_YAML.replace("remote: 4", "remote: 61").replace(
                "Europe/London", "Europe/Londn"
            ),
            [
                "products.lettre.days.remote: Input should be less than or equal to 60",
                "products.colis.time_zone: Value error, unknown time zone 'Europe/Londn'",
            ],
        ),
        (
            "- a list\n- not a mapping\n",
            ["file: Input should be a valid dictionary or instance of ServiceStandards"],
        ),
        ("products: {}\nshipping: fast\n", ["shipping: Extra inputs are not permitted"]),
    ],
)
def test_a_bad_standards_file_is_refused_with_every_reason(
    tmp_path: Path, text: str, problems: list[str]
) -> None:
    (tmp_path / STANDARDS_FILE).write_text(text)
    with pytest.raises(ReferenceFileError) as info:
        load_standards(tmp_path)
    err = info.value
    assert err.file == STANDARDS_FILE
    assert [p.split(" [")[0] for p in err.problems] == problems
    assert str(err) == f"{STANDARDS_FILE}: " + "; ".join(err.problems)


@pytest.mark.parametrize("content", [b"products: {a: [\n", b"products:\n  \xff\xfe: 1\n"])
def test_an_unreadable_standards_file_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STANDARDS_FILE).write_bytes(content)
    with pytest.raises(ReferenceFileError) as info:
        load_standards(tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith("unreadable: ") and info.value.file == STANDARDS_FILE
    (tmp_path / STANDARDS_FILE).unlink()
    (tmp_path / STANDARDS_FILE).mkdir()  # a folder where the file should be
    with pytest.raises(ReferenceFileError, match=r"unreadable: "):
        load_standards(tmp_path)


def test_stage_targets_pick_the_types_own_target_else_the_default() -> None:
    both_set = StageTargets(dwell_hours={"delivery": 3.5, "default": 8}, leg_hours={"default": 30})
    assert [both_set.dwell_target(t) for t in ("delivery", "processing", None)] == [3.5, 8, 8]
    assert both_set.leg_target() == 30
    no_default = StageTargets(dwell_hours={"collection": 2})
    assert [no_default.dwell_target(t) for t in ("collection", "delivery", None)] == [2, None, None]
    assert no_default.leg_target() is None and StageTargets().dwell_target("collection") is None


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (
            {"dwell_hours": {"hub": 1, "depot": 2}},
            "unknown facility type(s) 'depot', 'hub': keys are the facility types "
            "collection, processing, delivery, default",
        ),
        (
            {"leg_hours": {"CN-GD": 1, "air": 2}},
            "unknown key(s) 'CN-GD', 'air': the only key is default",
        ),
        ({"dwell_hours": {"default": 0}}, "greater than 0"),
        ({"leg_hours": {"default": 24 * 60 + 0.5}}, "less than or equal to 1440"),
    ],
)
def test_stage_targets_refuse_unknown_keys_and_hours_out_of_range(
    targets: dict[str, dict[str, float]], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        StageTargets.model_validate(targets)
    assert message in str(info.value)
    # the edges themselves are allowed
    assert StageTargets(dwell_hours={"default": 24 * 60}).dwell_target(None) == 24 * 60
