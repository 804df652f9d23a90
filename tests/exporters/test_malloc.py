"""``exporters.malloc``: freed memory kept for reuse, measured by the page faults it saves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Allocates and frees 200 blocks of 480 KB (under the 1 MiB mmap threshold: from the heap)
# ten times and prints the minor page faults of the loop.
_WORKLOAD = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from exporters.malloc import keep_freed_memory, trim_heap
    trim_heap()
    took = keep_freed_memory(int(sys.argv[1]))
    def work():
        blocks = [np.ones(60_000) for _ in range(200)]
        sum(b.sum() for b in blocks)
    work()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        work()
    print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)
#: The 96 MB a round allocates, in 4 KiB pages.
_PAGES_PER_ROUND = 200 * 60_000 * 8 // 4096


def _faults(keep: int) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, str(keep)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_not_faulted_in_again() -> None:
    took_default, default = _faults(0)
    took_kept, kept = _faults(512 << 20)
    assert (took_default, took_kept) == (False, True)
    # By default the heap's top is given back at the end of each round and faulted in
    # again by the next (most of its pages); kept, the first round's pages are reused.
    assert default >= 10 * _PAGES_PER_ROUND // 2
    assert kept <= _PAGES_PER_ROUND // 10


def test_a_bad_size_stops_the_exporter_with_the_option_named(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "kpi_cli", "exporter", str(tmp_path), "--malloc-keep", "lots"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "--malloc-keep" in run.stderr and "not a size" in run.stderr
