"""The encoded stage history: the same rows back (acceptances left out), per item, after
appends, retirements and a checkpoint; a checkpoint of the string-history format is
refused with a message."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from exporters import catalog as cat
from exporters.compact import CompactItems, item_key, key_hashes
from exporters.compact_stages import FOLD_STEP, CompactStages
from exporters.state import Checkpoint, latest_checkpoint, read_checkpoint, write_checkpoint
from exporters.store import CounterStore
from kpi.events import RANK_BITS, STAGE
from kpi.kpis.increments import COMPLAINT_STATE_SCHEMA
from kpi.kpis.stage_increments import HISTORY_SCHEMA


def _checkpoint(stages: CompactStages) -> Checkpoint:
    """A checkpoint holding only ``stages``."""
    return Checkpoint(
        seq=1,
        created_at=0.0,
        files={},
        counters=CounterStore(),
        items=CompactItems(),
        complaints=pl.DataFrame(schema=COMPLAINT_STATE_SCHEMA),
        seen=np.zeros(0, np.uint64),
        rejects_bytes=0,
        last_event_us=None,
        stages=stages,
    )


def _history(rng: random.Random, items: list[int], n: int) -> pl.DataFrame:
    rows = [
        (rng.choice(items), rng.randrange(-(2**40), 2**60), f"F-{rng.randrange(30):03d}")
        for _ in range(n)
    ]
    ids = item_key(np.array([r[0] for r in rows], dtype=np.uint64))
    return pl.DataFrame(
        {"item_id": ids, "key": [r[1] for r in rows], "facility": [r[2] for r in rows]},
        schema=HISTORY_SCHEMA,
    )


def _sorted(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    return sorted(frame.iter_rows())


def test_rows_come_back_per_item_after_appends_and_retirements(tmp_path: Path) -> None:
    rng = random.Random(3)
    items = [rng.getrandbits(64) for _ in range(50)]
    parts = [_history(rng, items, n) for n in (40, 1, 0, 70, 25)]
    stages = CompactStages()
    for part in parts:
        stages = stages.add(part)
    # Acceptances are not stored (the item state has the first one's time).
    everything = pl.concat(parts, how="vertical").filter(
        pl.col("key") % RANK_BITS != STAGE["accepted"]
    )
    assert everything.height < sum(p.height for p in parts)
    assert _sorted(stages.decode()) == _sorted(everything)
    # The reference: plain Python over the rows, by item.
    some = items[:7]
    wanted = set(item_key(np.array(some, dtype=np.uint64)).to_list())
    got = stages.history(pl.Series(some, dtype=pl.UInt64))
    assert _sorted(got) == sorted(r for r in everything.iter_rows() if r[0] in wanted)
    gone = np.array(items[5:30], dtype=np.uint64)
    kept = stages.retire(gone)
    left = set(item_key(gone).to_list())
    assert _sorted(kept.decode()) == sorted(r for r in everything.iter_rows() if r[0] not in left)
    assert kept.names.height == stages.names.height  # codes stay valid: the dictionary is kept
    # Through a checkpoint: the same rows, the same codes.
    ckpt = _checkpoint(kept)
    path = write_checkpoint(tmp_path, ckpt)
    again = latest_checkpoint(tmp_path)
    assert again is not None
    assert again.stages.rows.equals(kept.rows) and again.stages.names.equals(kept.names)
    assert _sorted(again.stages.history(key_hashes(got["item_id"]))) == _sorted(
        kept.history(key_hashes(got["item_id"]))
    )
    meta = orjson.loads((path / "meta.json").read_bytes())
    meta["format"] = 2
    (path / "meta.json").write_bytes(orjson.dumps(meta))
    with pytest.raises(ValueError, match=r"older exporter .*stage history as strings"):
        read_checkpoint(path)


def _moves(
    rng: random.Random, items: list[int], n: int, lo: int, hi: int, unit: int = 10**6
) -> pl.DataFrame:
    """Arrivals, departures and deliveries at times in [lo, hi) ``unit`` µs (ties included),
    a quarter of them 250 µs after the second (kept apart: ``exact``)."""
    ranks = [STAGE["arrived"], STAGE["departed"], STAGE["delivered"]]
    rows = [
        (
            rng.choice(items),
            (rng.randrange(lo, hi) * unit + rng.choice([0, 0, 0, 250])) * RANK_BITS
            + rng.choice(ranks),
            f"F-{rng.randrange(6)}",
        )
        for _ in range(n)
    ]
    ids = item_key(np.array([r[0] for r in rows], dtype=np.uint64))
    return pl.DataFrame(
        {"item_id": ids, "key": [r[1] for r in rows], "facility": [r[2] for r in rows]},
        schema=HISTORY_SCHEMA,
    )


def _naive_summary(rows: list[tuple[str, int, str]]) -> dict[str, tuple[object, ...]]:
    """Per item: last arrival, last departure, latest departure elsewhere, delivered,
    first departure (plain Python; ties ordered by facility name, the report's rule)."""
    by_item: dict[str, list[tuple[int, str]]] = {}
    for item, key, fac in rows:
        by_item.setdefault(item, []).append((key, fac))
    out: dict[str, tuple[object, ...]] = {}
    for item, scans in by_item.items():
        scans.sort()
        arr = [s for s in scans if s[0] % RANK_BITS == STAGE["arrived"]]
        dep = [s for s in scans if s[0] % RANK_BITS == STAGE["departed"]]
        last_dep = dep[-1] if dep else None
        other = [s for s in dep if last_dep is not None and s[1] != last_dep[1]]
        delivered = any(s[0] % RANK_BITS == STAGE["delivered"] for s in scans)
        out[item] = (
            arr[-1] if arr else None,
            last_dep,
            other[-1] if other else None,
            delivered,
            dep[0][0] if dep else None,
        )
    return out


def test_summaries_fold_like_a_naive_reference() -> None:
    """Scans appended in time slices, folded below a moving mark: each item's summary is
    what plain Python says of all its scans below the mark, the rest stay as they are."""
    rng = random.Random(5)
    items = [rng.getrandbits(64) for _ in range(40)]
    stages = CompactStages()
    seen: list[tuple[str, int, str]] = []
    minute = 6 * 60 * 10**6  # a "minute" of this test: 100 of them are past FOLD_STEP, 50 not
    for step in range(8):
        part = _moves(rng, items, 120, step * 100, step * 100 + 150, minute)
        stages = stages.add(part)
        seen += part.iter_rows()
        mark = (step * 100 + 50) * minute * RANK_BITS
        # Less than FOLD_STEP past the last fold: the horizon moves, no fold.
        if step:
            early = stages.fold(mark - 50 * minute * RANK_BITS)
            assert early.summary.equals(stages.summary) and early.rows.equals(stages.rows)
            stages = early
        stages = stages.fold(mark)
        assert stages.horizon == stages.mark == mark
        names = stages.names.get_column("facility").to_list()
        summary = stages.summaries()
        keys = item_key(summary.get_column("item")).to_list()

        def slot(row: dict[str, object], f: str, k: str, names: list[str] = names) -> object:
            code = row[f]
            return None if code is None else (row[k], names[int(code)])  # type: ignore[call-overload]

        got = {
            key: (
                slot(r, "arr_fac", "arr_key"),
                slot(r, "dep_fac", "dep_key"),
                slot(r, "dep2_fac", "dep2_key"),
                r["delivered"],
                r["first_dep_key"],
            )
            for key, r in zip(keys, summary.iter_rows(named=True), strict=True)
        }
        assert got == _naive_summary([r for r in seen if r[1] < mark])
        assert _sorted(stages._decode(stages.rows)) == sorted(r for r in seen if r[1] >= mark)
    assert stages.summary.height > 0 and stages.mark == mark
    assert 0 < stages.exact.height < stages.summary.height


def test_the_mark_and_summaries_go_through_a_checkpoint_and_format_3_is_read(
    tmp_path: Path,
) -> None:
    rng = random.Random(8)
    items = [rng.getrandbits(64) for _ in range(30)]
    stages = CompactStages().add(_moves(rng, items, 200, 0, 10_000)).fold(5_000 * 10**6 * RANK_BITS)
    stages = stages.fold(5_100 * 10**6 * RANK_BITS)  # the horizon only
    ckpt = _checkpoint(stages)
    path = write_checkpoint(tmp_path, ckpt)
    again = read_checkpoint(path).stages
    assert again.mark == stages.mark and again.summary.equals(stages.summary)
    assert again.horizon == stages.horizon == 5_100 * 10**6 * RANK_BITS
    assert again.exact.equals(stages.exact) and again.summaries().equals(stages.summaries())
    assert again.rows.equals(stages.rows) and again.summary.height > 0
    # Format 4 held the codes as UInt32: read as the dictionary's code type.
    assert stages.summary.schema["dep_fac"] == pl.UInt16
    four = write_checkpoint(tmp_path / "four", ckpt)
    stages.summary.cast(
        {"arr_fac": pl.UInt32, "dep_fac": pl.UInt32, "dep2_fac": pl.UInt32}
    ).write_parquet(four / "stage_summary.parquet")
    meta = orjson.loads((four / "meta.json").read_bytes())
    meta["format"] = 4
    (four / "meta.json").write_bytes(orjson.dumps(meta))
    assert read_checkpoint(four).stages.summary.equals(stages.summary)
    # A format-3 checkpoint kept every scan, no summary: read as recent scans, no mark.
    old = CompactStages().add(_moves(rng, items, 50, 0, 1000))
    path = write_checkpoint(tmp_path, dataclasses.replace(ckpt, seq=2, stages=old))
    (path / "stage_summary.parquet").unlink()
    meta = orjson.loads((path / "meta.json").read_bytes())
    meta["format"] = 3
    del meta["stage_mark"]
    (path / "meta.json").write_bytes(orjson.dumps(meta))
    three = read_checkpoint(path).stages
    assert three.mark is None and three.summary.is_empty() and three.rows.equals(old.rows)


def test_a_restored_checkpoint_starts_the_process_local_counters_from_zero(
    tmp_path: Path,
) -> None:
    # A restart re-reads what it lost as one larger set, in which fewer scans may be late:
    # restored, the late-scans counter could stand lower than it was served (a reset spike).
    ckpt = _checkpoint(CompactStages())
    ckpt.counters.add(cat.EXPORTER_STAGE_LATE_SCANS, ("arrived",), 3)
    ckpt.counters.add(cat.ITEMS_ACCEPTED, ("express", "CN-BJ", "CN-SH"), 5)
    again = read_checkpoint(write_checkpoint(tmp_path, ckpt)).counters
    assert dict(again.series(cat.EXPORTER_STAGE_LATE_SCANS)) == {}
    assert dict(again.series(cat.ITEMS_ACCEPTED)) == {("express", "CN-BJ", "CN-SH"): 5}
    assert dict(ckpt.counters.series(cat.EXPORTER_STAGE_LATE_SCANS)) == {("arrived",): 3}


def test_summary_codes_widen_past_65536_facilities(tmp_path: Path) -> None:
    """The summaries' facility codes are UInt16 while the dictionary holds at most 65,536
    names and UInt32 past it: each summary names the same facilities either way."""
    n = 70_000
    hashes = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    keys = item_key(hashes)
    second = 10**6 * RANK_BITS
    rows = pl.DataFrame(
        {
            "item_id": pl.concat([keys, keys]),
            "key": [i * second + STAGE["departed"] for i in range(n)]
            + [(i + 1) * second + STAGE["arrived"] for i in range(n)],
            "facility": [f"F{i}" for i in range(n)] + [f"F{(i + 1) % n}" for i in range(n)],
        },
        schema=HISTORY_SCHEMA,
    )
    small = CompactStages().add(rows.head(1_000)).fold((n + 5) * second)
    assert small.summary.schema["arr_fac"] == pl.UInt16
    big = small.add(rows.slice(1_000)).fold((n + 5) * second + FOLD_STEP)
    assert big.names.height == n and big.summary.height == n
    assert all(big.summary.schema[c] == pl.UInt32 for c in ("arr_fac", "dep_fac", "dep2_fac"))
    names = big.names.get_column("facility")
    summary = big.summaries()
    assert summary.schema["dep_fac"] == pl.UInt32
    got = dict(
        zip(
            item_key(summary["item"]).to_list(),
            zip(names.gather(summary["dep_fac"]), names.gather(summary["arr_fac"]), strict=True),
            strict=True,
        )
    )
    want = {k: (f"F{i}", f"F{(i + 1) % n}") for i, k in enumerate(keys.to_list())}
    assert got == want
    again = read_checkpoint(write_checkpoint(tmp_path, _checkpoint(big))).stages
    assert again.summary.equals(big.summary) and again.summaries().equals(summary)
