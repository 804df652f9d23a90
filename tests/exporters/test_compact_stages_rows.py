"""Stage summaries held in their items' rows (``CompactStages.attach``): the same summaries,
scans and item states as with every summary kept apart, through accepted, re-touched and
retired items, folds, a checkpoint, and a format-5 checkpoint converted."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from exporters.compact import MAIN_SCHEMA, STAGE_COLUMNS, CompactItems, item_key
from exporters.compact_stages import FOLD_STEP, CompactStages
from exporters.state import read_checkpoint, write_checkpoint
from kpi.events import RANK_BITS, STAGE
from kpi.kpis.stage_increments import HISTORY_SCHEMA
from kpi.lifecycle import STATE_SCHEMA
from tests.exporters.statekit import bare_checkpoint

_MINUTE = 6 * 60 * 10**6  # 100 of them are past FOLD_STEP
T0_US = 1_767_225_600 * 10**6  # 2026-01-01T00:00Z


def _states(hashes: list[int], step: int) -> pl.DataFrame:
    """One accepted item state per hash (its last scan moves with ``step``)."""
    n = len(hashes)
    keys = item_key(np.array(hashes, dtype=np.uint64))
    t = T0_US + step * 10**9
    return pl.DataFrame(
        {
            "item_id": keys,
            "accepted_at": [T0_US] * n,
            "accepted_event_id": [f"{i:010d}" for i in range(n)],
            "product": ["express"] * n,
            "origin": ["CN-BJ"] * n,
            "destination": ["CN-SH"] * n,
            "promised_by_given": [None] * n,
            "attempt_key": [None] * n,
            "delivered_at": [None] * n,
            "returned_at": [None] * n,
            "last_key": [(t + i * 10**6) * RANK_BITS + STAGE["arrived"] for i in range(n)],
            "last_facility": [f"F-{(i + step) % 7}" for i in range(n)],
        }
    ).cast(STATE_SCHEMA)  # type: ignore[arg-type]


def _moves(rng: random.Random, items: list[int], n: int, lo: int, hi: int) -> pl.DataFrame:
    """Arrivals, departures, deliveries between minutes ``lo`` and ``hi`` (a quarter of
    them 250 µs past the second: exact keys)."""
    ranks = [STAGE["arrived"], STAGE["departed"], STAGE["delivered"]]
    rows = [
        (
            rng.choice(items),
            (T0_US + rng.randrange(lo, hi) * _MINUTE + rng.choice([0, 0, 0, 250])) * RANK_BITS
            + rng.choice(ranks),
            f"F-{rng.randrange(6)}",
        )
        for _ in range(n)
    ]
    return pl.DataFrame(
        {
            "item_id": item_key(np.array([r[0] for r in rows], dtype=np.uint64)),
            "key": [r[1] for r in rows],
            "facility": [r[2] for r in rows],
        },
        schema=HISTORY_SCHEMA,
    )


def _by_item(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    return sorted(frame.iter_rows())


def _run(seed: int) -> tuple[CompactStages, CompactStages, CompactItems]:
    """The same scans, acceptances and retirements, with the summaries apart and in rows."""
    rng = random.Random(seed)
    pool = [rng.getrandbits(64) for _ in range(60)]
    apart, rows = CompactStages(), CompactStages()
    items = plain = CompactItems()
    accepted: list[int] = []
    for step in range(8):
        part = _moves(rng, pool, 150, step * 100, step * 100 + 150)
        apart, rows = apart.add(part), rows.add(part)
        # Some items accepted (a new row), some re-touched (their row replaced).
        fresh = [h for h in rng.sample(pool, 8) if h not in accepted]
        again = rng.sample(accepted, min(len(accepted), 5))
        accepted += fresh
        states = _states(fresh + again, step)
        items, plain = items.replace(states), plain.replace(states)
        # Some retired: their rows go, and their scans and summaries with them.
        gone = rng.sample(accepted, min(len(accepted), 2)) if step % 3 == 2 else []
        if gone:
            drop = ~pl.col("item").is_in(pl.Series(gone, dtype=pl.UInt64).implode())
            items = dataclasses.replace(items, main=items.main.filter(drop))
            plain = dataclasses.replace(plain, main=plain.main.filter(drop))
            accepted = [h for h in accepted if h not in gone]
        hashes = np.array(gone, dtype=np.uint64)
        rows = dataclasses.replace(rows, items=items).retire(hashes)
        apart = apart.retire(hashes)
        mark = (T0_US + (step * 100 + 50) * _MINUTE) * RANK_BITS
        apart, rows = apart.fold(mark), rows.fold(mark)
        assert rows.items is not None
        items = rows.items
        assert _by_item(rows.summaries()) == _by_item(apart.summaries())
        assert _by_item(rows.decode()) == _by_item(apart.decode())
        some = pl.Series(rng.sample(pool, 20), dtype=pl.UInt64)
        assert _by_item(rows.coded_rows(some)) == _by_item(apart.coded_rows(some))
        # The items' own columns are untouched by the summaries they hold.
        assert items.decode().sort("item_id").equals(plain.decode().sort("item_id"))
    return apart, rows, items


def test_summaries_in_item_rows_equal_summaries_apart() -> None:
    apart, rows, items = _run(11)
    in_rows = rows.attached()
    assert in_rows > 0 and rows.side.height > 0  # items without a row keep theirs apart
    assert in_rows + rows.side.height == apart.side.height == rows.summary.height
    # Never in both places: a side summary's item has no row, or its row holds none.
    held = items.main.filter(pl.col("delivered").is_not_null()).get_column("item")
    assert not rows.side.get_column("item").is_in(held.implode()).any()
    assert rows.nbytes < apart.nbytes
    # Recent scans: whole seconds packed in 14 B, the others (250 µs past) as they are.
    assert rows.held.height > 0 and rows.rows_exact.height > 0
    assert rows.held.estimated_size() == 14 * rows.held.height
    assert (rows.rows_exact.get_column("key") // RANK_BITS % 10**6 == 250).all()
    assert (rows.rows.get_column("key") >= rows.mark).all()


def test_summaries_in_rows_go_through_a_checkpoint_and_format_5_is_converted(
    tmp_path: Path,
) -> None:
    apart, rows, items = _run(12)
    path = write_checkpoint(tmp_path / "six", bare_checkpoint(items, stages=rows))
    again = read_checkpoint(path)
    assert again.items.main.equals(items.main) and again.stages.items is again.items
    assert _by_item(again.stages.summaries()) == _by_item(apart.summaries())
    assert again.stages.side.equals(rows.side)
    assert again.stages.rows.equals(rows.rows) and again.stages.held.equals(rows.held)
    # Format 5: every summary in stage_summary.parquet, item rows without summary columns.
    five = write_checkpoint(tmp_path / "five", bare_checkpoint(items, stages=apart))
    items.main.select(MAIN_SCHEMA.keys()).write_parquet(five / "items.parquet")
    apart.rows.write_parquet(five / "stages.parquet")  # unpacked scans
    (five / "stage_rows_exact.parquet").unlink()
    meta = orjson.loads((five / "meta.json").read_bytes())
    meta["format"] = 5
    (five / "meta.json").write_bytes(orjson.dumps(meta))
    converted = read_checkpoint(five)
    assert converted.stages.items is converted.items
    assert _by_item(converted.stages.summaries()) == _by_item(apart.summaries())
    assert _by_item(converted.items.main) == _by_item(
        items.main.select(converted.items.main.columns)
    )
    assert converted.stages.side.height == rows.side.height
    assert _by_item(converted.stages.rows) == _by_item(apart.rows)
    assert converted.stages.held.equals(rows.held)
    assert list(converted.items.main.columns)[-len(STAGE_COLUMNS) :] == list(STAGE_COLUMNS)


def test_summary_codes_in_rows_widen_with_the_dictionary() -> None:
    """Past 65,536 facility names the summaries' codes are UInt32 in the rows too."""
    n = 70_000
    hashes = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)).tolist()
    keys = item_key(np.array(hashes, dtype=np.uint64))
    second = 10**6 * RANK_BITS
    scans = pl.DataFrame(
        {
            "item_id": keys,
            "key": [T0_US * RANK_BITS + i * second + STAGE["departed"] for i in range(n)],
            "facility": [f"F{i}" for i in range(n)],
        },
        schema=HISTORY_SCHEMA,
    )
    items = CompactItems().replace(_states(hashes[:10], 0))
    small = dataclasses.replace(CompactStages().add(scans.head(10)), items=items)
    small = small.fold(T0_US * RANK_BITS + (n + 5) * second)
    assert small.items is not None and small.items.main.schema["dep_fac"] == pl.UInt16
    grown = small.add(scans.slice(10))  # recent scans, packed, their codes widened too
    assert grown.held.schema["facility"] == pl.UInt32 and grown.rows_exact.is_empty()
    recent = grown.rows
    got_recent = grown.names.get_column("facility").gather(recent["facility"]).to_list()
    assert got_recent == [f"F{i}" for i in range(10, n)]
    assert recent["key"].to_list() == scans["key"].slice(10).to_list()
    big = grown.fold(T0_US * RANK_BITS + (n + 5) * second + FOLD_STEP)
    assert big.items is not None and big.items.main.schema["dep_fac"] == pl.UInt32
    assert big.attached() == 10 and big.side.height == n - 10
    names = big.names.get_column("facility")
    summary = big.summaries()
    got = dict(zip(summary["item"].to_list(), names.gather(summary["dep_fac"]), strict=True))
    assert got == {h: f"F{i}" for i, h in enumerate(hashes)}
