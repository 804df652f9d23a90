"""The encoded stage history: the same rows back (acceptances left out), per item, after
appends, retirements and a checkpoint; a checkpoint of the string-history format is
refused with a message."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from exporters.compact import CompactItems, item_key, key_hashes
from exporters.compact_stages import CompactStages
from exporters.state import Checkpoint, latest_checkpoint, read_checkpoint, write_checkpoint
from exporters.store import CounterStore
from kpi.events import RANK_BITS, STAGE
from kpi.kpis.increments import COMPLAINT_STATE_SCHEMA
from kpi.kpis.stage_increments import HISTORY_SCHEMA


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
    ckpt = Checkpoint(
        seq=1,
        created_at=0.0,
        files={},
        counters=CounterStore(),
        items=CompactItems(),
        complaints=pl.DataFrame(schema=COMPLAINT_STATE_SCHEMA),
        seen=np.zeros(0, np.uint64),
        rejects_bytes=0,
        last_event_us=None,
        stages=kept,
    )
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
