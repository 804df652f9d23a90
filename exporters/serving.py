"""Serving ``/metrics``, ``/healthz`` and ``/readyz`` from a process of its own.

Under ingest the interpreter lock is what a scrape waits for: a server thread in the
exporter's process gets it between the parser's switch intervals, which bounds it to
~750 scrapes/s of a 10 k-series exposition on two cores (20 scrapers always queued
wait ~27 ms). ``ProcessServer`` moves the serving to a child process with its own
interpreter (``python -m exporters.serving``), which runs the same selector loop
(``MetricsHTTPServer``) over the listening socket the exporter bound:

- **what it serves**: the exporter pushes its endpoints' state (ready, healthy, the
  ``/readyz`` reasons and notes, and the exposition when it changed: the four bodies
  rendered by prometheus_client, gzip included) over a Unix socket pair, as one
  length-prefixed pickle, and waits for the child's acknowledgement. ``publish()``
  returns once the child serves it, so a scrape after a refresh (or after turning
  ready) sees it, as with the in-process server; the child swaps in a message as one
  reference, so a scrape never mixes two.
- **heartbeat**: a *serving* thread of the exporter re-sends the state every
  ``HEARTBEAT`` seconds. A child that has heard nothing for ``SILENT_AFTER`` seconds
  (the exporter is stopped, frozen or starved) serves nothing stale: ``/metrics`` 503,
  ``/healthz`` 500 and ``/readyz`` 503, each saying for how long it has been silent.
- **dies with the exporter**: the child reads the socket pair; when the exporter is
  gone (also after a SIGKILL: the kernel closes its end) it reads end-of-file and exits.
- **restarted**: the serving thread notices a dead or unanswering child (its exit
  status, a failed send, no acknowledgement within ``ACK_TIMEOUT``), logs it and starts
  a new one on the same listening socket, whose queue (``BACKLOG``) keeps the
  connections that arrive meanwhile. After ``RESTARTS`` restarts within
  ``RESTART_WINDOW`` it gives up: ``failure`` says why, and the exporter stops with
  that error (exit status 1) rather than run without serving.
"""

from __future__ import annotations

import logging
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from exporters.bodies import Exposition
from exporters.server import BACKLOG, Endpoints, MetricsHTTPServer
from kpi.signals import run_until_signalled

log = logging.getLogger(__name__)

#: Seconds between two state messages when nothing changed.
HEARTBEAT: Final = 0.5
#: A child that heard nothing this long serves nothing (seconds).
SILENT_AFTER: Final = 10.0
#: How long the exporter waits for the child's acknowledgement of a message (seconds).
ACK_TIMEOUT: Final = 5.0
#: How long a new child may take to start and acknowledge its first message (seconds).
START_TIMEOUT: Final = 30.0
#: Restarts allowed within ``RESTART_WINDOW`` seconds before the exporter gives up.
RESTARTS: Final = 5
RESTART_WINDOW: Final = 60.0
_LEN: Final = struct.Struct("!Q")
_ACK: Final = b"k"
_HELLO: Final = b"h"


class Server(Protocol):
    """What the exporter needs of its HTTP server, in its process or in a child."""

    @property
    def port(self) -> int:
        """The bound port."""

    @property
    def failure(self) -> str | None:
        """Why serving stopped for good (None while it serves)."""

    def start(self) -> None:
        """Serve."""

    def publish(self) -> None:
        """Make the endpoints' current state the one served."""

    def stop(self) -> None:
        """Stop serving."""


def make_server(in_process: bool, address: tuple[str, int], endpoints: Endpoints) -> Server:
    """The serving process (default) or, with ``in_process``, a thread of this process."""
    if in_process:
        return MetricsHTTPServer(address, endpoints)
    return ProcessServer(address, endpoints)


def run_serving(
    start: Callable[[], object],
    healthy: Callable[[], bool],
    stop: Callable[[], None],
    server: Callable[[], Server | None],
) -> None:
    """``run_until_signalled``; then ``RuntimeError`` if it stopped because serving failed."""
    failure: list[str] = []

    def stopping() -> None:
        current = server()
        if current is not None and current.failure:
            failure.append(current.failure)
        stop()

    run_until_signalled(start, healthy, stopping)
    if failure:
        raise RuntimeError(failure[0])


def _exit_text(code: int | None) -> str:
    if code is None:
        return "not answering"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


