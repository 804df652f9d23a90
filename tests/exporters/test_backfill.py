"""``kpi backfill`` end to end: blocks made by the real promtool, queried in a real Prometheus.

Expected numbers come from the KPI engine as ``kpi report`` asks it
(``Snapshot.from_dataset`` + ``KpiQuery``) on the same folder: window answers
``[d, d+1)`` for counters, as-of answers for gauges. Two folders: a generated
scenario and a slice of the real Olist orders.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from exporters import catalog as cat
from exporters.backfill import BackfillError, Options, backfill
from exporters.mixin import rules
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.simulate import SimConfig, generate, write_data_folder
from kpi.sources.folder import load_data_dir
from tests import netkit, promkit
from tests.exporterkit import ExporterProcess
from tests.olist import olist_folder

pytestmark = pytest.mark.prometheus

UTC = dt.UTC
SIM_START = dt.datetime(2026, 1, 10, tzinfo=UTC)
BRT = "-03:00"
#: Prometheus deletes blocks older than its retention (default 15 d) counted back from
#: the newest block: the history must fit in it (docs/backfill.md).
RETENTION = (
    "--storage.tsdb.retention.time=3650d",
)  # Olist timestamps are local Brazilian time without an offset


@dataclass
class Loaded:
    data: Path
    prom: promkit.PrometheusServer
    start: dt.datetime
    end: dt.datetime
    step: dt.timedelta


def _load(root: Path, data: Path, **kwargs: Any) -> Iterator[Loaded]:
    opts = Options(data_dir=data, out=root / "prom" / "data", **kwargs)
    result = backfill(opts)
    server = promkit.start_prometheus(root / "prom", scrape={}, extra_args=RETENTION)
    try:
        yield Loaded(data, server, result.start, result.end, opts.step)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    root = tmp_path_factory.mktemp("backfill-sim")
    data = root / "data"
    write_data_folder(generate(SimConfig(items=800, days=3, seed=7, start=SIM_START)), data)
    yield from _load(
        root,
        data,
        start=SIM_START,
        end=SIM_START + dt.timedelta(days=3),
        step=dt.timedelta(minutes=15),
    )


@pytest.fixture(scope="module")
def olist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    root = tmp_path_factory.mktemp("backfill-olist")
    data = olist_folder(root / "data")
    yield from _load(
        root,
        data,
        start=dt.datetime(2018, 3, 1, tzinfo=UTC),
        end=dt.datetime(2018, 5, 9, tzinfo=UTC),
        step=dt.timedelta(hours=1),
        rules=False,
        block=dt.timedelta(hours=54),  # a larger TSDB range: fewer promtool runs
    )


def _by(prom: promkit.PrometheusServer, expr: str, label: str, at: dt.datetime) -> dict[str, float]:
    return {
        r["metric"].get(label, ""): float(r["value"][1])
        for r in prom.query(expr, at=at.timestamp())
    }


def _nonzero(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v}


def _window(data: Path, a: dt.datetime, b: dt.datetime, *kpis: str) -> dict[str, Any]:
    snap = Snapshot.from_dataset(load_data_dir(data))
    return dict(snap.query(KpiQuery(kpis=kpis, start=a, end=b)).row(0, named=True))


def _as_of(data: Path, t: dt.datetime, kpis: tuple[str, ...], by: str) -> dict[str, float]:
    frame = Snapshot.from_dataset(load_data_dir(data), t).query(KpiQuery(kpis=kpis, by=(by,)))
    return _nonzero({str(r[by]): float(r[kpis[0]]) for r in frame.iter_rows(named=True)})


def _increase(loaded: Loaded, expr: str, label: str, a: dt.datetime, b: dt.datetime) -> dict:
    end, start = _by(loaded.prom, expr, label, b), _by(loaded.prom, expr, label, a)
    return _nonzero({k: end[k] - start.get(k, 0.0) for k in end})


def _days(loaded: Loaded) -> list[dt.datetime]:
    first = loaded.start
    return [first + dt.timedelta(days=i) for i in range((loaded.end - first).days)]


def _check_days(loaded: Loaded, days: list[dt.datetime]) -> int:
    delivered_days = 0
    for a in days:
        b = a + dt.timedelta(days=1)
        report = _window(
            loaded.data,
            a,
            b,
            "accepted_items",
            "delivered_items",
            "on_time_items",
            "late_1d_items",
            "late_2d_items",
            "late_3d_plus_items",
            "returned_items",
            "complaints",
        )
        late = report["late_1d_items"] + report["late_2d_items"] + report["late_3d_plus_items"]
        expected = _nonzero(
            {
                "true": report["on_time_items"],
                "false": late,
                "unknown": report["delivered_items"] - report["on_time_items"] - late,
            }
        )
        got = _increase(loaded, f"sum by (on_time) ({cat.ITEMS_DELIVERED.series})", "on_time", a, b)
        assert got == expected, a
        delivered_days += bool(expected)
        accepted = _increase(loaded, f"sum({cat.ITEMS_ACCEPTED.series})", "", a, b)
        assert accepted == _nonzero({"": report["accepted_items"]}), a
        returned = _increase(loaded, f"sum({cat.ITEMS_RETURNED.series})", "", a, b)
        assert returned == _nonzero({"": report["returned_items"]}), a
        complaints = _increase(loaded, f"sum({cat.COMPLAINTS.series})", "", a, b)
        assert complaints == _nonzero({"": report["complaints"]}), a
    return delivered_days


def test_sim_daily_counters_equal_the_report_windows(sim: Loaded) -> None:
    assert _check_days(sim, _days(sim)) >= 2


def test_olist_daily_counters_equal_the_report_windows(olist: Loaded) -> None:
    days = [dt.datetime(2018, 3, d, tzinfo=UTC) for d in (2, 5, 9, 13)]
    days += [dt.datetime(2018, 3, 20, tzinfo=UTC), dt.datetime(2018, 4, 3, tzinfo=UTC)]
    assert _check_days(olist, days) >= 3


@pytest.mark.parametrize("hours", [7.5, 30, 61, 70.25])
def test_sim_gauges_equal_the_report_as_of(sim: Loaded, hours: float) -> None:
    t = sim.start + dt.timedelta(hours=hours)
    backlog = _as_of(sim.data, t, ("backlog_items",), "facility")
    assert backlog  # the scenario has items waiting at every checked instant
    got = _nonzero(_by(sim.prom, f"sum by (facility) ({cat.BACKLOG_ITEMS.series})", "facility", t))
    assert got == backlog
    for kpi, spec in (
        ("in_network_items", cat.ITEMS_IN_NETWORK),
        ("overdue_items", cat.ITEMS_OVERDUE),
        ("stalled_items", cat.ITEMS_STALLED),
    ):
        label = "region" if spec is cat.ITEMS_STALLED else "destination"
        expected = _as_of(sim.data, t, (kpi,), "destination")
        got = _nonzero(_by(sim.prom, f"sum by ({label}) ({spec.series})", label, t))
        assert got == expected, kpi
    expected_open = _as_of(sim.data, t, ("open_complaints",), "region")
    got_open = _by(sim.prom, f"sum by (region) ({cat.COMPLAINTS_OPEN.series})", "region", t)
    assert _nonzero(got_open) == expected_open


def test_olist_in_network_equals_the_report_as_of(olist: Loaded) -> None:
    for t in (dt.datetime(2018, 3, 7, 15, tzinfo=UTC), dt.datetime(2018, 3, 21, tzinfo=UTC)):
        expected = _as_of(olist.data, t, ("in_network_items",), "destination")
        assert expected
        expr = f"sum by (destination) ({cat.ITEMS_IN_NETWORK.series})"
        assert _nonzero(_by(olist.prom, expr, "destination", t)) == expected


def test_sim_recording_rule_has_history(sim: Loaded) -> None:
    """The 1-day on-time rule over the backfilled range equals the report's trailing day."""
    checked = 0
    for hours in (30, 48, 60, 72):
        t = sim.start + dt.timedelta(hours=hours)
        ratio = sim.prom.query(rules.on_time_ratio("1d"), at=t.timestamp())
        assert ratio, f"no {rules.on_time_ratio('1d')} at {t}"
        # The recorded numerator is increase() over [t-1d, t]: with samples on both ends
        # it is the report's window [t-1d, t) exactly.
        report = _window(sim.data, t - dt.timedelta(days=1), t, "on_time_items")
        got = sim.prom.query(f"sum({rules.on_time_delivered('1d')})", at=t.timestamp())
        assert float(got[0]["value"][1]) == pytest.approx(report["on_time_items"])
        checked += 1
    assert checked == 4


