"""The exporter process: ingest loop, refresh loop, checkpoints and the HTTP server.

``ExporterService(config).start()`` runs everything in background threads and
returns; ``stop()`` ends them and writes a final checkpoint. ``run()`` is the
blocking form used by ``kpi exporter`` (SIGTERM/SIGINT stop it gracefully).

Threads:
- *ingest*: one micro-batch after another (sleeping ``batch_interval`` when idle);
  after the first catch-up it checkpoints, refreshes and turns ready; later it
  checkpoints every ``checkpoint_interval`` (written by a *checkpoint* thread, one
  at a time, from an immutable capture).
- *refresh*: every ``refresh_interval`` recomputes the gauges and renders the
  exposition once.
- *serving*: hands the cached exposition and the readiness to the serving process
  (``exporters/serving.py``) and restarts it when it dies; with ``serve_in_process`` an
  *http* thread serves here instead. ``/metrics`` answers 503 until ready, so a
  restarted exporter never shows counters below what it showed before the crash.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Final, Literal

from exporters.catalog import EXPORTER_PORT
from exporters.exposition import Exposition, collectors, registry_of, render
from exporters.gauges import build_view_by_parts
from exporters.ingest import IngestConfig, Ingestor
from exporters.reference import standards_missing
from exporters.server import Endpoints
from exporters.serving import Server, make_server, run_serving
from exporters.state import Checkpoint, StateDirLock, write_checkpoint
from exporters.view import MetricsView, SelfStats
from kpi.sources.folder import FACILITIES_FILE
from kpi.standards import STANDARDS_FILE

log = logging.getLogger(__name__)

AsOf = Literal["now", "latest"]
AS_OF_CHOICES: Final = ("now", "latest")
SWITCH_INTERVAL: Final = 0.001
#: The reference files whose validity ``postal_exporter_config_valid`` shows.
REFERENCE_FILES: Final = (FACILITIES_FILE, STANDARDS_FILE)


def version() -> str:
    """The installed package version (``unknown`` when not installed)."""
    try:
        return metadata.version("postal-kpi")
    except metadata.PackageNotFoundError:
        return "unknown"


#: Default retention of finished items (seconds): a month of event time.
RETENTION_DEFAULT: Final = 30 * 86400.0
#: Default wait of label events for their item's acceptance (seconds of event time).
LATE_GRACE_DEFAULT: Final = 86400.0
#: Default dedup window (seconds of event time).
DEDUP_WINDOW_DEFAULT: Final = 14 * 86400.0


def _delta(seconds: float | None) -> dt.timedelta | None:
    return None if seconds is None else dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class ExporterConfig:
    """Everything ``kpi exporter`` takes (durations in seconds; port 0 picks a free port)."""

    data_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = EXPORTER_PORT
    refresh_interval: float = 15.0
    batch_interval: float = 1.0
    checkpoint_interval: float = 10.0
    as_of: AsOf = "now"
    stall_hours: float = 48.0
    grace: float = 10.0
    max_batch_bytes: int = 32 << 20
    max_batch_rows: int = 250_000
    #: Finished items leave the state this long (event time) after their last scan;
    #: None keeps them forever (memory then grows with every item ever seen).
    retention: float | None = RETENTION_DEFAULT
    #: Attempts, deliveries and returns wait this long (event time) for their item's
    #: acceptance; None counts them at once.
    late_grace: float | None = LATE_GRACE_DEFAULT
    #: Event ids are remembered this long (event time); older events are ``too_old``.
    dedup_window: float | None = DEDUP_WINDOW_DEFAULT
    #: Events dated more than this ahead of the wall clock are ``future_ts`` rejects
    #: (``kpi exporter`` defaults to 1 h with ``--as-of now``); None accepts any date.
    max_future: float | None = None
    rejects_max_bytes: int = 64 << 20
    #: A batch that cannot be applied this long turns ``/readyz`` 503 (its reason shown).
    stuck_after: float = 60.0
    #: Serve from a thread of this process instead of a serving process of its own
    #: (``exporters.serving``): the scrapes then share the ingest's interpreter lock.
    serve_in_process: bool = False


class ExporterService:
    """The exporter, embeddable: ``start()``, ``wait_ready()``, ``url``, ``stop()``."""

    def __init__(self, config: ExporterConfig) -> None:
        self.config = config
        self._lock = StateDirLock(config.state_dir)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._render_lock = threading.Lock()
        self._view = MetricsView()
        self._exposition: Exposition | None = None
        self._registry = registry_of(collectors(lambda: self._view))
        self._threads: list[threading.Thread] = []
        self._writer: threading.Thread | None = None
        self._last_checkpoint: float = 0.0
        self._ingestor: Ingestor | None = None
        self._server: Server | None = None
        #: What the server says of readiness: set (and published) before ``_ready``, so
        #: that whoever ``wait_ready()`` returns to is served ``/metrics`` at once.
        self._serving_ready = False
        self._version = version()
        #: (what makes /readyz 503, what it notes), recomputed by the ingest loop.
        self._condition: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        self._checkpoint_error: str | None = None

    # --- lifecycle -------------------------------------------------------------------

    @property
    def ingestor(self) -> Ingestor:
        """The running ingestor (after ``start``)."""
        if self._ingestor is None:
            raise RuntimeError("exporter not started")
        return self._ingestor

    def start(self) -> ExporterService:
        """Restore the last checkpoint, bind the port and start the threads."""
        # Threads running Python code hand the GIL over after this long; a scrape waits
        # for it a few times, so the default 5 ms would show in /metrics tail latency.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._lock.acquire()
        try:
            cfg = self.config
            self._ingestor = Ingestor(
                IngestConfig(
                    cfg.data_dir,
                    cfg.state_dir,
                    cfg.max_batch_bytes,
                    cfg.max_batch_rows,
                    cfg.grace,
                    _delta(cfg.retention),
                    _delta(cfg.late_grace),
                    _delta(cfg.dedup_window),
                    _delta(cfg.max_future),
                    cfg.rejects_max_bytes,
                )
            )
            if self._ingestor.restored_from is not None:
                log.info("restored checkpoint %d", self._ingestor.restored_from)
            self._last_checkpoint = self._ingestor.last_checkpoint_at or 0.0
            self._server = make_server(
                cfg.serve_in_process,
                (cfg.host, cfg.port),
                Endpoints(
                    lambda: self._exposition,
                    lambda: self._serving_ready,
                    self._healthy,
                    lambda: self._condition,
                ),
            )
            self._server.start()
        except BaseException:
            if self._server is not None:
                self._server.stop()
            self._lock.release()
            raise
        for name, target in (("ingest", self._ingest_loop), ("refresh", self._refresh_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("serving on %s", self.url)
        return self

    def stop(self, final_checkpoint: bool = True) -> None:
        """Stop the threads, write a final checkpoint and release the state directory."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._writer is not None:
            self._writer.join()
        if self._ingestor is not None:
            if final_checkpoint:
                self._write(self._ingestor.capture())
            self._ingestor.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._lock.release()

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully (final checkpoint).

        Raises ``RuntimeError`` when it stopped because serving failed for good.
        """
        run_serving(self.start, self._healthy, self.stop, lambda: self._server)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the first catch-up is done (True) or ``timeout`` passes (False)."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        """Whether the first catch-up is done and ``/metrics`` is served."""
        return self._ready.is_set()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("exporter not started")
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def failure(self) -> str | None:
        """Why the exporter cannot go on (its serving process gave up, a loop died), or None."""
        if self._server is not None and self._server.failure:
            return self._server.failure
        return None if self._healthy() else "an exporter thread stopped"

    def _healthy(self) -> bool:
        if self._server is not None and self._server.failure:
            return False
        return all(t.is_alive() for t in self._threads) or self._stop.is_set()

    # --- loops -------------------------------------------------------------------------

    def _ingest_loop(self) -> None:
        cfg = self.config
        last_checkpoint = time.monotonic()
        dirty = False
        while not self._stop.is_set():
            try:
                result = self.ingestor.step()
            except Exception:  # never let one bad batch end the process
                log.exception("ingest step failed")
                self._stop.wait(cfg.batch_interval)
                continue
            dirty = dirty or result.rows > 0
            condition = self.condition()
            if condition != self._condition:
                self._condition = condition
                self._publish()
            if not self._ready.is_set() and not result.pending:
                if dirty or self.ingestor.restored_from is None:
                    self._write(self.ingestor.capture())
                self.refresh()
                self._serving_ready = True
                self._publish()
                self._ready.set()
                log.info("caught up; ready")
                last_checkpoint, dirty = time.monotonic(), False
            elif (
                dirty
                and time.monotonic() - last_checkpoint >= cfg.checkpoint_interval
                and (self._writer is None or not self._writer.is_alive())
            ):
                ckpt = self.ingestor.capture()
                self._writer = threading.Thread(
                    target=self._write, args=(ckpt,), name="checkpoint", daemon=True
                )
                self._writer.start()
                last_checkpoint, dirty = time.monotonic(), False
            if not result.pending:
                self._stop.wait(cfg.batch_interval)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.config.refresh_interval):
            if not self._ready.is_set():
                continue
            try:
                self.refresh()
            except Exception:
                log.exception("refresh failed; serving the previous exposition")

    def _write(self, ckpt: Checkpoint) -> None:
        try:
            write_checkpoint(self.config.state_dir, ckpt)
        except Exception as exc:  # disk full, read-only (polars raises its own error types)
            why = f"checkpoint {ckpt.seq} failed, the previous one stays valid: {exc}"
            if self._checkpoint_error is None:
                log.error("%s", why)
            self._checkpoint_error = why
            return
        if self._checkpoint_error is not None:
            log.info("checkpoint %d written; checkpoints work again", ckpt.seq)
        self._checkpoint_error = None
        self._last_checkpoint = ckpt.created_at

    def condition(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(reasons ``/readyz`` answers 503 for, notes it shows with a 200)."""
        ing = self.ingestor
        failing: list[str] = []
        notes: list[str] = []
        for rel, why in sorted(ing.tailer.problems.copy().items()):
            failing.append(f"cannot read {rel}: {why}")
        missing = standards_missing(ing.reference)
        failing += missing
        if not missing:
            notes += [
                f"refused, previous version in use: {e}" for e in ing.reference.errors.values()
            ]
        stuck = ing.apply_error
        if stuck is not None:
            since = time.monotonic() - stuck[0]
            text = f"a batch cannot be applied for {since:.0f}s (retrying): {stuck[1]}"
            (failing if since >= self.config.stuck_after else notes).append(text)
        if ing.rejects.paused:
            notes.append(f"rejects file paused (rejects still counted): {ing.rejects.paused}")
        if self._checkpoint_error:
            notes.append(self._checkpoint_error)
        return tuple(failing), tuple(notes)

    # --- refresh ---------------------------------------------------------------------------

    def as_of(self, last_event_us: int | None) -> dt.datetime:
        """The gauges' as-of: wall clock, or the newest event with ``--as-of latest``."""
        if self.config.as_of == "latest" and last_event_us is not None:
            return dt.datetime.fromtimestamp(last_event_us / 1e6, dt.UTC)
        return dt.datetime.now(dt.UTC)

    def refresh(self) -> None:
        """Recompute the gauges from the current state and render the exposition once."""
        ing = self.ingestor
        with self._render_lock:
            with ing.lock:
                ledger, ref, local = ing.ledger, ing.reference, ing.local.copy()
            counters, last_event_us = ledger.counters, ledger.clock_us
            stats = SelfStats(
                items_tracked=ledger.items_tracked(),
                deliveries_awaiting_acceptance=ledger.held_deliveries(),
                last_event_timestamp=(last_event_us or 0) / 1e6,
                last_checkpoint_timestamp=self._last_checkpoint,
                version=self._version,
                config_valid=tuple((f, f not in ref.errors) for f in REFERENCE_FILES),
            )
            self._view = build_view_by_parts(
                [ledger],
                ref.facilities,
                ref.standards,
                self.as_of(last_event_us),
                counters,
                local,
                stats,
                self.config.stall_hours,
            )
            self._exposition = render(self._registry)
        self._publish()

    def _publish(self) -> None:
        if self._server is not None:
            self._server.publish()

    @property
    def view(self) -> MetricsView:
        """The view of the last refresh."""
        return self._view

    @property
    def exposition(self) -> Exposition | None:
        """The exposition of the last refresh (None before the first)."""
        return self._exposition
