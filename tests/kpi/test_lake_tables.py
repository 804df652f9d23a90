"""``kpi.lake_tables``: per-bucket lifecycle tables, incremental, atomic, equal to a rebuild.

The reference is the folder path: the lifecycle state the engine builds from every
validated event of the folder at once (``collect_state`` over ``load_data_dir``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import kpi.simulate as sim
from kpi.lake import Manifest, bucket_of, compact, read_events
from kpi.lake_snapshot import LakeReader
from kpi.lake_tables import TABLES, TableIndex, part_bucket, read_tables, refresh_tables
from kpi.lifecycle import collect_state
from kpi.sources.folder import load_data_dir

ROOT = Path(__file__).resolve().parents[2]
BUCKETS = 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    sim.write_data_folder(sim.generate(sim.SimConfig(items=400, days=5, seed=11)), out)
    return out


@pytest.fixture(scope="module")
def events(folder: Path) -> pl.DataFrame:
    """The folder's validated, de-duplicated events (what a lake holds)."""
    return load_data_dir(folder).events.collect()


def reference_state(events: pl.DataFrame) -> pl.DataFrame:
    (
        state,
        _,
        _,
    ) = collect_state(events.lazy())
    return state.sort("item_id")


def tables_state(lake: Path) -> pl.DataFrame:
    manifest = Manifest.load(lake)
    assert manifest is not None
    return read_tables(lake, manifest.parts).state.sort("item_id")


def test_one_compaction_writes_every_bucket_state(
    folder: Path, events: pl.DataFrame, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    compact(folder, lake, buckets=BUCKETS)
    index = TableIndex.load(lake)
    manifest = Manifest.load(lake)
    assert manifest is not None
    assert sorted(index.covered) == sorted(manifest.parts)
    assert set(index.states) == {part_bucket(p) for p in manifest.parts}
    # Each bucket's file holds exactly the items whose id hashes to it.
    for bucket, rel in index.states.items():
        ids = pl.read_parquet(lake / rel)["item_id"].to_list()
        assert ids and all(bucket_of(i, BUCKETS) == bucket for i in ids)
    assert_frame_equal(tables_state(lake), reference_state(events))
    assert index.first == events["ts"].min() and index.last == events["ts"].max()
    accepted = events.filter(pl.col("event") == "accepted")
    assert index.known["destination"] == sorted(accepted["destination"].unique().to_list())
    assert index.known["facility"] == sorted(events["facility"].drop_nulls().unique().to_list())


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    runs=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    repeat=st.floats(min_value=0.0, max_value=0.3),
)
def test_any_split_into_runs_gives_the_full_rebuild(
    events: pl.DataFrame,
    tmp_path_factory: pytest.TempPathFactory,
    runs: int,
    seed: int,
    repeat: float,
) -> None:
    """Events split at random into compaction runs, some repeated in later runs."""
    root = tmp_path_factory.mktemp("split")
    data, lake = root / "data", root / "lake"
    (data / "events").mkdir(parents=True)
    shuffled = events.sample(fraction=1.0, shuffle=True, seed=seed)
    run_of = pl.Series(
        [int(x) for x in (pl.int_range(0, shuffled.height, eager=True) * 7919 + seed) % runs]
    )
    done: list[pl.DataFrame] = []
    for r in range(runs):
        batch = shuffled.filter(run_of == r)
        if done and repeat > 0:
            # Duplicates across runs: events an earlier run already compacted.
            again = pl.concat(done).sample(fraction=repeat, seed=seed + r)
            batch = pl.concat([batch, again])
        batch.write_parquet(data / "events" / f"run-{r}.parquet")
        compact(data, lake, buckets=BUCKETS)
        done.append(shuffled.filter(run_of == r))
    assert_frame_equal(tables_state(lake), reference_state(events))
    index = TableIndex.load(lake)
    assert index.first == events["ts"].min() and index.last == events["ts"].max()
    # And the same table a single run over everything writes.
    whole = root / "whole"
    compact(data, whole, buckets=BUCKETS)
    assert_frame_equal(tables_state(lake), tables_state(whole))


_KILL_SCRIPT = """
import sys, time
from pathlib import Path
import kpi.lake as lake
import kpi.lake_tables as tables

where = sys.argv[3]
if where == "tables":
    real = tables._write_state
    def slow(*args, **kwargs):
        out = real(*args, **kwargs)
        print("PAUSED", flush=True)
        time.sleep(120)
        return out
    tables._write_state = slow
else:
    real_save = lake.Manifest.save
    def slow_save(self, path):
        print("PAUSED", flush=True)
        time.sleep(120)
        real_save(self, path)
    lake.Manifest.save = slow_save
lake.compact(Path(sys.argv[1]), Path(sys.argv[2]), buckets=4)
print("DONE", flush=True)
"""


