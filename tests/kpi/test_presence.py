"""``kpi.kpis.presence``: the keys from the index equal those of grouping the rows."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi.kpis.exprs import PERIOD, US_PER_HOUR, Window
from kpi.kpis.presence import TIME_COLUMNS, Presence

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
    return rows.select(*dims, *times)


def grouped(lc: pl.DataFrame, t: str, dim: tuple[str, str] | None, w: Window) -> pl.DataFrame:
    """The reference: every row in the window, its bucket truncated on its own."""
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
    return lc.filter(cond).select(keys).unique()


def ordered(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns)


instant = st.one_of(
    st.integers(0, SPAN_US).map(lambda us: T0 + dt.timedelta(microseconds=us)),
    st.integers(0, SPAN_US // US_PER_HOUR).map(lambda h: T0 + dt.timedelta(hours=h)),
)


@settings(max_examples=150, deadline=None)
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
    lc = lifecycle(seed, n)
    index = Presence.build(lc, DIMS)
    end = None if length is None else (start or T0) + dt.timedelta(microseconds=length)
    w = Window(as_of=as_of, start=start, end=end, granularity=granularity, tz=tz)
    for t in TIME_COLUMNS:
        got = index.keys(lc.lazy(), t, dim, w)
        assert got is not None
        want = grouped(lc, t, dim, w)
        frame = got.collect()
        assert frame.schema == want.schema, (frame.schema, want.schema)
        assert ordered(frame).equals(ordered(want)), (t, w)


def test_the_index_holds_one_row_per_pair() -> None:
    lc = lifecycle(3, 2000)
    index = Presence.build(lc, DIMS)
    for t in TIME_COLUMNS:
        hours = (pl.col(t).dt.epoch("us") // 3_600_000_000).alias("_hour")
        for d in DIMS:
            want = lc.filter(pl.col(t).is_not_null()).select(d, hours).unique()
            assert ordered(index.pairs[(t, d)]).equals(ordered(want))
        assert index.pairs[(t, "")].height == lc.select(hours).drop_nulls().n_unique()
