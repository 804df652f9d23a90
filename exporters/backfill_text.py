"""Shared parts of ``kpi backfill``: options, errors, the staging OpenMetrics text, promtool.

See ``exporters.backfill`` for the whole run and why the text is written this way.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, cast

import polars as pl
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as _openmetrics

from exporters import catalog as cat
from kpi.kpis.step_values import StepValues, cumulative_buckets
from kpi.kpis.steps import (
    HISTOGRAMS,
    LABELS,
    StepDeltas,
)
from kpi.kpis.steps import VALUE as _VALUE
from kpi.kpis.steps import K as _K

#: Range of the blocks written (one of the TSDB's compaction ranges 2h, 6h, 18h, 54h, ...):
#: every block costs promtool an fsync'd write (~2 s here), so 18 h rather than the
#: default 2 h; still well below Prometheus' own largest block (10 % of the retention).
BLOCK: Final = dt.timedelta(hours=18)
DEFAULT_STEP: Final = dt.timedelta(minutes=5)
DEFAULT_INSTANCE: Final = f"127.0.0.1:{cat.EXPORTER_PORT}"
_US: Final = 1_000_000

#: Engine measure -> catalog metric (labels must agree; checked below).
SPECS: Final[Mapping[str, cat.MetricSpec]] = {
    "accepted": cat.ITEMS_ACCEPTED,
    "delivered": cat.ITEMS_DELIVERED,
    "returned": cat.ITEMS_RETURNED,
    "attempts": cat.DELIVERY_ATTEMPTS,
    "failures": cat.DELIVERY_FAILURES,
    "transit": cat.TRANSIT_TIME,
    "complaints": cat.COMPLAINTS,
    "resolution": cat.COMPLAINT_RESOLUTION,
    "backlog": cat.BACKLOG_ITEMS,
    "backlog_oldest": cat.BACKLOG_OLDEST_AGE,
    "in_network": cat.ITEMS_IN_NETWORK,
    "overdue": cat.ITEMS_OVERDUE,
    "stalled": cat.ITEMS_STALLED,
    "complaints_open": cat.COMPLAINTS_OPEN,
    "complaints_overdue": cat.COMPLAINTS_OVERDUE,
}
THRESHOLD: Final = "backlog_threshold"
for _name, _spec in SPECS.items():
    if LABELS[_name] != _spec.labels:
        raise ImportError(f"{_spec.name}: engine labels {LABELS[_name]} != {_spec.labels}")
#: Catalog metrics the backfill writes, in exposition order. The exporter's own health
#: metrics (``postal_exporter_*``) describe a running process, not the history: left out.
BACKFILLED: Final = (*SPECS.values(), cat.BACKLOG_THRESHOLD)


# prometheus_client's OpenMetrics encoder (untyped).
_generate_latest: Final[Callable[..., bytes]] = _openmetrics.generate_latest


class BackfillError(RuntimeError):
    """A backfill that cannot run or failed; the message says why (no traceback needed)."""


@dataclass(frozen=True)
class Options:
    """What to backfill and where (see ``kpi backfill --help``)."""

    data_dir: Path
    out: Path
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    step: dt.timedelta = DEFAULT_STEP
    as_of: dt.datetime | None = None
    job: str = cat.EXPORTER_JOB
    instance: str = DEFAULT_INSTANCE
    stall_hours: float = 48.0
    rules: bool = True
    rules_file: Path | None = None
    #: promtool runs at a time (they mostly wait for fsync: more than the cores pays).
    jobs: int = 3
    block: dt.timedelta = BLOCK


@dataclass
class Result:
    """What a backfill did."""

    start: dt.datetime
    end: dt.datetime
    steps: int
    samples: int = 0
    series: int = 0
    blocks: list[str] = field(default_factory=list)
    rule_blocks: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def find_tool(name: str) -> str:
    """The path of ``promtool``/``prometheus`` on PATH, or a clear error."""
    path = shutil.which(name)
    if path is None:
        raise BackfillError(
            f"{name} not found on PATH: install Debian's `prometheus` package (`make system-deps`)"
        )
    return path


# --- OpenMetrics text -----------------------------------------------------------------


class _Families:
    """Just enough of a registry for ``generate_latest``."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def _parts(spec: cat.MetricSpec) -> int:
    """Samples per point: one, or a histogram's buckets (``+Inf`` included), count and sum."""
    return len(spec.le_values) + 2 if spec.type is cat.MetricType.HISTOGRAM else 1


@dataclass(frozen=True)
class SeriesText:
    """One family's header and each series' sample prefixes, as prometheus_client writes them.

    ``prefixes`` has the spec's label columns, ``_order`` (series order), ``_part`` (the
    sample within a point) and ``_prefix`` (``name{labels}``).
    """

    spec: cat.MetricSpec
    header: str
    prefixes: pl.DataFrame


