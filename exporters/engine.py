"""The polars engine an exporter process runs its queries on."""

from __future__ import annotations

import polars as pl


def use_in_memory_engine() -> None:
    """Run this process's polars queries on the in-memory engine, not ``auto``.

    An exporter's queries are over one set (tens of thousands of rows to a few million),
    where ``auto`` picks the streaming engine and pays its fixed costs per query: the Kafka
    path measured ~9 % less CPU per event in memory (``docs/benchmarks.md``, issue 12).
    Process-wide, not per query, so that every module's ``collect()`` follows; the batch
    report (``kpi report``) does not call it, its larger-than-memory scans stay streaming.
    """
    pl.Config.set_engine_affinity("in-memory")
