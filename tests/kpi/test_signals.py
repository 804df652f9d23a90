"""SignalStop: a stop request from a signal handler never blocks."""

from __future__ import annotations

import threading

from kpi.signals import SignalStop


def test_stop_request_never_takes_the_events_lock() -> None:
    stop = SignalStop(poll=0.01)
    # Hold the lock as the main thread does inside ``Event.wait()`` when a signal lands:
    # a handler that called ``event.set()`` here would block forever.
    with stop.event._cond:  # type: ignore[attr-defined]
        finished = threading.Event()
        caller = threading.Thread(target=lambda: (stop.handler(15, None), finished.set()))
        caller.start()
        assert finished.wait(2), "the handler blocked on the event's lock"
    assert stop.event.wait(2)
    assert stop.requested == [15]
