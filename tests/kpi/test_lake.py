"""``kpi.lake``: the stable bucket hash, incremental and atomic compaction, rejects."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import polars as pl
import pytest

import kpi.simulate as sim
from kpi.lake import LakeError, Manifest, bucket_of, compact, read_complaints, read_events
from kpi.sources.folder import load_data_dir, validate_data_dir


def test_bucket_is_crc32_of_the_utf8_id() -> None:
    # 0xCBF43926 is CRC-32's published check value for "123456789".
    assert bucket_of("123456789", 2**32) == 0xCBF43926
    assert bucket_of("123456789", 64) == 0x26  # its low 6 bits
    assert bucket_of("123456789", 10) == 3421780262 % 10
    assert bucket_of("", 64) == 0  # CRC-32 of no bytes is 0
    # Non-ASCII ids hash their UTF-8 bytes ("é" is C3 A9), not code points.
    assert bucket_of("é", 2**32) == zlib.crc32(bytes([0xC3, 0xA9]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated folder with bad rows and in-folder duplicates."""
    out = tmp_path_factory.mktemp("data")
    sim.write_data_folder(
        sim.generate(sim.SimConfig(items=800, days=6, seed=3, bad_rows=0.02)), out
    )
    return out


def _copy(src: Path, dst: Path, files: list[Path]) -> None:
    for f in files:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)


def test_incremental_compaction_adds_only_new_events(folder: Path, tmp_path: Path) -> None:
    data, lake = tmp_path / "data", tmp_path / "lake"
    events = sorted((folder / "events").iterdir())
    assert len(events) >= 4
    first, rest = events[: len(events) // 2], events[len(events) // 2 :]
    _copy(folder, data, first)
    shutil.copy2(folder / "facilities.csv", data / "facilities.csv")
    rep1 = compact(data, lake, buckets=8)
    assert rep1.new_events > 0
    # Second run: the rest, the complaints, and a file that repeats an earlier one.
    _copy(folder, data, rest + sorted((folder / "complaints").iterdir()))
    repeat = data / "events" / f"zz-again{first[0].suffix}"
    shutil.copy2(first[0], repeat)
    rep2 = compact(data, lake, buckets=8)
    assert rep2.files == len(rest) + 1 + len(list((folder / "complaints").iterdir()))
    # Independent check: the single-process engine on the whole folder at once.
    expected = load_data_dir(folder).events.collect()
    got = read_events(lake).collect()
    assert got.height == expected.height
    assert got["event_id"].n_unique() == got.height  # no duplicate across runs
    assert set(got["event_id"]) == set(expected["event_id"])
    # Every valid event of the repeated file was already in the lake: left out, counted.
    solo = tmp_path / "solo"
    _copy(folder, solo, [first[0]])
    assert rep2.duplicate_events >= load_data_dir(solo).events.collect().height > 0
    assert rep1.new_events + rep2.new_events == expected.height
    # Same rows, same values (the lake is the validated frame, reordered).
    assert_same_rows(got, expected, "event_id")
    cexp = load_data_dir(folder).complaints.collect()
    assert_same_rows(read_complaints(lake).collect(), cexp, "complaint_id")
    # A third run with nothing new adds nothing.
    rep3 = compact(data, lake, buckets=8)
    assert (rep3.files, rep3.new_events) == (0, 0)


def assert_same_rows(a: pl.DataFrame, b: pl.DataFrame, key: str) -> None:
    from polars.testing import assert_frame_equal  # noqa: PLC0415

    assert_frame_equal(a.sort(key), b.select(a.columns).sort(key))


def test_parts_are_bucketed_by_item_and_dated(folder: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    compact(folder, lake, buckets=5)
    manifest = Manifest.load(lake)
    assert manifest is not None and manifest.parts
    for rel in manifest.parts:
        bucket_dir, date_dir = Path(rel).parts[1:3]
        bucket = int(bucket_dir.removeprefix("bucket="))
        assert bucket_dir == f"bucket={bucket:02d}"
        part = pl.read_parquet(lake / rel)
        assert {bucket_of(i, 5) for i in part["item_id"]} == {bucket}
        assert {str(d) for d in part["ts"].dt.date()} == {date_dir.removeprefix("date=")}


def test_rejects_are_reported_as_validate_reports_them(folder: Path, tmp_path: Path) -> None:
    rep = compact(folder, tmp_path / "lake", buckets=4)
    reports = validate_data_dir(folder, tmp_path / "rejects")
    expected: dict[str, int] = {}
    for r in reports:
        for reason, n in r.rejected.items():
            expected[reason] = expected.get(reason, 0) + n
    assert sum(expected.values()) > 0  # the scenario has bad rows
    assert dict(rep.rejected) == expected
    assert rep.rows_read == sum(r.rows_read for r in reports)
    written = sum(
        pl.read_ndjson(p).height for p in (tmp_path / "lake" / "_rejects").glob("*.jsonl")
    )
    assert written == sum(expected.values())


def test_a_reader_sees_only_committed_parts(folder: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    compact(folder, lake, buckets=4)
    before = read_events(lake).collect().height
    # A compaction that died after writing a part but before its manifest commit.
    stray = lake / "events" / "bucket=00" / "date=2030-01-01" / "part-crashed.parquet"
    stray.parent.mkdir(parents=True)
    read_events(lake).head(3).collect().write_parquet(stray)
    assert read_events(lake).collect().height == before


def test_bad_lakes_give_clear_errors(folder: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    compact(folder, lake, buckets=4)
    with pytest.raises(LakeError, match="4 buckets, not 8"):
        compact(folder, lake, buckets=8)
    manifest = Manifest.load(lake)
    assert manifest is not None
    (lake / manifest.parts[0]).unlink()
    with pytest.raises(LakeError, match="missing"):
        read_events(lake)
    (lake / "_manifest.json").write_text("{not json")
    with pytest.raises(LakeError, match="not a lake manifest"):
        Manifest.load(lake)
