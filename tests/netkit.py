"""Ports for the real servers the tests start.

A port from ``bind(0)`` comes from the kernel's ephemeral range, the same range every
outgoing connection takes its source port from, so between choosing it and the server
binding it a client socket (or another test's server) can take it: once, a test then
talked to someone else's server. Ports here are drawn below that range, never handed out
twice by one process, and checked free by a bind first.
"""

from __future__ import annotations

import random
import socket
import threading

_LOW, _HIGH = 20000, 32000
_given: set[int] = set()
_lock = threading.Lock()
_rng = random.Random()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1, outside the ephemeral range, free a moment ago."""
    high = min(_HIGH, _ephemeral_low() - 1)
    with _lock:
        for _ in range(200):
            port = _rng.randint(_LOW, high)
            if port in _given:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given.add(port)
            return port
    with socket.socket() as s:  # a crowded range: fall back on the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
