"""``kpi backfill``: a data folder's history as Prometheus TSDB blocks, recording rules included.

The engine (``kpi.kpis.steps``) gives every series' value at every step in event time;
this face turns them into OpenMetrics text with timestamps and lets ``promtool`` make
blocks of it:

1. one staging file per TSDB block range (2 h, aligned as promtool aligns blocks):
   ``promtool tsdb create-blocks-from openmetrics`` parses its whole input once per
   block range it spans, so one file per range keeps it linear; files are written
   window by window (never the whole history in memory), handed to promtool while
   the next is written, and deleted once their block exists;
2. recording rules: a throw-away Prometheus on 127.0.0.1 serves the new blocks to
   ``promtool tsdb create-blocks-from rules``; rules that read other rules' output go
   in later rounds, after the blocks of the rules they read are loaded;
3. everything is built in a temporary directory beside ``--out`` and moved in only
   when complete, so a failure leaves nothing half-written there.

The text: headers and series (name, labels, escaping, ``le`` text) are rendered by
prometheus_client's OpenMetrics encoder (``generate_latest``) once per series; the
per-sample tail `` <value> <timestamp>`` is appended with polars. The encoder can write
timestamps itself, but building one ``Sample`` per point costs ~2 µs in Python: a 30-day
history at 5-minute steps has ~90 M points (see docs/backfill.md and the bench).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, cast

import polars as pl
import yaml
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as _openmetrics

from exporters import catalog as cat
from exporters.mixin.config import MixinConfig
from exporters.mixin.promql import metric_names
from exporters.mixin.rules import rules_file
from exporters.store import bucket_edges_us
from kpi.kpis.steps import (
    HISTOGRAMS,
    LABELS,
    StepDeltas,
    StepValues,
    cumulative_buckets,
    step_deltas,
    step_grid,
)
from kpi.kpis.steps import VALUE as _VALUE
from kpi.kpis.steps import K as _K
from kpi.sources.folder import load_data_dir

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Prometheus:
    """A Prometheus on 127.0.0.1 serving a TSDB directory, with no scrapes and no rules."""

    def __init__(self, binary: str, tsdb: Path, workdir: Path, lookback: dt.timedelta) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text("global: {}\nscrape_configs: []\n")
        self.port = _free_port()
        self.log = workdir / "prometheus.log"
        lookback_s = max(300, int(lookback.total_seconds()))
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tsdb}",
                    # The history must not age out of this throw-away server.
                    "--storage.tsdb.retention.time=36500d",
                    f"--query.lookback-delta={lookback_s}s",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackfillError(
                    f"prometheus exited ({self.process.returncode}): "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise BackfillError(f"prometheus not ready after {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _blocks(path: Path) -> list[str]:
    """Names of the TSDB blocks (directories with a ``meta.json``) in ``path``."""
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if (p / "meta.json").is_file())


def _link_blocks(src: Path, dst: Path) -> None:
    """Hard-link copies of ``src``'s blocks into ``dst`` (Prometheus may compact its copy)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in _blocks(src):
        if not (dst / name).exists():
            shutil.copytree(src / name, dst / name, copy_function=os.link)


def default_rules() -> dict[str, Any]:
    """The project's recording rules (what ``kpi mixin`` writes to prometheus/rules.yml)."""
    return rules_file(MixinConfig())


