"""The usual timestamp shapes read by array arithmetic, against polars' own reader."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi.sources.isotime import read_usual

_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"

#: Texts near the usual shapes: every field over its range and a little past it, any
#: fraction length, Z or offsets, and single bytes replaced by others.
_near = st.tuples(
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.one_of(st.none(), st.text("0123456789", min_size=0, max_size=11)),
    st.one_of(
        st.sampled_from(["Z", "z", "", "+0800", "+08", "UTC"]),
        st.tuples(st.sampled_from("+-"), st.integers(0, 30), st.integers(0, 70)).map(
            lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"
        ),
    ),
).map(
    lambda t: (
        f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:{t[5]:02d}"
        + ("" if t[6] is None else "." + t[6])
        + t[7]
    )
)
_texts = st.one_of(
    _near,
    st.tuples(_near, st.integers(0, 40), st.characters(codec="utf-8")).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
    ),
    st.text(max_size=36),
    st.none(),
)


def _general(texts: list[str | None]) -> list[int | None]:
    s = pl.Series("ts", texts, dtype=pl.String)
    parsed = s.str.to_datetime(_FORMAT, time_zone="UTC", strict=False, time_unit="us")
    return parsed.cast(pl.Int64).to_list()


@settings(max_examples=400, deadline=None)
@given(st.lists(_texts, min_size=1, max_size=20))
def test_what_it_reads_the_general_reader_reads_alike(texts: list[str | None]) -> None:
    """A value it reads has the general reader's value; one it leaves is no usual shape."""
    got = read_usual(pl.Series("ts", texts, dtype=pl.String)).cast(pl.Int64).to_list()
    want = _general(texts)
    for text, g, w in zip(texts, got, want, strict=True):
        if g is not None:
            assert g == w, text


def test_the_usual_shapes_are_read() -> None:
    """Z or an offset, with no fraction or 1 to 9 digits: each read to the microsecond."""
    texts = [
        "2027-02-01T08:00:00Z",
        "2027-02-01T08:00:00.1Z",
        "2027-02-01T08:00:00.123456Z",
        "2027-02-01T08:00:00.123456789Z",
        "2027-02-01T08:00:00+08:00",
        "2027-02-01T08:00:00.5-05:30",
        "2024-02-29T23:59:59.999Z",
        "1969-12-31T23:59:59.0000005Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999+00:00",
    ]
    got = read_usual(pl.Series("ts", texts)).cast(pl.Int64).to_list()
    assert None not in got
    assert got == _general(texts)


def test_other_shapes_are_left_to_the_general_reader() -> None:
    """No offset, a space, ``z``, a 60th second, a non-existent date: null."""
    texts = [
        "2027-02-01T08:00:00",
        "2027-02-01 08:00:00Z",
        "2027-02-01T08:00:00z",
        "2027-02-01T08:00:60Z",
        "2027-02-29T08:00:00Z",
        "2027-02-01T08:00:00.Z",
        "2027-02-01T08:00:00+0800",
        "2027-02-01T24:00:00Z",
        "２027-02-01T08:00:00Z",
        "",
        None,
    ]
    assert read_usual(pl.Series("ts", texts, dtype=pl.String)).null_count() == len(texts)
