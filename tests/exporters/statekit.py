"""A checkpoint built in a test: the items (and stage state) given, nothing else."""

from __future__ import annotations

import numpy as np
import polars as pl

from exporters.compact import CompactItems
from exporters.compact_stages import CompactStages
from exporters.state import Checkpoint
from exporters.store import CounterStore
from kpi.kpis.increments import COMPLAINT_STATE_SCHEMA


def bare_checkpoint(
    items: CompactItems, seq: int = 1, stages: CompactStages | None = None
) -> Checkpoint:
    """A checkpoint holding ``items`` (and ``stages``) and nothing else."""
    return Checkpoint(
        seq=seq,
        created_at=0.0,
        files={},
        counters=CounterStore(),
        items=items,
        complaints=pl.DataFrame(schema=COMPLAINT_STATE_SCHEMA),
        seen=np.zeros(0, np.uint64),
        rejects_bytes=0,
        last_event_us=None,
        stages=CompactStages() if stages is None else stages,
    )
