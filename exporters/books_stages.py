"""The stage histograms' part of applying a set (``exporters.books``): kept apart so the
counting core's own rules stay readable; the rules are ``kpi.kpis.stage_increments``."""

from __future__ import annotations

from typing import Final

import polars as pl

from exporters import catalog as cat
from exporters.store import CounterStore
from kpi.contract import FACILITY_SCHEMA
from kpi.kpis.stage_increments import (
    FIRST_MILE_LABELS,
    retire_history,
    stage_increments,
)

#: Each set appends a chunk to the history; many small chunks slow every later join.
_MAX_CHUNKS: Final = 16


def apply_stages(
    counters: CounterStore,
    history: pl.DataFrame,
    new_rows: pl.DataFrame,
    facilities: pl.DataFrame | None,
    merged: pl.DataFrame,
    retired: pl.Series,
) -> pl.DataFrame:
    """Observe a set's new stage intervals into ``counters``; returns the new history.

    ``merged``: the state rows of the items the set touched (their product and origin
    label the first mile); ``retired``: the ids of the items the set retired from the
    state, whose history goes with them (items waiting for their acceptance keep theirs).
    """
    if facilities is None:
        facilities = pl.DataFrame(schema=FACILITY_SCHEMA)
    dims = merged.select("item_id", *FIRST_MILE_LABELS)
    history, inc = stage_increments(history, new_rows, facilities, dims)
    counters.observe(cat.STAGE_DWELL, inc.dwell)
    counters.observe(cat.STAGE_LEG, inc.leg)
    counters.observe(cat.STAGE_FIRST_MILE, inc.first_mile)
    counters.observe(cat.STAGE_LAST_MILE, inc.last_mile)
    counters.add_counts(cat.STAGE_REVISIONS, inc.revisions)
    if retired.len():
        history = retire_history(history, retired)
    if history.n_chunks() > _MAX_CHUNKS:
        history = history.rechunk()
    return history
