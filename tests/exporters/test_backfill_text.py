"""The staging text: what ``Stager`` writes equals prometheus_client's own OpenMetrics encoder
fed one ``add_metric(..., timestamp=...)`` per point (values compared as numbers: the
backfill writes counts as integers, the client as floats)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any, cast

import polars as pl
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.openmetrics import exposition

from exporters import catalog as cat
from exporters.backfill import SPECS, THRESHOLD, Stager
from exporters.store import bucket_edges_us
from kpi.kpis.step_values import cumulative_buckets
from kpi.kpis.steps import VALUE, K, step_deltas, step_grid
from kpi.simulate import SimConfig, generate, write_data_folder
from kpi.sources.folder import load_data_dir

EXTRA = {"job": "postal-exporter", "instance": "127.0.0.1:9108"}


class _One:
    def __init__(self, family: Any) -> None:
        self.family = family

    def collect(self) -> list[Any]:
        return [self.family]


def _reference(
    name: str, values: dict[str, pl.DataFrame], stager: Stager, k0: int, k1: int
) -> list[str]:
    spec = SPECS[name] if name != THRESHOLD else cat.BACKLOG_THRESHOLD
    family = spec.family([*spec.labels, *EXTRA])
    labels = list(spec.labels)
    ts = {k: stager.steps[k] // 1_000_000 for k in range(k0, k1)}
    if spec.type is cat.MetricType.HISTOGRAM:
        buckets = cumulative_buckets(values[f"{name}:bucket"], labels, len(spec.buckets))
        sums = {
            (*r[:-2], r[-2]): r[-1] for r in values[f"{name}:sum"].select(*labels, K, VALUE).rows()
        }
        per = buckets.sort(*labels, K, "bucket").group_by([*labels, K], maintain_order=True)
        for key, part in per:
            cum = list(zip(spec.le_values, part[VALUE].cast(pl.Float64).to_list(), strict=True))
            total = sums.get(tuple(key), 0) / 1e6
            cast(HistogramMetricFamily, family).add_metric(
                [*key[:-1], *EXTRA.values()], cum, total, timestamp=ts[key[-1]]
            )
    else:
        if name == THRESHOLD:
            frame = stager.values.thresholds().join(
                pl.DataFrame({K: list(range(k0, k1))}), how="cross"
            )
        else:
            frame = values[name]
        scale = 1e6 if name == "backlog_oldest" else 1
        for row in frame.sort(*labels, K).select(*labels, K, VALUE).rows():
            family.add_metric([*row[:-2], *EXTRA.values()], row[-1] / scale, timestamp=ts[row[-2]])
    text = exposition.generate_latest(_One(family)).decode()
    return [line for line in text.splitlines() if line != "# EOF"] if family.samples else []


def _split(line: str) -> tuple[str, float, str]:
    head, value, ts = line.rsplit(" ", 2)
    return head, float(value), ts


def test_staging_text_equals_the_client_encoder(tmp_path: Path) -> None:
    start = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    write_data_folder(generate(SimConfig(items=150, days=2, seed=9, start=start)), tmp_path)
    ds = load_data_dir(tmp_path)
    steps = step_grid(start, start + dt.timedelta(days=2), dt.timedelta(hours=3))
    deltas = step_deltas(
        ds.events,
        ds.complaints,
        ds.facilities,
        ds.standards,
        steps,
        transit_edges_us=bucket_edges_us(cat.TRANSIT_TIME),
        resolution_edges_us=bucket_edges_us(cat.COMPLAINT_RESOLUTION),
    )
    stager = Stager(deltas, EXTRA)
    # A twin fed the same deltas gives the reference the same window values.
    twin = Stager(deltas, EXTRA)
    checked = 0
    for k0, k1 in stager.windows(dt.timedelta(hours=18)):
        sink = io.BytesIO()
        stager.write(sink, k0, k1)
        got = sink.getvalue().decode().splitlines()
        assert got[-1] == "# EOF"
        values = twin.values.window(k0, k1)
        want: list[str] = []
        for name in (*SPECS, THRESHOLD):
            want += _reference(name, values, twin, k0, k1)
        assert len(got) - 1 == len(want)
        for mine, theirs in zip(got[:-1], want, strict=True):
            if mine.startswith("#"):
                assert mine == theirs
            else:
                assert _split(mine) == _split(theirs)
                checked += 1
    assert checked > 5_000
