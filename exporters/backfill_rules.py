"""``kpi backfill``'s recording rules: evaluated by a throw-away Prometheus serving the new
blocks, written as blocks again, in rounds so a rule reading another rule's output
sees it (see ``backfill_rules``)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import polars as pl
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as _openmetrics

#: Range of the blocks written (one of the TSDB's compaction ranges 2h, 6h, 18h, 54h, ...):
#: every block costs promtool an fsync'd write (~2 s here), so 18 h rather than the
#: default 2 h; still well below Prometheus' own largest block (10 % of the retention).
from exporters.backfill_text import (
    BackfillError,
    Options,
    _BlockMaker,
    _blocks,
    _Families,
    _generate_latest,
    find_tool,
    write_lines,
)
from exporters.mixin.config import MixinConfig
from exporters.mixin.promql import metric_names
from exporters.mixin.rules import rules_file


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
