"""Helpers shared by the exporter tests and benchmarks: event rows, feeds, a subprocess, scrapes.

It lives under tests/ because nothing in the exporter uses it: it does not ship in the wheel.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import orjson
import polars as pl
from prometheus_client.parser import text_string_to_metric_families

from kpi.contract import EVENT_SCHEMA, s10_with_check_digit
from tests.netkit import free_port

Row = dict[str, str | None]
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
EPOCH: Final = dt.datetime(2027, 1, 11, tzinfo=dt.UTC)


def iso(ts: dt.datetime) -> str:
    """ISO 8601 with offset, as the data contract wants."""
    return ts.isoformat()


def event(
    event_id: str,
    item_id: str,
    kind: str,
    ts: dt.datetime,
    facility: str = "F1",
    product: str | None = None,
    origin: str | None = None,
    destination: str | None = None,
    promised_by: dt.datetime | None = None,
    reason: str | None = None,
) -> Row:
    """One event row with string values (all schema columns present)."""
    return {
        "event_id": event_id,
        "item_id": item_id,
        "event": kind,
        "ts": iso(ts),
        "facility": facility,
        "product": product,
        "origin": origin,
        "destination": destination,
        "promised_by": iso(promised_by) if promised_by else None,
        "reason": reason,
    }


def jsonl_bytes(rows: Iterable[Row]) -> bytes:
    """Rows as JSON lines (each ending in a newline)."""
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def append_jsonl(path: Path, rows: Iterable[Row]) -> None:
    """Append rows to a JSONL file (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write(jsonl_bytes(rows))


def write_parquet_atomic(path: Path, rows: Sequence[Row]) -> None:
    """Write rows as a typed Parquet file the way writers must: ``.tmp`` then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(rows, schema=dict.fromkeys(EVENT_SCHEMA, pl.String))
    typed = frame.with_columns(
        pl.col("ts", "promised_by").str.to_datetime(time_zone="UTC", time_unit="us")
    )
    tmp = path.with_name(path.name + ".tmp")
    typed.write_parquet(tmp)
    os.replace(tmp, path)


def item_id(n: int) -> str:
    """A valid S10 identifier for serial ``n``."""
    return s10_with_check_digit("EE", n % 100_000_000, "CN")


@dataclass
class Feed:
    """Deterministic item lifecycles: item ``i`` accepted at ``start + i*spacing``, a scan every ``step``."""

    # Scans: accepted, arrived, departed, arrived, out_for_delivery, then delivered
    # (every seventh item fails once and goes out again first).

    start: dt.datetime = EPOCH
    spacing: dt.timedelta = dt.timedelta(seconds=30)
    step: dt.timedelta = dt.timedelta(hours=5)
    products: tuple[str, ...] = ("express", "standard", "economy")
    regions: tuple[str, ...] = ("CN-BJ", "CN-SH", "CN-GD", "CN-SC")

    def lifecycle(self, i: int, stages: int | None = None) -> list[Row]:
        """The events of item ``i`` (the first ``stages`` of them)."""
        item = item_id(i)
        t0 = self.start + i * self.spacing
        origin = self.regions[i % len(self.regions)]
        dest = self.regions[(i // 2) % len(self.regions)]
        hub = f"PC-{dest[-2:]}-01"
        office = f"DO-{dest[-2:]}-001"
        plan: list[tuple[str, str, str | None]] = [
            ("accepted", f"CO-{origin[-2:]}-001", None),
            ("arrived", hub, None),
            ("departed", hub, None),
            ("arrived", office, None),
            ("out_for_delivery", office, None),
        ]
        if i % 7 == 0:
            plan += [
                ("delivery_failed", office, "addressee_absent"),
                ("out_for_delivery", office, None),
            ]
        plan.append(("delivered", office, None))
        rows = []
        for k, (kind, facility, reason) in enumerate(plan[:stages]):
            rows.append(
                event(
                    f"{item}-{k:02d}",
                    item,
                    kind,
                    t0 + k * self.step,
                    facility,
                    product=self.products[i % len(self.products)] if kind == "accepted" else None,
                    origin=origin if kind == "accepted" else None,
                    destination=dest if kind == "accepted" else None,
                    reason=reason,
                )
            )
        return rows

    def interleaved(self, first: int, count: int, stages: int | None = None) -> list[Row]:
        """Events of items ``first..first+count`` merged in time order (a live feed)."""
        rows = [r for i in range(first, first + count) for r in self.lifecycle(i, stages)]
        return sorted(rows, key=lambda r: (r["ts"] or "", r["event_id"] or ""))


def facilities_csv(path: Path, rows: Sequence[tuple[str, str, str, str, int | None]]) -> None:
    """Write facilities.csv from (facility, name, type, region, threshold) tuples."""
    lines = ["facility,name,type,region,backlog_threshold"]
    lines += [f"{f},{n},{t},{r},{'' if th is None else th}" for f, n, t, r, th in rows]
    path.write_text("\n".join(lines) + "\n")


# --- scraping ---------------------------------------------------------------------------


def parse_exposition(text: str) -> dict[SeriesKey, float]:
    """Samples of a text exposition keyed by (sample name, sorted labels)."""
    out: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def raw_samples(text: str) -> dict[str, float]:
    """Samples of a text exposition keyed by their ``name{labels}`` text (a fast, lax parser)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def fetch(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a GET; connection errors raise ``OSError``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def total(samples: dict[SeriesKey, float], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, lbls), v in samples.items()
        if n == name and all(dict(lbls).get(k) == val for k, val in labels.items())
    )


@dataclass
class ExporterProcess:
    """``kpi exporter`` as a subprocess on a free 127.0.0.1 port."""

    data_dir: Path
    state_dir: Path
    args: Sequence[str] = ()
    port: int = 0
    #: Command words before the interpreter (e.g. ``setpriv`` dropping capabilities).
    prefix: Sequence[str] = ()
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExporterProcess:
        """Launch the process (does not wait for readiness)."""
        self.port = self.port or free_port()
        log_path = self.log_path or self.state_dir.parent / f"exporter-{self.port}.log"
        self.log_path = log_path
        self._log = log_path.open("ab")
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            "kpi_cli",
            "exporter",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state",
            str(self.state_dir),
            *self.args,
        ]
        if "--max-future" not in self.args:
            # The fixtures are dated from EPOCH (2027-01-11), which may be ahead of the
            # wall clock: only the tests of future_ts set the limit.
            cmd += ["--max-future", "off"]
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll ``/readyz`` until 200; raises with the log on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"exporter exited with {self.process.returncode}:\n{self.log()}")
            try:
                if fetch(self.url + "/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"exporter not ready after {timeout}s:\n{self.log()}")

    def scrape(self) -> dict[SeriesKey, float] | None:
        """Parsed ``/metrics`` (None when not ready or not reachable)."""
        try:
            status, body = fetch(self.url + "/metrics")
        except (OSError, http.client.HTTPException):  # down, or killed mid-response
            return None
        return parse_exposition(body.decode()) if status == 200 else None

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap."""
        self._end(signal.SIGKILL)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: final checkpoint), wait, return the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def _end(self, sig: signal.Signals, timeout: float = 30.0) -> int:
        code = 0
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
            code = self.process.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log(self) -> str:
        """The process output so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-5000:]


def wait_until(predicate: object, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Poll ``predicate()`` until truthy; raise ``TimeoutError`` otherwise."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


def counters_only(
    samples: dict[SeriesKey, float], exclude: Iterable[str] = ()
) -> Iterator[tuple[SeriesKey, float]]:
    """Counter-like samples (``_total``, histogram ``_bucket``/``_sum``/``_count``)."""
    skip = tuple(exclude)
    for key, value in samples.items():
        name = key[0]
        if name.startswith(skip):
            continue
        if name.endswith(("_total", "_bucket", "_sum", "_count")):
            yield key, value


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (from /proc, every thread's list)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def only_child(pid: int, timeout: float = 30.0) -> int:
    """``pid``'s one live child, e.g. an exporter's serving process (waits for a restart)."""

    def live() -> list[int]:
        return [child for child in children(pid) if alive(child)]

    wait_until(lambda: len(live()) == 1, timeout=timeout)
    return live()[0]
