"""``exporters.malloc``: freed memory kept for reuse, measured by the page faults it saves."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Allocates and frees 64 MiB ten times (above glibc's largest dynamic mmap threshold, so
# by default every round maps fresh pages) and prints the minor page faults of the loop.
_WORKLOAD = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from exporters.malloc import keep_freed_memory
    took = keep_freed_memory(int(sys.argv[1]))
    np.ones(8 << 20).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        a = np.ones(8 << 20)  # 64 MiB
        a.sum()
        del a
    print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)
#: The fewest faults a round of fresh 64 MiB can cost: one per 2 MiB huge page (numpy
#: advises huge pages for large arrays; with 4 KiB pages it is 16,384).
_FEWEST_PER_ROUND = (64 << 20) // (2 << 20)


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
    # By default each round maps and faults in fresh pages; kept, the first round's are reused.
    assert default >= 10 * _FEWEST_PER_ROUND
    assert kept * 10 <= default


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
