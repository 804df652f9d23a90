"""``kpi.lake.compact`` in batches: the same lake as one batch, and atomic across batches."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import kpi.simulate as sim
from kpi.lake import CompactReport, Manifest, compact, read_complaints, read_events
from kpi.sources.folder import load_data_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated folder with bad rows, plus duplicates within a file and across files.

    ``zz-dups.parquet`` (read last) repeats rows of the first file, twice each, and
    carries one id of the first file under another item: first read wins, whatever
    the item; ``zz-dups2.parquet`` repeats them once more (in another batch).
    """
    out = tmp_path_factory.mktemp("data")
    sim.write_data_folder(
        sim.generate(sim.SimConfig(items=600, days=6, seed=5, bad_rows=0.02)), out
    )
    first = pl.read_parquet(sorted((out / "events").glob("*.parquet"))[0])
    again = first.head(40)
    other_item = first.filter(pl.col("item_id") != first["item_id"][0])["item_id"][0]
    moved = first.head(1).with_columns(pl.lit(other_item).alias("item_id"))
    pl.concat([again, again, moved]).write_parquet(out / "events" / "zz-dups.parquet")
    again.write_parquet(out / "events" / "zz-dups2.parquet")
    return out


def _lake(lake: Path) -> tuple[pl.DataFrame, pl.DataFrame, list[dict[str, object]]]:
    """What a lake holds: events and complaints (sorted), and its rejects (in read order)."""
    rejects: list[dict[str, object]] = []
    for path in sorted((lake / "_rejects").glob("*.jsonl")):
        kind = path.stem.rsplit("-", 1)[1]  # the run's name differs, the kind does not
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rejects.append({**row, "kind": kind, "source": Path(row["source"]).name})
    return (
        read_events(lake).collect().sort("event_id"),
        read_complaints(lake).collect().sort("complaint_id"),
        rejects,
    )


def _counts(rep: CompactReport) -> tuple[object, ...]:
    return (rep.files, rep.rows_read, rep.new_events, rep.duplicate_events, rep.complaints)


def _runs(
    folder: Path, data: Path, lake: Path, cuts: list[int], batch_rows: int
) -> list[tuple[object, ...]]:
    """Compact ``folder``'s event files arriving in runs split at ``cuts``; each run's counts."""
    events = sorted((folder / "events").iterdir())
    shutil.copytree(folder, data, ignore=shutil.ignore_patterns("events"))
    (data / "events").mkdir()
    reps = []
    for lo, hi in zip([0, *cuts], [*cuts, len(events)], strict=True):
        for f in events[lo:hi]:
            shutil.copy2(f, data / "events" / f.name)
        rep = compact(data, lake, buckets=4, batch_rows=batch_rows)
        reps.append((*_counts(rep), sorted(rep.rejected.items())))
    return reps