def test_live_exporter_continues_every_counter(tmp_path: Path) -> None:
    """Backfill up to now, then scrape the exporter on the same (finished) folder, whose
    files are not in time order: every counter goes on from the backfilled value, so
    increase() across the seam is 0."""
    data = tmp_path / "data"
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=2)
    write_data_folder(generate(SimConfig(items=400, days=2, seed=3, start=start)), data)
    # Files not in time order: every delivery and scan is read before any acceptance.
    day_files = sorted((data / "events").glob("*.parquet"))
    events = pl.concat([pl.read_parquet(f) for f in day_files])
    for f in day_files:
        f.unlink()
    accepted = pl.col("event") == "accepted"
    events.filter(~accepted).write_parquet(data / "events" / "a-scans-and-deliveries.parquet")
    events.filter(accepted).write_parquet(data / "events" / "z-acceptances.parquet")
    port = netkit.free_port()
    instance = f"127.0.0.1:{port}"
    prom_dir = tmp_path / "prom"
    result = backfill(
        Options(
            data_dir=data,
            out=prom_dir / "data",
            end=dt.datetime.now(UTC),
            rules=False,
            instance=instance,
            step=dt.timedelta(minutes=15),
        )
    )
    exporter = ExporterProcess(data, tmp_path / "state", ["--refresh-interval", "1s"], port=port)
    exporter.start()
    try:
        exporter.wait_ready()
        config = promkit.prometheus_config({cat.EXPORTER_JOB: [instance]})
        with promkit.run_prometheus(prom_dir, config=config, extra_args=RETENTION) as prom:
            live = f'{cat.ITEMS_ACCEPTED.series}{{instance="{instance}"}}[1m]'
            prom.wait_for(
                lambda: (
                    len(prom.query(f"count_over_time({live})")) > 0
                    and min(float(r["value"][1]) for r in prom.query(f"count_over_time({live})"))
                    >= 3
                ),
                timeout=60,
                what="three live scrapes",
            )
            now = dt.datetime.now(UTC)
            window = int((now - result.end).total_seconds()) + 120
            counters = [
                cat.ITEMS_ACCEPTED.series,
                cat.ITEMS_DELIVERED.series,
                cat.ITEMS_RETURNED.series,
                cat.DELIVERY_ATTEMPTS.series,
                cat.DELIVERY_FAILURES.series,
                cat.COMPLAINTS.series,
                cat.TRANSIT_TIME.count,
                cat.TRANSIT_TIME.bucket,
                cat.TRANSIT_TIME.sum,
            ]
            optional = {
                cat.ITEMS_RETURNED.series,
                cat.DELIVERY_FAILURES.series,
                cat.COMPLAINTS.series,
            }
            for name in counters:
                last = prom.query(name, at=result.end.timestamp())
                # The backfilled series exist at the seam (a short history may have no
                # returns, failures or complaints yet: then the exporter has none either).
                assert last or name in optional, name
                current = {
                    json.dumps(r["metric"], sort_keys=True): r["value"][1] for r in prom.query(name)
                }
                before = {json.dumps(r["metric"], sort_keys=True): r["value"][1] for r in last}
                assert current == before, name
                jump = prom.query(f"sum(increase({name}[{window}s]))")
                assert float(jump[0]["value"][1]) == 0.0 if last else not jump, name
    finally:
        exporter.terminate()


def test_failure_midway_leaves_nothing_in_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promtool that fails (here: a disk-full stand-in) aborts the run: --out stays
    absent and no temporary directory is left beside it."""
    data = olist_folder(tmp_path / "olist")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "promtool"
    fake.write_text("#!/bin/sh\necho 'write block: no space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    out = tmp_path / "blocks"
    with pytest.raises(BackfillError, match="no space left"):
        backfill(Options(data_dir=data, out=out, rules=False))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
