"""Timestamp validation: the usual form read by a fixed format, the rest as before."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi.contract import Kind
from kpi.sources.validate import (
    _TS_NO_OFFSET,
    _TS_WITH_OFFSET,
    REASON,
    ROW,
    SOURCE,
    validate_lazy,
)

_GOOD = {
    "event_id": "E1",
    "item_id": "RR123456785CN",
    "event": "arrived",
    "facility": "F1",
}


def _reference(text: str | None) -> tuple[dt.datetime | None, str | None]:
    """The former reading of one value on its own: normalised text, inferred format."""
    s = pl.Series("ts", [text], dtype=pl.String).str.strip_chars()
    normal = s.str.replace(r"[zZ]$", "+00:00").str.replace(" ", "T")
    parsed = normal.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")[0]
    value = s[0]
    if value is None or value == "":
        return None, "missing_field"
    if s.str.contains(_TS_NO_OFFSET)[0]:
        return None, "timestamp_without_offset"
    if not s.str.contains(_TS_WITH_OFFSET)[0] or parsed is None:
        return None, "bad_timestamp"
    return parsed, None


def _validated(texts: list[str | None]) -> pl.DataFrame:
    raw = pl.DataFrame(
        {
            **{k: [v] * len(texts) for k, v in _GOOD.items()},
            "ts": pl.Series(texts, dtype=pl.String),
            SOURCE: ["s"] * len(texts),
            ROW: list(range(len(texts))),
        }
    )
    return validate_lazy(raw.lazy(), Kind.EVENTS).collect()


_digits = st.integers(0, 99).map(lambda n: f"{n:02d}")
_date = st.tuples(st.integers(1990, 2099), st.integers(0, 13), st.integers(0, 32)).map(
    lambda t: f"{t[0]}-{t[1]:02d}-{t[2]:02d}"
)
_time = st.tuples(
    st.integers(0, 25),
    st.integers(0, 60),
    st.one_of(st.none(), st.integers(0, 61)),
    st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=11)),
).map(
    lambda t: (
        f"{t[0]:02d}:{t[1]:02d}"
        + ("" if t[2] is None else f":{t[2]:02d}" + ("" if t[3] is None else "." + t[3]))
    )
)
_offset = st.one_of(
    st.sampled_from(["", "Z", "z", "+00:00", "-05:30", "+0100", "+01", "+14:00", "+2", "UTC"]),
    st.tuples(st.sampled_from("+-"), _digits, _digits).map(lambda t: f"{t[0]}{t[1]}:{t[2]}"),
)
_timestamp = st.one_of(
    st.tuples(_date, st.sampled_from(["T", " ", "t", "  "]), _time, _offset).map("".join),
    _date,
    st.text(max_size=30),
    st.none(),
).map(lambda s: s if s is None else s.center(len(s) + 2) if len(s) % 7 == 0 else s)


@settings(max_examples=300, deadline=None)
@given(st.lists(_timestamp, min_size=1, max_size=12))
def test_each_timestamp_reads_as_it_did_on_its_own(texts: list[str | None]) -> None:
    """Every value of a batch gets the value and reason the former reading gave it alone."""
    out = _validated(texts)
    for text, ts, reason in zip(texts, out["ts"], out[REASON], strict=True):
        want_ts, want_reason = _reference(text)
        assert (reason, ts if reason is None else None) == (want_reason, want_ts), text


def test_usual_forms_by_hand() -> None:
    """Z, offsets and fractions read as their instants in UTC; no offset is its own reason."""
    utc = dt.UTC
    cases = {
        "2026-01-01T01:00:00Z": (dt.datetime(2026, 1, 1, 1, tzinfo=utc), None),
        "2026-01-01T01:00:00.5-05:30": (
            dt.datetime(2026, 1, 1, 6, 30, 0, 500000, tzinfo=utc),
            None,
        ),
        " 2026-01-01 01:00:00+0100 ": (dt.datetime(2026, 1, 1, 0, tzinfo=utc), None),
        "2026-01-01T01:00+02:00": (dt.datetime(2025, 12, 31, 23, tzinfo=utc), None),
        "2026-01-01T01:00:00": (None, "timestamp_without_offset"),
        "2026-02-30T01:00:00Z": (None, "bad_timestamp"),
        "2026-1-01T01:00:00Z": (None, "bad_timestamp"),
    }
    out = _validated(list(cases))
    # A rejected row's typed value is never read: only the good rows' is compared.
    got = {
        text: (ts if reason is None else None, reason)
        for text, ts, reason in zip(cases, out["ts"], out[REASON], strict=True)
    }
    assert got == cases


def test_a_bad_first_value_does_not_reject_the_rest() -> None:
    """The former format inference took its format from the batch's first value: after
    ``0/1/1`` a valid timestamp was ``bad_timestamp``; now it reads as it does alone."""
    out = _validated(["0/1/1", "1990-01-01T00:00Z"])
    assert out[REASON].to_list() == ["bad_timestamp", None]
    assert out["ts"][1] == dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