def series_text(spec: cat.MetricSpec, series: pl.DataFrame, extra: Mapping[str, str]) -> SeriesText:
    """Render ``series`` (label columns of ``spec``) with ``extra`` constant labels, value 0."""
    labels = list(spec.labels)
    family = spec.family([*labels, *extra])
    rows = series.select(labels).unique(maintain_order=True).rows()
    hist = spec.type is cat.MetricType.HISTOGRAM
    for row in rows:
        values = [*row, *extra.values()]
        if hist:
            cast(HistogramMetricFamily, family).add_metric(
                values, [(le, 0.0) for le in spec.le_values], 0.0
            )
        else:
            family.add_metric(values, 0.0)  # type: ignore[attr-defined]
    text = _generate_latest(_Families([family])).decode()
    lines = text.splitlines()
    header = "".join(f"{line}\n" for line in lines if line.startswith("# ") and line != "# EOF")
    samples = [line for line in lines if not line.startswith("#")]
    parts = _parts(spec)
    if len(samples) != len(rows) * parts or not all(s.endswith(" 0.0") for s in samples):
        raise AssertionError(f"{spec.name}: unexpected exposition from prometheus_client")
    prefixes = pl.DataFrame(
        {
            **{
                name: pl.Series([row[i] for row in rows for _ in range(parts)], dtype=pl.String)
                for i, name in enumerate(labels)
            },
            "_order": pl.Series(
                [i for i in range(len(rows)) for _ in range(parts)], dtype=pl.Int64
            ),
            "_part": pl.Series(list(range(parts)) * len(rows), dtype=pl.Int64),
            "_prefix": pl.Series([s[: -len(" 0.0")] for s in samples], dtype=pl.String),
        }
    )
    return SeriesText(spec, header, prefixes)


