"""Keep freed memory in the process for the next set, instead of giving it back to the OS.

A set allocates the same large temporaries again and again (a poll's joined NDJSON buffer,
numpy masks and hashes of 10-100 MB). With glibc's defaults each of them is a fresh
``mmap`` whose pages are faulted in one by one, then unmapped at ``free``: ~0.5 µs per
event of page faults at 156 k-record sets (``docs/benchmarks.md``, "(lead: malloc)").
Raising the mmap and trim thresholds makes those allocations come from the heap and stay
there once freed, at the cost of up to ``keep`` bytes of free memory held in the RSS.
polars' own allocations (jemalloc) are not concerned.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Final

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc ``malloc.h``).
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
#: The default: 512 MiB held at most, allocations up to 256 MiB from the heap.
KEEP_DEFAULT: Final = 512 << 20


def keep_freed_memory(keep: int) -> bool:
    """Hold up to ``keep`` bytes of freed memory for reuse (0: glibc's defaults).

    Allocations up to ``keep / 2`` come from the heap. Returns whether glibc took the
    setting (False on another C library, or for 0).
    """
    if keep <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        log.info("no mallopt in this C library: freed memory goes back to the OS")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # The values are ints of the C library: the cap keeps them in range.
    keep = min(keep, 1 << 30)
    took: bool = mallopt(M_MMAP_THRESHOLD, keep // 2) == 1
    took = took and mallopt(M_TRIM_THRESHOLD, keep) == 1
    if not took:
        log.warning("mallopt refused a keep of %d bytes: glibc's defaults stay", keep)
    return took
