"""Stopping a process on SIGTERM/SIGINT without deadlocking in the signal handler."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


class SignalStop:
    """A stop event that signal handlers can request safely.

    The handler only records the signal: it runs in the main thread, which may hold
    the event's lock inside ``event.wait()``, so calling ``event.set()`` there can
    deadlock (seen with a burst of TERMs). A watcher thread sets the event instead.
    """

    def __init__(self, poll: float = 0.05) -> None:
        self.event = threading.Event()
        self.requested: list[int] = []
        self._poll = poll
        threading.Thread(target=self._watch, name="signal-watch", daemon=True).start()

    def handler(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: takes no lock, so it is safe at any instant and re-entrant."""
        self.requested.append(signum)

    def _watch(self) -> None:
        while not self.requested and not self.event.is_set():
            time.sleep(self._poll)
        self.event.set()


def run_until_signalled(
    start: Callable[[], object], healthy: Callable[[], bool], stop: Callable[[], None]
) -> None:
    """``start()``, then wait for SIGTERM/SIGINT or an unhealthy worker, then ``stop()``."""
    requested = SignalStop()
    signal.signal(signal.SIGTERM, requested.handler)
    signal.signal(signal.SIGINT, requested.handler)
    start()
    while not requested.event.wait(0.5):
        if not healthy():
            log.error(
                "unhealthy (a worker thread or the serving process ended: see above); stopping"
            )
            break
    stop()