def _killed_compaction(data: Path, lake: Path, where: str) -> None:
    """Run ``compact`` in a real subprocess and SIGKILL it at ``where``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILL_SCRIPT), str(data), str(lake), where],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "PAUSED", line
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _two_halves(folder: Path, data: Path) -> list[Path]:
    files = sorted((folder / "events").iterdir())
    (data / "events").mkdir(parents=True)
    shutil.copy2(folder / "facilities.csv", data / "facilities.csv")
    half = len(files) // 2
    for f in files[:half]:
        shutil.copy2(f, data / "events" / f.name)
    return files[half:]


@pytest.mark.parametrize("where", ["manifest", "tables"])
def test_a_killed_compaction_leaves_readers_on_a_complete_version(
    folder: Path, events: pl.DataFrame, tmp_path: Path, where: str
) -> None:
    data, lake = tmp_path / "data", tmp_path / "lake"
    rest = _two_halves(folder, data)
    compact(data, lake, buckets=BUCKETS)
    before_events = read_events(lake).collect().sort("event_id")
    before = tables_state(lake)
    for f in rest:
        shutil.copy2(f, data / "events" / f.name)
    _killed_compaction(data, lake, where)
    seen = read_events(lake).collect().sort("event_id")
    view = LakeReader.open(lake).tables()
    if where == "manifest":
        # Killed before its commit: the previous version, tables and all.
        assert_frame_equal(seen, before_events)
        assert_frame_equal(view.state.sort("item_id"), before)
        assert view.uncovered == 0
    else:
        # Killed after the manifest commit, while writing the tables: readers see the
        # committed events, the parts the tables miss merged in from their events.
        assert seen.height == events.height
        assert view.uncovered > 0
        assert_frame_equal(view.state.sort("item_id"), reference_state(events))
    # The next run completes the work: every event once, tables equal to a rebuild,
    # nothing of the killed run left behind.
    compact(data, lake, buckets=BUCKETS)
    assert not list(lake.glob("_staging-tables-*"))
    listed = {lake / rel for rel in TableIndex.load(lake).states.values()}
    assert set(lake.glob("state/bucket=*/*.parquet")) == listed
    assert read_events(lake).collect().height == events.height
    manifest = Manifest.load(lake)
    assert manifest is not None
    assert sorted(TableIndex.load(lake).covered) == sorted(manifest.parts)
    assert_frame_equal(tables_state(lake), reference_state(events))


def test_a_table_ahead_of_the_manifest_is_refused(folder: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    compact(folder, lake, buckets=BUCKETS)
    manifest = Manifest.load(lake)
    assert manifest is not None
    from kpi.lake_tables import TablesError  # noqa: PLC0415

    with pytest.raises(TablesError, match="does not list"):
        read_tables(lake, manifest.parts[1:])
    with pytest.raises(TablesError, match="no longer lists"):
        refresh_tables(lake, manifest.parts[1:])
    (lake / TABLES).write_text("{not json")
    with pytest.raises(TablesError, match="not a lifecycle table index"):
        read_tables(lake, manifest.parts)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--by", "destination", "--granularity", "day", "--tz", "Asia/Shanghai"],
        ["--by", "facility", "--kpi", "backlog_items,dwell_hours_p90"],
        ["--by", "from_facility,to_facility", "--kpi", "leg_hours_p50"],
        ["--as-of", "2027-01-14T12:00:00Z", "--by", "product"],
    ],
)
def test_kpi_report_on_a_lake_equals_the_folder(
    folder: Path, tmp_path: Path, args: list[str]
) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415  (test-only)

    from kpi_cli.app import app  # noqa: PLC0415

    lake = tmp_path / "lake"
    compact(folder, lake, buckets=BUCKETS)
    runner = CliRunner()
    got = runner.invoke(app, ["report", str(lake), "--format", "csv", *args])
    expected = runner.invoke(app, ["report", str(folder), "--format", "csv", *args])
    assert got.exit_code == expected.exit_code == 0, got.output
    a = pl.read_csv(got.stdout.encode())
    b = pl.read_csv(expected.stdout.encode())
    assert a.height > 0
    assert_frame_equal(a, b, check_exact=False, rel_tol=1e-9)
