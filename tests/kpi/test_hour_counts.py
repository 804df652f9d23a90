"""``kpi.kpis.hour_counts``: the counts added up from hours equal grouping the rows."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kpi.kpis.exprs import PERIOD, US_PER_HOUR, Window
from kpi.kpis.functions import FLOW_FLAGS, count_exprs
from kpi.kpis.hour_counts import TIME_COLUMNS, HourCounts

ZONES = [
    "UTC",
    "Asia/Shanghai",
    "Asia/Kolkata",  # +05:30: a day's boundary splits an hour
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30 with DST
    "Australia/Lord_Howe",  # half-hour DST
    "America/New_York",
    "Europe/London",
]
EVERY = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo"}
DIMS = ("product", "origin", "destination")
#: Spans the March and April changes of offset (New York, London, Lord Howe, St John's).
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
SPAN_US = 50 * 86_400_000_000


def lifecycle(seed: int, n: int) -> pl.DataFrame:
    """``n`` items with random times (some missing) and Enum dimensions."""
    rows = pl.DataFrame({"i": range(n)}).with_columns(
        (pl.col("i").hash(seed + k) % SPAN_US).alias(f"_{t}") for k, t in enumerate(TIME_COLUMNS)
    )
    # One in seven missing; one in three on a whole hour (an edge of the window's hours).
    us = [
        pl.when(pl.col(f"_{t}") % 3 == 0)
        .then(pl.col(f"_{t}") // US_PER_HOUR * US_PER_HOUR)
        .otherwise(pl.col(f"_{t}"))
        for t in TIME_COLUMNS
    ]
    times = [
        pl.when(pl.col(f"_{t}") % 7 != 0).then(pl.lit(T0) + pl.duration(microseconds=u)).alias(t)
        for t, u in zip(TIME_COLUMNS, us, strict=True)
    ]
    names = {"product": ["a", "b", "c"], "origin": ["o1", "o2"], "destination": ["x", "y", "z"]}
    dims = [
        (pl.col("i").hash(seed + 9 + k) % len(v))
        .replace_strict(dict(enumerate(v)), return_dtype=pl.Enum(v))
        .alias(d)
        for k, (d, v) in enumerate(names.items())
    ]
    extra = [
        (pl.lit(T0) + pl.duration(hours=pl.col("i").hash(seed + 20) % (60 * 24))).alias(
            "promised_by"
        ),
        pl.when(pl.col("i") % 5 == 0)
        .then(pl.lit("delivered"))
        .otherwise(pl.lit("failed_attempt"))
        .alias("first_attempt_outcome"),
    ]
    return rows.select(*dims, *times, *extra)


def grouped(
    lc: pl.DataFrame,
    t: str,
    dim: tuple[str, str] | None,
    w: Window,
    wanted: dict[str, pl.Expr | None],
) -> pl.DataFrame:
    """The reference: every row in the window, its bucket truncated on its own, grouped."""
    c = pl.col(t)
    cond = c.is_not_null() & (c <= w.as_of)
    if w.start is not None:
        cond &= c >= w.start
    if w.end is not None:
        cond &= c < w.end
    keys = [pl.col(dim[1]).alias(dim[0])] if dim else []
    if w.granularity:
        every = EVERY[w.granularity]
        keys.append(c.dt.convert_time_zone(w.tz).dt.truncate(every).alias(PERIOD))
    rows = lc.filter(cond).with_columns(keys)
    names = [e.meta.output_name() for e in keys]
    return rows.group_by(names).agg(count_exprs(wanted)) if wanted else rows.select(names).unique()


def ordered(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns)


instant = st.one_of(
    st.integers(0, SPAN_US).map(lambda us: T0 + dt.timedelta(microseconds=us)),
    st.integers(0, SPAN_US // US_PER_HOUR).map(lambda h: T0 + dt.timedelta(hours=h)),
)


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 1000),
    tz=st.sampled_from(ZONES),
    granularity=st.sampled_from([None, *EVERY]),
    dim=st.sampled_from([None, ("destination", "destination"), ("region", "destination")]),
    start=st.one_of(st.none(), instant),
    length=st.one_of(st.none(), st.integers(1, SPAN_US)),
    as_of=instant,
    n=st.sampled_from([40, 300, 3000]),  # sparse: a bucket's keys from few hours
)
def test_index_keys_equal_grouped_rows(
    seed: int,
    tz: str,
    granularity: str | None,
    dim: tuple[str, str] | None,
    start: dt.datetime | None,
    length: int | None,
    as_of: dt.datetime,
    n: int,
) -> None:
    assume(dim is not None or granularity is not None)  # flow questions with keys
    lc = lifecycle(seed, n)
    hours = HourCounts.build(lc, DIMS)
    end = None if length is None else (start or T0) + dt.timedelta(microseconds=length)
    w = Window(as_of=as_of, start=start, end=end, granularity=granularity, tz=tz)
    for t in TIME_COLUMNS:
        # Every count of the branch, one of them, none (the keys alone).
        flags = FLOW_FLAGS[t]
        for wanted in (flags, dict(list(flags.items())[-1:]), {}):
            got = hours.counts(lc.lazy(), t, dim, w, wanted)
            assert got is not None
            want = grouped(lc, t, dim, w, wanted)
            frame = got.collect()
            assert frame.schema == want.schema, (frame.schema, want.schema)
            assert ordered(frame).equals(ordered(want)), (t, list(wanted), w)


def test_the_hours_hold_one_row_per_pair_with_its_counts() -> None:
    lc = lifecycle(3, 2000)
    hours = HourCounts.build(lc, DIMS)
    hour = (pl.col("_t").dt.epoch("us") // US_PER_HOUR).alias("_hour")
    for t in TIME_COLUMNS:
        rows = lc.filter(pl.col(t).is_not_null()).with_columns(pl.col(t).alias("_t"))
        for d in (*DIMS, ""):
            keys = [d, hour] if d else [hour]
            want = rows.group_by(keys).agg(count_exprs(FLOW_FLAGS[t]))
            assert ordered(hours.frames[(t, d)]).equals(ordered(want)), (t, d)
        # Every row of the column is counted once per dimension.
        total = sum(hours.frames[(t, "")]["_hour"].len() for _ in [0])
        assert total == rows.select(hour).n_unique()
