"""A refresh part by part gives the gauges of the whole state at once: one exporter with
held deliveries, and a shard's partitions (ledgers with their own dictionary codes)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from exporters.books import Ledger
from exporters.gauges import build_view_by_parts, items_tracked
from exporters.ingest import IngestConfig, Ingestor
from exporters.store import CounterStore
from exporters.view import MetricsView, SelfStats, build_view
from kpi.kpis.increments import empty_complaint_state
from kpi.simulate import SimConfig, generate, write_data_folder
from kpi.sources.folder import load_data_dir
from tests.exporters.parity import write_frame

T0 = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
AS_OF = T0 + dt.timedelta(days=9)


def _ledgers(tmp_path: Path, shards: int) -> list[Ledger]:
    """The simulated folder caught up by ``shards`` exporters (items split by id), with the
    acceptances of one item in 12 left out, so their deliveries wait (held)."""
    sim = generate(SimConfig(items=3000, days=8, seed=5, start=T0))
    folder = tmp_path / "sim"
    write_data_folder(sim, folder)
    events = sim.events.filter(
        (pl.col("event").cast(pl.String) != "accepted") | (pl.col("item_id").hash(3) % 12 != 0)
    )
    out = []
    for s in range(shards):
        data = tmp_path / f"data{s}"
        for name in ("facilities.csv", "service-standards.yaml"):
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            (data / name).write_bytes((folder / name).read_bytes())
        mine = events.filter(pl.col("item_id").hash(11) % shards == s)
        write_frame(data / "events" / "events.parquet", mine)
        if s == 0:
            (data / "complaints").mkdir()
            for f in (folder / "complaints").iterdir():
                (data / "complaints" / f.name).write_bytes(f.read_bytes())
        ing = Ingestor(IngestConfig(data, tmp_path / f"state{s}"))
        while ing.step().pending:
            pass
        ing.step()
        out.append(ing.ledger)
        ing.close()
    return out


def _whole(ledgers: list[Ledger], data: Path) -> MetricsView:
    ds = load_data_dir(data)
    items = pl.concat([led.view_items() for led in ledgers], how="vertical")
    complaints = pl.concat(
        [empty_complaint_state(), *(led.complaints for led in ledgers)], how="vertical"
    )
    return build_view(
        items, complaints, ds.facilities, ds.standards, AS_OF,
        CounterStore(), CounterStore(), SelfStats(items_tracked=items.height),
    )  # fmt: skip


@pytest.mark.parametrize("shards", [1, 3])
def test_parts_answer_as_the_whole_state(tmp_path: Path, shards: int) -> None:
    ledgers = _ledgers(tmp_path, shards)
    assert any(led.held_deliveries() for led in ledgers)  # held scans are merged in
    want = _whole(ledgers, tmp_path / "data0")
    ds = load_data_dir(tmp_path / "data0")
    n = sum(led.items.height for led in ledgers)
    assert items_tracked(ledgers) == want.stats.items_tracked >= n
    for chunk in (n // 7, n, 10 * n):  # several parts, one, one with room to spare
        got = build_view_by_parts(
            ledgers, ds.facilities, ds.standards, AS_OF,
            CounterStore(), CounterStore(), SelfStats(), chunk_items=chunk,
        )  # fmt: skip
        for name in ("backlog", "network", "stalled", "complaints"):
            have, expect = getattr(got, name), getattr(want, name)
            assert have is not None and expect is not None
            assert expect.height > 0, name
            assert have.equals(expect), name