def rule_rounds(rules: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Recording rules split into rounds: a rule goes after every rule whose output it reads.

    promtool evaluates each rule against the server's data only, so a rule reading
    another rule's series needs that rule's blocks loaded first. Alerting rules are
    dropped (promtool ignores them). Each round keeps the groups' names and intervals.
    """
    groups = [g for g in rules.get("groups", []) if isinstance(g, dict)]
    recording = [(g, r) for g in groups for r in g.get("rules", []) if "record" in r]
    records = {str(r["record"]) for _, r in recording}
    needs = [metric_names(str(r["expr"])) & records for _, r in recording]
    level = dict.fromkeys(records, 0)

    def depth(i: int) -> int:
        return 1 + max((level[n] for n in needs[i]), default=-1)

    for _ in range(len(recording) + 1):
        changed = False
        for i, (_, rule) in enumerate(recording):
            if depth(i) > level[rule["record"]]:
                level[rule["record"]] = depth(i)
                changed = True
        if not changed:
            break
    else:
        raise BackfillError("recording rules read each other in a cycle")
    rounds: list[dict[str, dict[str, Any]]] = []
    for i, (group, rule) in enumerate(recording):
        d = depth(i)
        while len(rounds) <= d:
            rounds.append({})
        interval = {"interval": group["interval"]} if "interval" in group else {}
        out = rounds[d].setdefault(group["name"], {"name": group["name"], **interval, "rules": []})
        out["rules"].append(rule)
    return [{"groups": list(r.values())} for r in rounds]


def _query_range(url: str, expr: str, start: int, end: int, step: int) -> list[dict[str, Any]]:
    """``/api/v1/query_range`` (times in seconds); the result matrix, or a clear error."""
    params = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step, "timeout": "600s"}
    )
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=900) as resp:
            payload = json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            payload = json.load(exc)
        except ValueError:
            raise BackfillError(f"query_range {expr!r}: HTTP {exc.code}") from exc
    if payload.get("status") != "success":
        raise BackfillError(f"rule {expr!r}: {payload.get('error')}")
    return list(payload["data"]["result"])


#: Points per series and query (Prometheus refuses more than 11,000).
_MAX_POINTS: Final = 10_000


class _RulePoints:
    """Recorded samples of one round: series (record name and labels) and their points."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._ids: list[int] = []
        self._ts: list[int] = []
        self._values: list[str] = []

    def add(self, record: str, labels: Mapping[str, str], values: Sequence[Sequence[Any]]) -> None:
        key = (record, tuple(sorted((k, v) for k, v in labels.items() if k != "__name__")))
        sid = self.series.setdefault(key, len(self.series))
        if not values:
            return
        stamps, texts = zip(*values, strict=True)
        self._ids.extend([sid] * len(stamps))
        self._ts.extend(round(float(t) * 1000) for t in stamps)
        self._values.extend(texts)

    def frame(self) -> pl.DataFrame:
        """``_sid``, ``_ms``, ``_v`` (the value text Prometheus answered), one row per sample."""
        return pl.DataFrame(
            {
                "_sid": pl.Series(self._ids, dtype=pl.Int64),
                "_ms": pl.Series(self._ts, dtype=pl.Int64),
                "_v": pl.Series(self._values, dtype=pl.String),
            }
        ).unique(["_sid", "_ms"], keep="first", maintain_order=True)


def _rule_text(points: _RulePoints) -> tuple[dict[str, str], pl.DataFrame]:
    """Headers per record and the prefix of every recorded series, by prometheus_client.

    Recorded names contain colons: the encoder keeps them with ``allow-utf-8`` escaping
    (its default escaping would turn them into underscores).
    """
    by_record: dict[str, list[tuple[int, tuple[tuple[str, str], ...]]]] = {}
    for (record, labels), sid in points.series.items():
        by_record.setdefault(record, []).append((sid, labels))
    families = []
    order: list[tuple[str, int]] = []
    for record, series in by_record.items():
        family = Metric(record, f"Recording rule {record} (backfilled).", "gauge")
        for sid, labels in series:
            family.add_sample(record, dict(labels), 0.0)
            order.append((record, sid))
        families.append(family)
    text = _generate_latest(_Families(families), escaping=_openmetrics.ALLOWUTF8).decode()
    headers: dict[str, str] = {}
    prefixes: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split(" ", 3)[2]
            headers[current] = ""
        if line.startswith("# ") and line != "# EOF":
            headers[current] += line + "\n"
        elif not line.startswith("#"):
            if not line.endswith(" 0.0"):
                raise AssertionError(f"unexpected exposition line {line!r}")
            prefixes.append(line[: -len(" 0.0")])
    if len(prefixes) != len(order):
        raise AssertionError("recorded series and exposition lines do not match")
    table = pl.DataFrame(
        {
            "_record": [r for r, _ in order],
            "_sid": pl.Series([sid for _, sid in order], dtype=pl.Int64),
            "_order": pl.Series(range(len(order)), dtype=pl.Int64),
            "_prefix": prefixes,
        }
    )
    return headers, table


def _write_rule_blocks(
    points: _RulePoints, staging: Path, maker: _BlockMaker, block: dt.timedelta
) -> None:
    """Staging files of recorded samples, one per block range, handed to promtool."""
    samples = points.frame()
    if samples.is_empty():
        return
    headers, table = _rule_text(points)
    width = int(block / dt.timedelta(milliseconds=1))
    ts = pl.col("_ms")
    lines = samples.join(table, on="_sid").with_columns(
        (ts // width).alias("_block"),
        pl.when(ts % 1000 == 0)
        .then((ts // 1000).cast(pl.String))
        .otherwise((ts / 1000).cast(pl.String))
        .alias("_ts"),
    )
    for (block_no,), part in lines.sort("_block").partition_by("_block", as_dict=True).items():
        path = staging / f"rules-{block_no}.om"
        with path.open("wb") as sink:
            for (record,), fam in (
                part.sort("_order")
                .partition_by("_record", as_dict=True, maintain_order=True)
                .items()
            ):
                sink.write(headers[str(record)].encode())
                write_lines(
                    sink,
                    fam.sort("_order", "_ms").select(
                        pl.concat_str(["_prefix", "_v", "_ts"], separator=" ")
                    ),
                )
            sink.write(b"# EOF\n")
        maker.submit(path)


def backfill_rules(
    opts: Options, blocks: Path, work: Path, start: dt.datetime, end: dt.datetime
) -> list[str]:
    """Recording-rule blocks over ``[start, end]`` from the blocks in ``blocks`` (added there).

    Equivalent to ``promtool tsdb create-blocks-from rules``, which also evaluates each rule
    with range queries, but writes one block per rule per block range (hundreds of tiny
    blocks for a month): here all rules of a round go into one block per range. Every rule
    is evaluated at the backfill's steps (a group's own ``interval`` is not used).
    """
    prometheus = find_tool("prometheus")
    promtool = find_tool("promtool")
    if opts.rules_file is not None:
        try:
            rules = yaml.safe_load(opts.rules_file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise BackfillError(f"cannot read rules file {opts.rules_file}: {exc}") from exc
        if not isinstance(rules, dict):
            raise BackfillError(f"{opts.rules_file} is not a Prometheus rules file")
    else:
        rules = default_rules()
    step = int(opts.step.total_seconds())
    t0, t1 = int(start.timestamp()), int(end.timestamp())
    made: list[str] = []
    for i, round_rules in enumerate(rule_rounds(rules)):
        tsdb = work / f"prometheus-{i}" / "data"
        _link_blocks(blocks, tsdb)
        points = _RulePoints()
        server = _Prometheus(prometheus, tsdb, work / f"prometheus-{i}", opts.step)
        try:
            for group in round_rules["groups"]:
                for rule in group["rules"]:
                    extra = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
                    for a in range(t0, t1 + 1, step * _MAX_POINTS):
                        b = min(t1, a + step * (_MAX_POINTS - 1))
                        for series in _query_range(server.url, str(rule["expr"]), a, b, step):
                            labels = {**series["metric"], **extra}
                            points.add(str(rule["record"]), labels, series["values"])
        finally:
            server.stop()
            shutil.rmtree(tsdb.parent, ignore_errors=True)
        out = work / f"rule-blocks-{i}"
        staging = work / f"rule-staging-{i}"
        out.mkdir()
        staging.mkdir()
        maker = _BlockMaker(promtool, out, opts.jobs, opts.block)
        try:
            _write_rule_blocks(points, staging, maker, opts.block)
            maker.finish()
        finally:
            maker.abort()
        for name in _blocks(out):
            (out / name).rename(blocks / name)
            made.append(name)
    return made


# --- the whole run ----------------------------------------------------------------------------


def _floor(t: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + ((t - epoch) // step) * step


def _work_dir(out: Path) -> Path:
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackfillError(f"cannot create the parent of --out ({parent}): {exc}") from exc
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.backfill-", dir=parent))


def _install(blocks: Path, out: Path) -> None:
    """Move the finished blocks to ``out``: a rename of the whole directory when ``out`` does
    not exist, else one rename per complete block (e.g. into a Prometheus data directory)."""
    if not out.exists():
        blocks.rename(out)
        return
    for name in _blocks(blocks):
        (blocks / name).rename(out / name)


def _check(opts: Options) -> str:
    """Refuse what cannot work before reading anything; returns promtool's path."""
    if opts.step < dt.timedelta(seconds=1) or opts.step % dt.timedelta(seconds=1):
        raise BackfillError("--step must be a whole number of seconds")
    promtool = find_tool("promtool")
    if opts.rules:
        find_tool("prometheus")
    if opts.out.exists() and not opts.out.is_dir():
        raise BackfillError(f"--out {opts.out} exists and is not a directory")
    if opts.start is not None and opts.end is not None and opts.end <= opts.start:
        raise BackfillError(
            f"--to ({opts.end.isoformat()}) must be after --from ({opts.start.isoformat()})"
        )
    if opts.as_of is not None and opts.end is not None and opts.end > opts.as_of:
        raise BackfillError("--to must not be after --as-of (nothing is known after it)")
    return promtool


def _range(opts: Options, events: pl.LazyFrame) -> tuple[dt.datetime, dt.datetime]:
    """The first and last step: the options, or the defaults from the events' span."""
    first, last = (
        events.select(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
        .collect()
        .row(0)
    )
    if first is None:
        raise BackfillError(f"no valid events in {opts.data_dir} (`kpi validate` says why)")
    second = dt.timedelta(seconds=1)
    start = _floor(opts.start or _floor(first, opts.step), second)
    if opts.end is not None:
        end = _floor(opts.end, second)
    elif opts.as_of is not None:
        end = _floor(opts.as_of, second)
    else:  # the first step after the newest event (the last counters count every event),
        # but never in the future: live scrapes will follow from now on.
        end = min(_floor(last, opts.step) + opts.step, _floor(dt.datetime.now(dt.UTC), second))
    if end <= start:
        raise BackfillError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    in_range = events.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).select(pl.len())
    if not in_range.collect().item():
        raise BackfillError(
            f"no events between {start.isoformat()} and {end.isoformat()}"
            f" (the folder's events span {first.isoformat()} .. {last.isoformat()})"
        )
    return start, end


def _metric_blocks(
    opts: Options, promtool: str, deltas: StepDeltas, work: Path, result: Result
) -> Path:
    """The metrics' blocks (in ``work/blocks``), staging file by staging file."""
    blocks = work / "blocks"
    staging = work / "staging"
    staging.mkdir()
    blocks.mkdir()
    stager = Stager(deltas, {"job": opts.job, "instance": opts.instance})
    result.series = stager.series_count
    maker = _BlockMaker(promtool, blocks, opts.jobs, opts.block)
    try:
        for k0, k1 in stager.windows(opts.block):
            path = staging / f"{k0:08d}.om"
            with path.open("wb") as sink:
                result.samples += stager.write(sink, k0, k1)
            maker.submit(path)
        maker.finish()
    finally:
        maker.abort()
    result.blocks = _blocks(blocks)
    return blocks


def backfill(opts: Options, progress: Callable[[str], None] = lambda _: None) -> Result:
    """Run a backfill (see the module docstring); raises ``BackfillError`` with the reason."""
    promtool = _check(opts)
    clock = time.monotonic()
    ds = load_data_dir(opts.data_dir)
    events, complaints = ds.events, ds.complaints
    if opts.as_of is not None:
        events = events.filter(pl.col("ts") <= opts.as_of)
        complaints = complaints.filter(pl.col("opened_at") <= opts.as_of)
    start, end = _range(opts, events)
    steps = step_grid(start, end, opts.step)
    result = Result(start=start, end=end, steps=steps.len())
    progress(f"{steps.len()} steps from {start.isoformat()} to {end.isoformat()}")
    deltas = step_deltas(
        events,
        complaints,
        ds.facilities,
        ds.standards,
        steps,
        transit_edges_us=bucket_edges_us(cat.TRANSIT_TIME),
        resolution_edges_us=bucket_edges_us(cat.COMPLAINT_RESOLUTION),
        stall_hours=opts.stall_hours,
    )
    result.seconds["engine"] = time.monotonic() - clock
    work = _work_dir(opts.out)
    try:
        clock = time.monotonic()
        blocks = _metric_blocks(opts, promtool, deltas, work, result)
        result.seconds["blocks"] = time.monotonic() - clock
        progress(f"{len(result.blocks)} blocks, {result.samples} samples, {result.series} series")
        if opts.rules:
            clock = time.monotonic()
            result.rule_blocks = backfill_rules(opts, blocks, work, start, end)
            result.seconds["rules"] = time.monotonic() - clock
            progress(f"{len(result.rule_blocks)} recording-rule blocks")
        _install(blocks, opts.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result
