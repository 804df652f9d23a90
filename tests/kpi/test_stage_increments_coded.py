"""The coded stage increments give ``stage_increments``' answers set by set: random
journeys (ties, departures before their arrivals, repeated scans, unknown facilities)
cut into random sets, applied through both, observation for observation."""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from kpi.contract import EventType
from kpi.kpis.stage_increments import empty_history, history_rows, stage_increments
from kpi.kpis.stage_increments_coded import coded_stage_increments

T = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
FAC = pl.DataFrame(
    {
        "facility": ["A", "B", "C"],
        "type": ["processing", "delivery", "hub"],
        "region": ["CN-BJ", "CN-SH", "CN-BJ"],
    }
)
NAMES = ["C", "Z", "A", "B"]  # code order is not name order; Z is not in FAC
KINDS = ["accepted", "arrived", "departed", "delivered"]


def _journeys(rng: random.Random, items: int) -> list[tuple[str, str, int, str]]:
    rows = []
    for i in range(items):
        for _ in range(rng.randint(1, 9)):
            kind = rng.choices(KINDS, weights=[1, 4, 4, 1])[0]
            rows.append((f"it{i}", kind, rng.randint(0, 12), rng.choice(NAMES)))
    rng.shuffle(rows)
    return rows


def _events(rows: list[tuple[str, str, int, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"item_id": i, "event": e, "ts": T + dt.timedelta(hours=h), "facility": f}
            for i, e, h, f in rows
        ],
        schema={
            "item_id": pl.String,
            "event": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "facility": pl.String,
        },
    ).with_columns(pl.col("event").cast(EventType))


def _coded(history: pl.DataFrame) -> pl.DataFrame:
    code = {n: c for c, n in enumerate(NAMES)}
    return history.select(
        pl.col("item_id").str.slice(2).cast(pl.UInt64).alias("h") * 7919,  # any injective key
        "key",
        pl.col("facility").replace_strict(code, return_dtype=pl.UInt32),
    )


def _obs(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    return sorted(frame.iter_rows())


@pytest.mark.parametrize("seed", range(12))
def test_coded_increments_equal_the_plain_ones_set_by_set(seed: int) -> None:
    rng = random.Random(seed)
    rows = _journeys(rng, 12)
    if seed % 3 == 0:  # a stream in time order: most sets bring scans later than the stored
        rows.sort(key=lambda r: r[2])
    dims = pl.DataFrame(
        {
            "item_id": [f"it{i}" for i in range(12)],
            "product": [rng.choice(["express", "standard", ""]) for _ in range(12)],
            "origin": ["CN-BJ"] * 12,
        }
    )
    coded_dims = dims.select(
        (pl.col("item_id").str.slice(2).cast(pl.UInt64) * 7919).alias("h"), "product", "origin"
    )
    plain, coded = empty_history(), _coded(empty_history())
    names = pl.Series("facility", NAMES)
    observed = 0
    while rows:
        cut = rng.randint(1, 8)
        batch, rows = history_rows(_events(rows[:cut])), rows[cut:]
        plain, want = stage_increments(plain, batch, FAC, dims)
        new = _coded(batch)
        got = coded_stage_increments(coded, new, names, FAC, coded_dims)
        coded = pl.concat([coded, new])
        for stage in ("dwell", "leg", "first_mile", "last_mile", "revisions"):
            assert _obs(getattr(got, stage)) == _obs(getattr(want, stage)), stage
            observed += getattr(want, stage).height
    assert observed > 0  # the journeys did close stages
