"""Stage increments by hand: a departure read before its arrival is observed when the
arrival comes; an arrival read late inside an interval already counted is a revision."""

from __future__ import annotations

import datetime as dt

import polars as pl

from kpi.contract import EventType
from kpi.kpis.stage_increments import empty_history, history_rows, retire_history, stage_increments

T = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
FAC = pl.DataFrame(
    {"facility": ["A", "B"], "type": ["processing", "delivery"], "region": ["CN-BJ", "CN-SH"]}
)
DIMS = pl.DataFrame({"item_id": ["x"], "product": ["express"], "origin": ["CN-BJ"]})


def _events(rows: list[tuple[str, str, float, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"item_id": i, "event": e, "ts": T + dt.timedelta(hours=h), "facility": f}
            for i, e, h, f in rows
        ]
    ).with_columns(pl.col("event").cast(EventType))


def _obs(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    return sorted(frame.iter_rows())


def test_intervals_close_whatever_the_order_and_late_insides_are_revisions() -> None:
    h = empty_history()
    h, inc = stage_increments(
        h, history_rows(_events([("x", "accepted", 0, "A"), ("x", "departed", 5, "A")])), FAC, DIMS
    )
    assert _obs(inc.first_mile) == [("express", "CN-BJ", 5 * 3600.0)]
    assert inc.dwell.is_empty() and inc.leg.is_empty()  # the departure has no arrival yet
    later = [("x", "arrived", 1, "A"), ("x", "arrived", 9, "B"), ("x", "delivered", 12, "B")]
    h, inc = stage_increments(h, history_rows(_events(later)), FAC, DIMS)
    assert _obs(inc.dwell) == [("A", "processing", "CN-BJ", 4 * 3600.0)]
    assert _obs(inc.leg) == [("CN-BJ", "CN-SH", 4 * 3600.0)]
    assert _obs(inc.last_mile) == [("B", "delivery", "CN-SH", 3 * 3600.0)]
    assert inc.first_mile.is_empty() and inc.revisions.is_empty()
    # An arrival at A at 3 h: the dwell counted (1 h -> 5 h) is now 3 h -> 5 h.
    h, inc = stage_increments(h, history_rows(_events([("x", "arrived", 3, "A")])), FAC, DIMS)
    assert _obs(inc.dwell) == [("A", "processing", "CN-BJ", 2 * 3600.0)]
    assert _obs(inc.revisions) == [("dwell", 1)]
    assert h.height == 6
    assert retire_history(h, pl.Series(["y"])).height == 6  # another item retired
    assert retire_history(h, pl.Series(["x"])).is_empty()


def test_unknown_facilities_are_labelled_unknown() -> None:
    rows = [("y", "arrived", 0, "Z"), ("y", "departed", 2, "Z")]
    _, inc = stage_increments(empty_history(), history_rows(_events(rows)), FAC, DIMS)
    assert _obs(inc.dwell) == [("Z", "unknown", "unknown", 2 * 3600.0)]
