"""The rejects file: committed length, rotation, restore after a rotation, flood summaries."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from exporters.rejects import FLOOD_KEEP, RejectsFile, parse_size
from kpi.sources.validate import REJECT_SCHEMA


def rows(tag: str, n: int, raw: str | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"source": "events/a.jsonl", "row": i, "reason": "bad_type", "field": "ts"}
            | {"raw": raw or f'{{"id": "{tag}-{i}"}}'}
            for i in range(n)
        ],
        schema=REJECT_SCHEMA,
    )


def records(state: Path) -> list[dict[str, object]]:
    files = [*sorted(state.glob("rejects.*.jsonl")), state / "rejects.jsonl"]
    return [json.loads(line) for p in files for line in p.read_text().splitlines()]


def test_rotation_keeps_generations_and_a_restore_undoes_an_unseen_rotation(
    tmp_path: Path,
) -> None:
    f = RejectsFile(tmp_path, None, max_bytes=2000, generations=2)
    f.append(rows("a", 10))
    committed = f.sync()  # what a checkpoint records
    f.append(rows("b", 30))  # after the checkpoint: rotates
    assert list(tmp_path.glob("rejects.*.jsonl"))
    assert all(p.stat().st_size <= 2000 for p in tmp_path.glob("rejects*.jsonl"))
    f.close()
    # crash, restart from the checkpoint: the rows after it are read and rejected again
    again = RejectsFile(tmp_path, committed, max_bytes=2000, generations=2)
    assert [r["raw"] for r in records(tmp_path)] == [f'{{"id": "a-{i}"}}' for i in range(10)]
    assert again.bytes == committed
    again.append(rows("b", 30))
    got = [r["raw"] for r in records(tmp_path)]
    assert got[-30:] == [f'{{"id": "b-{i}"}}' for i in range(30)]
    assert len(got) == len(set(got))  # nothing twice
    assert len(list(tmp_path.glob("rejects.*.jsonl"))) <= 2


def test_identical_rejects_of_a_batch_are_summarised(tmp_path: Path) -> None:
    f = RejectsFile(tmp_path, None)
    f.append(rows("x", 1000, raw="{}"))
    f.close()
    got = records(tmp_path)
    assert len(got) == FLOOD_KEEP + 1
    assert got[-1]["repeats"] == 1000 - FLOOD_KEEP
    assert (got[-1]["row"], got[-1]["last_row"]) == (FLOOD_KEEP, 999)


def test_sizes() -> None:
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("500KiB") == 500 << 10
    assert parse_size("1234") == 1234