class ProcessServer:
    """The endpoints served by a child process, fed and supervised by this one."""

    def __init__(self, address: tuple[str, int], endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._listener = socket.create_server(address, backlog=BACKLOG)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        #: The exposition the current child has (only a changed one is sent).
        self._sent: Exposition | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._restarts: list[float] = []
        #: How the child ended when ``publish`` found it gone first (its supervisor says it).
        self._ended: int | None = None
        self._failure: str | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._listener.getsockname()[1])

    @property
    def pid(self) -> int | None:
        """The serving process's pid (None between a death and its restart)."""
        return None if self._proc is None else self._proc.pid

    @property
    def failure(self) -> str | None:
        """Why serving stopped for good (None while it serves)."""
        return self._failure

    def start(self) -> None:
        """Start the serving process with the current state, then its supervising thread."""
        proc, control = self._launch()
        with self._lock:
            self._install(proc, control)
        self._thread = threading.Thread(target=self._supervise, name="serving", daemon=True)
        self._thread.start()

    def publish(self) -> None:
        """Send the endpoints' state; returns once the serving process serves it."""
        with self._lock:
            if self._control is None:
                return  # between a death and its restart: the restart sends the state
            try:
                self._send()
            except OSError as exc:  # the serving thread restarts it within a heartbeat
                log.warning("serving process not answering: %s", exc)
                self._ended = self._drop()

    def stop(self) -> None:
        """Stop the serving process (it exits on end-of-file) and close the socket."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._drop(graceful=True)
        self._listener.close()

    # --- supervision ---------------------------------------------------------------------

    def _launch(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        """A new serving process, once it has started (its interpreter and imports).

        Runs without the lock: ``publish()`` is not held up while a child starts.
        """
        ours, theirs = socket.socketpair()
        fds = (self._listener.fileno(), theirs.fileno())
        cmd = [sys.executable, "-m", "exporters.serving", *map(str, fds)]
        try:
            # Its own process group: a Ctrl-C in a terminal reaches the exporter only,
            # which stops the child by closing the socket pair once the final checkpoint
            # is written. Not its own session: with the scheduler's autogroups, a session
            # of its own got a smaller share of a busy machine than the exporter's (about
            # half the scrapes per second in bench_scrapes.py at a load average of 25).
            proc = subprocess.Popen(cmd, pass_fds=fds, stdin=subprocess.DEVNULL, process_group=0)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(START_TIMEOUT)
        try:
            if ours.recv(1) != _HELLO:
                raise OSError(f"the serving process {_exit_text(proc.poll())} at start")
        except OSError:
            ours.close()
            proc.kill()
            proc.wait()
            raise
        ours.settimeout(ACK_TIMEOUT)
        return proc, ours

    def _install(self, proc: subprocess.Popen[bytes], control: socket.socket) -> None:
        """Make a started child the serving one: it starts serving with the current state."""
        self._proc, self._control, self._sent = proc, control, None
        self._send()
        log.info("serving process %d answers on port %d", proc.pid, self.port)

    def _send(self) -> None:
        """One state message, then the child's acknowledgement (``OSError`` when it fails)."""
        control = self._control
        assert control is not None
        ep = self.endpoints
        exposition = ep.exposition()
        failing, notes = ep.condition()
        message: dict[str, Any] = {
            "ready": ep.ready(),
            "healthy": ep.healthy(),
            "why_unhealthy": ep.why_unhealthy(),
            "failing": tuple(failing),
            "notes": tuple(notes),
        }
        if exposition is not self._sent:
            message["exposition"] = exposition
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        control.sendall(_LEN.pack(len(data)))
        control.sendall(data)
        if control.recv(1) != _ACK:
            raise OSError("the serving process closed its end")
        self._sent = exposition

    def _drop(self, graceful: bool = False) -> int | None:
        """Close the child's socket pair and reap it; its exit status."""
        proc, control = self._proc, self._control
        self._proc = self._control = None
        if control is not None:
            control.close()  # end-of-file: a live child exits
        if proc is None:
            return None
        try:
            proc.wait(timeout=5.0 if graceful else 0.5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None if graceful else proc.returncode
        return proc.returncode

    def _supervise(self) -> None:
        while not self._stopping.wait(HEARTBEAT):
            with self._lock:
                proc = self._proc
                if proc is not None and proc.poll() is None and self._control is not None:
                    try:
                        self._send()
                        continue
                    except OSError as exc:
                        log.warning("serving process not answering: %s", exc)
                code, self._ended = (self._ended if proc is None else proc.poll()), None
                dropped = self._drop()
                if not self._may_restart(dropped if code is None else code):
                    return
            self._restart()

    def _may_restart(self, code: int | None) -> bool:
        """Whether a child that ended with ``code`` is replaced (restarts not exhausted)."""
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        if len(self._restarts) > RESTARTS:
            self._failure = (
                f"the serving process ended {len(self._restarts)} times within "
                f"{RESTART_WINDOW:.0f}s (last: {_exit_text(code)}); giving up"
            )
            log.critical("%s", self._failure)
            return False
        log.error("serving process %s; starting a new one", _exit_text(code))
        return True

    def _restart(self) -> None:
        try:
            proc, control = self._launch()
        except OSError as exc:  # counted as one more ending at the next heartbeat
            log.error("cannot start the serving process: %s", exc)
            return
        with self._lock:
            if self._stopping.is_set():
                control.close()
                proc.wait()
                return
            try:
                self._install(proc, control)
            except OSError as exc:
                log.error("the new serving process does not answer: %s", exc)
                self._drop()


# --- the serving process ---------------------------------------------------------------


class _Served:
    """What the child serves: the last state message, as one reference."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {
            "ready": False,
            "healthy": True,
            "why_unhealthy": "",
            "failing": (),
            "notes": (),
            "exposition": None,
        }
        self.heard = time.monotonic()

    def silent(self) -> float:
        """Seconds since the last message when over ``SILENT_AFTER``, else 0."""
        quiet = time.monotonic() - self.heard
        return quiet if quiet >= SILENT_AFTER else 0.0

    def _silence(self, quiet: float) -> str:
        return f"no word from the exporter's ingest process for {quiet:.0f}s: nothing served"

    def endpoints(self) -> Endpoints:
        """Endpoints reading the last message (and the silence since)."""

        def exposition() -> Exposition | None:
            expo = self.message["exposition"]
            return None if self.silent() else expo

        def condition() -> tuple[tuple[str, ...], tuple[str, ...]]:
            msg, quiet = self.message, self.silent()
            failing = tuple(msg["failing"])
            return ((self._silence(quiet), *failing) if quiet else failing), tuple(msg["notes"])

        def why_unhealthy() -> str:
            quiet = self.silent()
            return self._silence(quiet) if quiet else str(self.message["why_unhealthy"])

        return Endpoints(
            exposition,
            lambda: bool(self.message["ready"]),
            lambda: bool(self.message["healthy"]) and not self.silent(),
            condition,
            why_unhealthy,
        )

    def follow(self, control: socket.socket, first: Callable[[], None]) -> None:
        """Take in state messages until the exporter closes its end (or is gone).

        ``first`` is called once the first message is in, before it is acknowledged.
        """
        while (head := _recv_exactly(control, _LEN.size)) is not None:
            data = _recv_exactly(control, _LEN.unpack(head)[0])
            if data is None:
                return
            message = pickle.loads(data)
            message.setdefault("exposition", self.message["exposition"])
            self.message, self.heard = message, time.monotonic()
            first()
            first = _nothing
            control.sendall(_ACK)


def _nothing() -> None:
    """Called for every message after the first."""


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes, or None at end-of-file."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buf)


def main(argv: list[str]) -> int:
    """The serving process: ``python -m exporters.serving LISTEN_FD CONTROL_FD``."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s serving: %(message)s"
    )
    # A stop signal sent to every process of the exporter (a service manager's stop)
    # is the exporter's to handle: it ends this process by closing the socket pair once
    # its final checkpoint is written, and /metrics is served until then.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = socket.socket(fileno=int(argv[0]))
    control = socket.socket(fileno=int(argv[1]))
    served = _Served()
    server = MetricsHTTPServer(("", 0), served.endpoints(), listener=listener)
    control.sendall(_HELLO)  # started: the exporter sends the state to serve
    try:
        # Serving starts with the first state, never with an empty one: a restarted
        # child must not answer 503 to a scrape of a ready exporter.
        served.follow(control, server.start)
    except OSError as exc:  # the exporter died mid-message
        log.warning("control socket failed: %s", exc)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