@pytest.fixture(scope="module")
def one_batch(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder compacted in one run of one batch (the reference)."""
    lake = tmp_path_factory.mktemp("one") / "lake"
    compact(folder, lake, buckets=4, batch_rows=10**9)
    return lake


@pytest.mark.parametrize("batch_rows", [1, 3000, 10**9])
def test_batches_give_the_one_batch_lake(
    folder: Path, one_batch: Path, tmp_path: Path, batch_rows: int
) -> None:
    lake = tmp_path / "lake"
    rep = compact(folder, lake, buckets=4, batch_rows=batch_rows)
    ref = compact(folder, tmp_path / "ref", buckets=4, batch_rows=10**9)
    assert _counts(rep) == _counts(ref) and rep.rejected == ref.rejected
    got, want = _lake(lake), _lake(one_batch)
    assert_frame_equal(got[0], want[0])
    assert_frame_equal(got[1], want[1])
    # Row order within a file's rejects is the validator's (a join): compare as sets.
    assert sorted(map(str, got[2])) == sorted(map(str, want[2]))
    # Independent check: the single-process engine on the folder (first read wins).
    expected = load_data_dir(folder).events.collect().sort("event_id")
    assert_frame_equal(got[0], expected.select(got[0].columns))
    if batch_rows == 1:  # one file a batch: zz-dups repeats the first file's ids
        assert len({Path(p).name.rsplit("-", 1)[1] for p in Manifest.load(lake).parts}) > 1  # type: ignore[union-attr]


def test_a_duplicate_id_under_another_item_keeps_the_first(folder: Path, tmp_path: Path) -> None:
    first = pl.read_parquet(sorted((folder / "events").glob("*.parquet"))[0]).row(0, named=True)
    moved = pl.read_parquet(folder / "events" / "zz-dups.parquet").tail(1).row(0, named=True)
    assert moved["event_id"] == first["event_id"] and moved["item_id"] != first["item_id"]
    # Across batches of one run, and across runs: the lake keeps the first item.
    for batch_rows, cuts in ((1, []), (10**9, [1])):
        lake = tmp_path / f"lake-{batch_rows}"
        _runs(folder, tmp_path / f"data-{batch_rows}", lake, cuts, batch_rows)
        held = read_events(lake).filter(pl.col("event_id") == first["event_id"]).collect()
        assert held["item_id"].to_list() == [first["item_id"]]
    # The run that brings only the moved event counts it as already in the lake.
    data, lake = tmp_path / "solo", tmp_path / "solo-lake"
    (data / "events").mkdir(parents=True)
    pl.DataFrame([first]).write_parquet(data / "events" / "a.parquet")
    assert compact(data, lake, buckets=4).new_events == 1
    pl.DataFrame([moved]).write_parquet(data / "events" / "b.parquet")
    rep = compact(data, lake, buckets=4)
    assert (rep.new_events, rep.duplicate_events) == (0, 1)


def test_ids_the_lake_holds_count_once_per_run_across_batches(folder: Path, tmp_path: Path) -> None:
    # Run 2 brings zz-dups and zz-dups2, both repeating 40 ids the lake holds: 40 counted.
    split = _runs(folder, tmp_path / "data", tmp_path / "lake", [8], 1)
    whole = _runs(folder, tmp_path / "data1", tmp_path / "lake1", [8], 10**9)
    assert split == whole
    assert split[1][2:4] == (0, 40)  # (new events, already in the lake)


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(1, 9), max_size=2, unique=True).map(sorted),
    batch_rows=st.sampled_from([1, 2000, 7000, 10**9]),
)
def test_runs_and_batches_give_the_one_batch_lake(
    folder: Path,
    one_batch: Path,
    tmp_path_factory: pytest.TempPathFactory,
    cuts: list[int],
    batch_rows: int,
) -> None:
    base = tmp_path_factory.mktemp("runs")
    split = _runs(folder, base / "data", base / "lake", cuts, batch_rows)
    whole = _runs(folder, base / "data1", base / "lake1", cuts, 10**9)
    assert split == whole  # every run reports the same counts as in one batch
    got, want = _lake(base / "lake"), _lake(one_batch)
    assert_frame_equal(got[0], want[0])
    assert_frame_equal(got[1], want[1])
    assert sorted(map(str, got[2])) == sorted(map(str, want[2]))


def _snapshot(lake: Path) -> tuple[bytes, pl.DataFrame, pl.DataFrame]:
    return (lake / "_manifest.json").read_bytes(), *_lake(lake)[:2]


def test_a_failure_between_batches_leaves_the_lake_as_it_was(
    folder: Path, one_batch: Path, tmp_path: Path
) -> None:
    data, lake = tmp_path / "data", tmp_path / "lake"
    events = sorted((folder / "events").iterdir())
    shutil.copytree(folder, data, ignore=shutil.ignore_patterns(*(f.name for f in events[3:])))
    compact(data, lake, buckets=4)  # a lake of the first 3 event files
    for f in events[3:]:
        shutil.copy2(f, data / "events" / f.name)
    before = _snapshot(lake)

    def crash(batch: int) -> None:
        if batch == 1:
            raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        compact(data, lake, buckets=4, batch_rows=1, after_batch=crash)
    after = _snapshot(lake)
    assert after[0] == before[0]
    assert_frame_equal(after[1], before[1])
    assert not list(lake.glob("_staging-*"))
    # A real process killed (SIGKILL) after its second batch: nothing committed either.
    script = (
        "import os, signal, sys; from pathlib import Path; from kpi.lake import compact\n"
        "def die(i):\n    if i == 1: os.kill(os.getpid(), signal.SIGKILL)\n"
        "compact(Path(sys.argv[1]), Path(sys.argv[2]), buckets=4, batch_rows=1, after_batch=die)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(data), str(lake)],
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -signal.SIGKILL
    assert list(lake.glob("_staging-*"))  # it died mid-run, parts staged
    after = _snapshot(lake)
    assert after[0] == before[0]
    assert_frame_equal(after[1], before[1])
    assert_frame_equal(after[2], before[2])
    # The next run adds the rest: the lake of one batch.
    compact(data, lake, buckets=4, batch_rows=1)
    assert_frame_equal(_lake(lake)[0], _lake(one_batch)[0])
    assert not list(lake.glob("_staging-*"))  # and sweeps what the killed one staged


def test_the_id_files_hold_the_lake_ids_and_old_lakes_still_dedupe(
    folder: Path, one_batch: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    _runs(folder, tmp_path / "data", lake, [3, 8], 2000)
    manifest = Manifest.load(lake)
    assert manifest is not None and manifest.ids
    ids = pl.read_parquet([lake / p for p in manifest.ids])["event_id"]
    assert ids.is_unique().all()
    assert set(ids) == set(read_events(lake).collect()["event_id"])
    # A lake written before the id files (no "ids" in its manifest) reads its parts.
    old, data = tmp_path / "old", tmp_path / "old-data"
    whole = _runs(folder, tmp_path / "data1", tmp_path / "lake1", [3], 10**9)
    events = sorted((folder / "events").iterdir())
    shutil.copytree(folder, data, ignore=shutil.ignore_patterns(*(f.name for f in events[3:])))
    compact(data, old, buckets=4)
    raw = json.loads((old / "_manifest.json").read_text())
    del raw["ids"]
    (old / "_manifest.json").write_text(json.dumps(raw))
    for f in events[3:]:
        shutil.copy2(f, data / "events" / f.name)
    rep = compact(data, old, buckets=4, batch_rows=1)
    assert (*_counts(rep), sorted(rep.rejected.items())) == whole[1]
    assert Manifest.load(old).ids is None  # type: ignore[union-attr]
    assert_frame_equal(_lake(old)[0], _lake(one_batch)[0])
