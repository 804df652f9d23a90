"""The C heap's policy (glibc): what a set's temporaries cost in page faults and in RSS.

- Blocks of 1 MiB and more are always mmapped (``M_MMAP_THRESHOLD`` fixed): glibc would
  raise the threshold up to 32 MiB after freeing large blocks, after which big numpy
  temporaries stay on the heap as holes (~30 B per item after a restore).
- Smaller blocks come from the heap. With glibc's default trim threshold (128 KiB) the
  heap's top is given back at every ``free`` of the last blocks and faulted in again by
  the next set: a set's ~100 MB of such temporaries cost ~0.5 µs of an event's ~8 µs at
  156 k-record sets (``docs/benchmarks.md``, "(lead: malloc)"). ``keep_freed_memory``
  raises that threshold, so up to ``keep`` bytes stay for the next set.
- ``trim_heap`` gives every free page back after a restore and at each checkpoint.

polars has its own allocator (jemalloc, which returns memory by itself after its decay
time) and is not concerned.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import Any, Final

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc ``malloc.h``).
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
#: Blocks from this size on are mmapped, and given back when freed.
MMAP_FROM: Final = 1 << 20


@functools.cache
def _libc() -> Any:
    """glibc, with large blocks always mmapped (None on another C library)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_FROM)
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (after a restore, at a checkpoint)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def keep_freed_memory(keep: int) -> bool:
    """Keep up to ``keep`` bytes of freed heap for the next set (0: glibc's 128 KiB).

    Returns whether glibc took the setting (False on another C library, or for 0).
    """
    libc = _libc()
    if keep <= 0 or libc is None:
        return False
    # The value is a C int: the cap keeps it in range.
    took: bool = libc.mallopt(M_TRIM_THRESHOLD, min(keep, 1 << 30)) == 1
    if not took:
        log.warning("mallopt refused a trim threshold of %d bytes: glibc's stays", keep)
    return took