def sample_lines(text: SeriesText, points: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """One OpenMetrics line per sample: ``points`` (labels, ``_k``, ``_part``, ``value``) in
    series, time, part order; ``steps`` maps ``_k`` to the timestamp text ``_ts``."""
    labels = list(text.spec.labels)
    value = pl.col(_VALUE)
    value_text = (
        value.cast(pl.Int64).cast(pl.String)
        if points.schema[_VALUE].is_integer()
        else value.cast(pl.String)
    )
    return (
        points.join(text.prefixes, on=[*labels, "_part"], how="inner")
        .join(steps, on=_K, how="inner")
        .sort("_order", _K, "_part")
        .select(pl.concat_str([pl.col("_prefix"), value_text, pl.col("_ts")], separator=" "))
    )


def write_lines(sink: IO[bytes], lines: pl.DataFrame) -> None:
    """Append a one-column frame of text lines to ``sink``, as they are."""
    lines.write_csv(sink, include_header=False, quote_style="never")


# --- the staging files ------------------------------------------------------------------


def _points(values: Mapping[str, pl.DataFrame], name: str) -> pl.DataFrame:
    """``labels, _k, _part, value`` of one measure's window (histograms: every sample)."""
    spec = SPECS[name]
    if spec.type is not cat.MetricType.HISTOGRAM:
        return values[name].with_columns(pl.lit(0, pl.Int64).alias("_part"))
    labels = list(spec.labels)
    nb = len(spec.buckets)
    buckets = cumulative_buckets(values[f"{name}:bucket"], labels, nb)
    sums = values[f"{name}:sum"]
    keys = pl.concat([buckets.select(*labels, _K), sums.select(*labels, _K)]).unique()
    bucket_part = keys.join(
        buckets.select(*labels, _K, pl.col("bucket").alias("_part"), _VALUE),
        on=[*labels, _K],
        how="left",
    )
    counts = keys.join(
        buckets.filter(pl.col("bucket") == nb).select(*labels, _K, _VALUE),
        on=[*labels, _K],
        how="left",
    ).with_columns(pl.lit(nb + 1, pl.Int64).alias("_part"))
    sum_part = keys.join(sums, on=[*labels, _K], how="left").with_columns(
        pl.lit(nb + 2, pl.Int64).alias("_part")
    )
    # Bucket counts and microsecond sums as seconds: every part as a float.
    return pl.concat(
        [
            bucket_part.filter(pl.col("_part").is_not_null()).select(
                *labels, _K, "_part", pl.col(_VALUE).fill_null(0).cast(pl.Float64)
            ),
            counts.select(*labels, _K, "_part", pl.col(_VALUE).fill_null(0).cast(pl.Float64)),
            sum_part.select(
                *labels, _K, "_part", (pl.col(_VALUE).fill_null(0) / _US).cast(pl.Float64)
            ),
        ]
    )


class Stager:
    """Writes the staging OpenMetrics files, one per block range, from ``StepValues``."""

    def __init__(self, deltas: StepDeltas, extra: Mapping[str, str]) -> None:
        self.values = StepValues(deltas)
        self.steps = deltas.steps
        self._texts: dict[str, SeriesText] = {}
        for name, spec in SPECS.items():
            self._texts[name] = series_text(spec, self._series(name), extra)
        self._thresholds = self.values.thresholds()
        self._texts[THRESHOLD] = series_text(cat.BACKLOG_THRESHOLD, self._thresholds, extra)

    def _series(self, name: str) -> pl.DataFrame:
        labels = list(LABELS[name])
        if name in HISTOGRAMS:
            frames = [self.values.series(f"{name}:bucket"), self.values.series(f"{name}:sum")]
            return pl.concat([f.select(labels) for f in frames]).unique().sort(labels)
        if name == "backlog_oldest":
            return self.values.series("backlog").select(labels).unique().sort(labels)
        return self.values.series(name).select(labels)

    @property
    def series_count(self) -> int:
        """Series in the staging files (histograms: every ``_bucket``, ``_sum``, ``_count``)."""
        return sum(t.prefixes.height for t in self._texts.values())

    def windows(self, block: dt.timedelta) -> Iterator[tuple[int, int]]:
        """Step ranges that fall in one block range each (aligned to the epoch, like promtool)."""
        width = int(block / dt.timedelta(microseconds=1))
        ids = (self.steps // width).to_list()
        k0 = 0
        for k in range(1, len(ids) + 1):
            if k == len(ids) or ids[k] != ids[k0]:
                yield k0, k
                k0 = k

    def write(self, sink: IO[bytes], k0: int, k1: int) -> int:
        """Write steps ``k0 <= k < k1`` of every family to ``sink``; returns the sample count."""
        values = self.values.window(k0, k1)
        steps = pl.DataFrame(
            {
                _K: pl.int_range(k0, k1, eager=True).cast(pl.Int64),
                "_ts": (self.steps[k0:k1] // _US).cast(pl.String),
            }
        )
        samples = 0
        for name in (*SPECS, THRESHOLD):
            text = self._texts[name]
            if name == THRESHOLD:
                points = self._thresholds.join(steps.select(_K), how="cross").with_columns(
                    pl.lit(0, pl.Int64).alias("_part")
                )
            elif name == "backlog_oldest":
                points = values[name].with_columns(
                    (pl.col(_VALUE) / _US).alias(_VALUE), pl.lit(0, pl.Int64).alias("_part")
                )
            else:
                points = _points(values, name)
            lines = sample_lines(text, points, steps)
            if lines.height:
                sink.write(text.header.encode())
                write_lines(sink, lines)
                samples += lines.height
        sink.write(b"# EOF\n")
        return samples


# --- promtool and a throw-away Prometheus ---------------------------------------------------


class _BlockMaker:
    """``promtool tsdb create-blocks-from openmetrics`` on staging files, ``jobs`` at a time."""

    def __init__(self, promtool: str, out: Path, jobs: int, block: dt.timedelta = BLOCK) -> None:
        self._promtool = promtool
        self._block = block
        self._out = out
        self._jobs = max(1, jobs)
        self._running: list[tuple[subprocess.Popen[bytes], Path, IO[bytes]]] = []

    def submit(self, staging: Path) -> None:
        while len(self._running) >= self._jobs:
            self._reap_one()
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _reap_one/abort
        argv = [self._promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet"]
        # A hidden flag in promtool 2.x: blocks as long as the staging files' ranges.
        argv.append(f"--max-block-duration={int(self._block.total_seconds())}s")
        proc = subprocess.Popen(
            [*argv, str(staging), str(self._out)], stdout=subprocess.DEVNULL, stderr=err
        )
        self._running.append((proc, staging, err))

    def _reap_one(self) -> None:
        proc, staging, err = self._running.pop(0)
        code = proc.wait()
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
        err.close()
        if code != 0:
            self.abort()
            raise BackfillError(f"promtool failed on {staging.name} ({code}): {message[-2000:]}")
        staging.unlink()

    def finish(self) -> None:
        while self._running:
            self._reap_one()

    def abort(self) -> None:
        for proc, _, err in self._running:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            err.close()
        self._running.clear()


def _blocks(path: Path) -> list[str]:
    """Names of the TSDB blocks (directories with a ``meta.json``) in ``path``."""
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if (p / "meta.json").is_file())
