"""The compact item state: the id hash, the encoding's round trip, and merges batch by batch."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from exporters.compact import (
    EPOCH_S,
    CompactItems,
    event_key,
    item_key,
    key_hashes,
    unpack_main,
)
from exporters.seen import hash_ids
from exporters.state import latest_checkpoint, read_checkpoint, write_checkpoint
from kpi.contract import EVENT_SCHEMA
from kpi.lifecycle import STATE_SCHEMA, build_state, merge_events
from tests.exporters.statekit import bare_checkpoint

_MASK = (1 << 64) - 1
_M = 0x9E3779B97F4A7C15


def _fmix(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def naive_hash(text: str) -> int:
    """The documented hash, byte by byte in plain Python (the reference)."""
    data = text.encode()
    h = _fmix(len(data) ^ _M)
    for k in range(0, len(data), 8):
        word = int.from_bytes(data[k : k + 8].ljust(8, b"\0"), "little")
        h = ((h ^ word) * _M) & _MASK
        h ^= h >> 29
    return _fmix(h)


def test_hash_matches_the_plain_python_reference() -> None:
    rng = random.Random(7)
    ids = ["", "a", "abcdefgh", "abcdefghi", "BM000000001CN-00", "é中文", "x" * 1000]
    ids += ["".join(rng.choice("AZ09-_é") for _ in range(rng.randint(0, 40))) for _ in range(300)]
    got = hash_ids(pl.Series(ids, dtype=pl.String))
    assert [int(h) for h in got] == [naive_hash(s) for s in ids]
    # a slice (Arrow offset), nulls as the empty string
    sliced = pl.Series([None, *ids], dtype=pl.String).slice(0, 50)
    assert [int(h) for h in hash_ids(sliced)] == [naive_hash(s) for s in ["", *ids[:49]]]
    assert len(hash_ids(pl.Series([], dtype=pl.String))) == 0


T0 = dt.datetime(2026, 3, 1, 8, 0, 0, 123_457, tzinfo=dt.UTC)
EVENTS = ("accepted", "arrived", "departed", "delivery_failed", "delivered", "returned")


def random_events(n: int, items: int, seed: int, whole: float = 0.0) -> pl.DataFrame:
    """Random events (ties at the same microsecond included) keyed as the exporter keys them;
    the items of a share ``whole`` at whole seconds (the others' past them)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = rng.choice(EVENTS)
        item = rng.randrange(items)
        step = rng.randrange(4)
        rows.append(
            {
                "event_id": f"E{i:05d}",
                "item_id": f"I{item}",
                "event": kind,
                "ts": T0 - dt.timedelta(microseconds=123_457) + dt.timedelta(seconds=step)
                if item < items * whole
                else T0 + dt.timedelta(microseconds=step * 1_000_003),
                "facility": rng.choice(["F1", "F2", None]),
                "product": rng.choice(["express", "standard"]) if kind == "accepted" else None,
                "origin": rng.choice(["CN-BJ", "CN-SH"]) if kind == "accepted" else None,
                "destination": rng.choice(["CN-GD", None]) if kind == "accepted" else None,
                "promised_by": T0 + dt.timedelta(days=2) if rng.random() < 0.2 else None,
                "reason": "absent" if kind == "delivery_failed" else None,
            }
        )
    frame = pl.DataFrame(rows, schema=EVENT_SCHEMA)
    return frame.with_columns(
        item_key(hash_ids(frame.get_column("item_id"))),
        event_key(hash_ids(frame.get_column("event_id"))),
    )


def at_last_scan(col: str) -> pl.Expr:
    """``col`` where it is set, as the item's last scan time (plain arithmetic on the key)."""
    last = (pl.col("last_key") // 8).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.when(pl.col(col).is_not_null()).then(last).alias(col)


@pytest.mark.parametrize(("seed", "whole"), [(1, 0.0), (2, 0.5), (3, 1.0)])
def test_batches_through_the_encoding_give_the_state_of_all_events(seed: int, whole: float) -> None:
    events = random_events(400, 60, seed, whole)
    truth = build_state(events.lazy()).collect()
    compact = CompactItems()
    for batch in events.iter_slices(37):
        compact = compact.replace(merge_events(compact.rows(_hashes(batch)), batch.lazy()))
    got = compact.decode().sort("item_id")
    # Documented loss: of delivered_at and returned_at only whether they are set is kept
    # (decoded as the last scan's time); of a delivered item's promise nothing, of its
    # first attempt only whether there was one (decoded as the last scan's key).
    delivered = pl.col("delivered_at").is_not_null()
    want = truth.with_columns(
        at_last_scan("delivered_at"),
        at_last_scan("returned_at"),
        pl.when(~delivered).then(pl.col("promised_by_given")).alias("promised_by_given"),
        pl.when(delivered & pl.col("attempt_key").is_not_null())
        .then(pl.col("last_key"))
        .otherwise(pl.col("attempt_key"))
        .alias("attempt_key"),
    )
    assert truth.filter(delivered & pl.col("promised_by_given").is_not_null()).height > 0
    assert got.schema == pl.Schema(STATE_SCHEMA)
    assert got.equals(want.sort("item_id"))
    assert compact.height == truth.height
    # Times at whole seconds are held in 4 bytes; only the others are kept apart, exact.
    assert (compact.exact.height == 0) == (whole == 1.0)
    assert (compact.exact.height == compact.height) == (whole == 0.0)


def _hashes(batch: pl.DataFrame) -> pl.Series:
    return key_hashes(batch.get_column("item_id"))


def _old_tables(compact: CompactItems) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The item rows and sparse rows (exact times) as formats 3-5 held them: no flags in
    the rows; the sparse table has every item with a promise, an attempt, a delivery or a
    return, the last two as times (whole seconds; any time: only whether one is set is read)."""
    main = unpack_main(compact.main, compact.exact).drop("has_delivery", "has_return", "attempted")
    state = compact.decode().with_columns(key_hashes(pl.col("item_id")).alias("item"))
    cols = ("promised_by_given", "attempt_key", "delivered_at", "returned_at")
    extra = state.filter(pl.any_horizontal(pl.col(c).is_not_null() for c in cols)).select(
        "item",
        pl.col("promised_by_given").dt.epoch("us"),
        "attempt_key",
        *(
            pl.when(pl.col(c).is_not_null()).then(pl.lit(800_000_000, pl.Int32)).alias(s)
            for c, s in (("delivered_at", "delivered_s"), ("returned_at", "returned_s"))
        ),
    )
    return main, extra


def _old_packing(
    full: pl.DataFrame, time: tuple[str, str], key: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Exact rows as formats 4 and 5 packed them (a reimplementation): ``time`` in whole
    seconds from 2000, the time key ``<key>_key`` as whole seconds ``<key>_s`` and rank
    ``<key>_rank``; rows with a time that is not a whole second apart, exact."""
    (t_name, t_s), k_name = time, f"{key}_key"
    us, k_us = pl.col(t_name), pl.col(k_name) // 8
    t_ok, k_ok = (us % 10**6 == 0).fill_null(True), (k_us % 10**6 == 0).fill_null(True)
    old = full.with_columns(
        pl.when(t_ok).then(us // 10**6 - EPOCH_S).cast(pl.Int32).alias(t_s),
        pl.when(k_ok).then(k_us // 10**6 - EPOCH_S).cast(pl.Int32).alias(f"{key}_s"),
        (pl.col(k_name) % 8).cast(pl.UInt8).alias(f"{key}_rank"),
    ).drop(t_name, k_name)
    exact = full.filter(~(t_ok & k_ok)).select(
        "item",
        pl.when(t_ok).then(None).otherwise(us).alias(t_name),
        pl.when(k_ok).then(None).otherwise(pl.col(k_name)).alias(k_name),
    )
    return old, exact


def test_codes_survive_a_checkpoint_and_old_formats_are_refused(tmp_path: Path) -> None:
    events = random_events(200, 40, 9, 0.5)
    compact = CompactItems().replace(build_state(events.lazy()).collect())
    ckpt = bare_checkpoint(compact, seq=3)
    path = write_checkpoint(tmp_path, ckpt)
    again = latest_checkpoint(tmp_path)
    assert again is not None
    assert again.items.decode().equals(compact.decode())
    # Format 3 held the exact times in items.parquet: read and packed.
    old_main, old_extra = _old_tables(compact)
    assert old_extra.height > compact.extra.height  # delivered items: no sparse row now
    three = write_checkpoint(tmp_path / "three", dataclasses.replace(ckpt, seq=4))
    old_main.write_parquet(three / "items.parquet")
    old_extra.write_parquet(three / "items_extra.parquet")
    for name in ("items_exact.parquet", "items_extra_exact.parquet"):
        (three / name).unlink()
    meta = orjson.loads((three / "meta.json").read_bytes())
    meta["format"] = 3
    (three / "meta.json").write_bytes(orjson.dumps(meta))
    assert read_checkpoint(three).items.decode().equals(compact.decode())
    # Format 4 held the sparse table's times exact and the codes as UInt32: converted.
    assert compact.extra_exact.height > 0  # sub-second promises
    four = write_checkpoint(tmp_path / "four", dataclasses.replace(ckpt, seq=5))
    main, exact = _old_packing(old_main, ("accepted_at", "accepted_s"), "last")
    assert exact.height > 0  # sub-second scans
    main.with_columns(pl.col("route", "facility").cast(pl.UInt32)).write_parquet(
        four / "items.parquet"
    )
    exact.write_parquet(four / "items_exact.parquet")
    old_extra.write_parquet(four / "items_extra.parquet")
    (four / "items_extra_exact.parquet").unlink()
    meta = orjson.loads((four / "meta.json").read_bytes())
    meta["format"] = 4
    (four / "meta.json").write_bytes(orjson.dumps(meta))
    read = read_checkpoint(four).items
    assert read.decode().equals(compact.decode())
    assert read.main.equals(compact.main) and read.extra.equals(compact.extra)
    assert read.main.schema["facility"] == pl.UInt16 == read.main.schema["route"]
    # Format 5 held the sparse table's times packed too.
    assert compact.main["has_delivery"].sum() > 0 and compact.main["has_return"].sum() > 0
    five = write_checkpoint(tmp_path / "five", dataclasses.replace(ckpt, seq=6))
    main.write_parquet(five / "items.parquet")
    exact.write_parquet(five / "items_exact.parquet")
    extra, extra_exact = _old_packing(old_extra, ("promised_by_given", "promised_s"), "attempt")
    extra.write_parquet(five / "items_extra.parquet")
    extra_exact.write_parquet(five / "items_extra_exact.parquet")
    meta = orjson.loads((five / "meta.json").read_bytes())
    meta["format"] = 5
    (five / "meta.json").write_bytes(orjson.dumps(meta))
    read = read_checkpoint(five).items
    assert read.main.equals(compact.main) and read.extra.equals(compact.extra)
    assert read.decode().equals(compact.decode())
    meta = orjson.loads((path / "meta.json").read_bytes())
    meta["format"] = 1
    (path / "meta.json").write_bytes(orjson.dumps(meta))
    with pytest.raises(ValueError, match="older exporter"):
        read_checkpoint(path)


def test_a_delivery_far_ahead_is_still_set() -> None:
    far = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
    state = pl.DataFrame(
        {"item_id": item_key(np.array([7], np.uint64)), "delivered_at": [far], "last_key": [1]},
        schema={k: STATE_SCHEMA[k] for k in ("item_id", "delivered_at", "last_key")},
    ).select(
        pl.col(c).cast(t)
        if c in ("item_id", "delivered_at", "last_key")
        else pl.lit(None, t).alias(c)
        for c, t in STATE_SCHEMA.items()
    )
    items = CompactItems().replace(state)
    got = items.decode()
    assert got["delivered_at"][0] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # the last scan's
    assert got["returned_at"][0] is None
    # Finished, so past the retention it leaves the state.
    kept, gone = items.retire(10**6, 1)
    assert kept.height == 0 and gone.tolist() == [7]


def _states(lo: int, hi: int) -> pl.DataFrame:
    """Items ``lo`` to ``hi``, each at its own facility (``F<i>``) on its own route."""
    n = hi - lo
    idx = pl.int_range(lo, hi, eager=True)
    ids = (pl.lit("I") + idx.cast(pl.String)).alias("i")
    t0 = int(T0.timestamp()) * 1_000_000
    return (
        pl.select(
            item_key(hash_ids(pl.select(ids).to_series())),
            pl.lit(T0).alias("accepted_at"),
            event_key(hash_ids(pl.select(ids).to_series())).alias("accepted_event_id"),
            pl.lit("express").alias("product"),
            ("O" + idx.cast(pl.String)).alias("origin"),
            pl.lit("CN-GD").alias("destination"),
            pl.lit(None).alias("promised_by_given"),
            pl.lit(None).alias("attempt_key"),
            pl.lit(None).alias("delivered_at"),
            pl.lit(None).alias("returned_at"),
            (t0 * 8 + 8 * idx * 1_000_000 + 3).alias("last_key"),
            ("F" + idx.cast(pl.String)).alias("last_facility"),
        )
        .cast(STATE_SCHEMA)
        .head(n)
    )  # type: ignore[arg-type]


def test_codes_widen_past_65536_dictionary_entries(tmp_path: Path) -> None:
    """Codes are UInt16 while a dictionary holds at most 65,536 entries, UInt32 past it
    (the held column is widened, every row decodes the same), also through a checkpoint."""
    small = CompactItems().replace(_states(0, 65_000))
    assert small.main.schema["facility"] == pl.UInt16 == small.main.schema["route"]
    assert small.facilities.height == 65_000
    full = small.replace(_states(65_000, 65_536))
    assert full.facilities.height == 65_536 and full.main.schema["facility"] == pl.UInt16
    big = full.replace(_states(65_536, 70_000))
    assert big.main.schema["facility"] == pl.UInt32 == big.main.schema["route"]
    want = _states(0, 70_000)
    assert big.decode().sort("item_id").equals(want.sort("item_id"))
    # A code past UInt16's range finds its item; a refresh by facility codes works on both.
    code = pl.Series([69_999], dtype=pl.UInt32)
    none = pl.Series([], dtype=pl.UInt64)
    assert big.at_facilities(code, none)["last_facility"].to_list() == ["F69999"]
    assert small.at_facilities(code, none).is_empty()
    ckpt = bare_checkpoint(big)
    again = read_checkpoint(write_checkpoint(tmp_path, ckpt)).items
    assert again.main.schema["facility"] == pl.UInt32 and again.main.equals(big.main)
    assert again.decode().equals(big.decode())
