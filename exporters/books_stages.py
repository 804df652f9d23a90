"""The stage histograms' part of applying a set (``exporters.books``): kept apart so the
counting core's own rules stay readable; the rules are ``kpi.kpis.stage_increments``."""

from __future__ import annotations

import polars as pl

from exporters import catalog as cat
from exporters.compact import key_hashes
from exporters.compact_stages import CompactStages
from exporters.seen import Hashes
from exporters.store import CounterStore
from kpi.contract import FACILITY_SCHEMA
from kpi.kpis.stage_increments import FIRST_MILE_LABELS, stage_increments


def apply_stages(
    counters: CounterStore,
    history: CompactStages,
    new_rows: pl.DataFrame,
    facilities: pl.DataFrame | None,
    merged: pl.DataFrame,
    retired: Hashes,
) -> CompactStages:
    """Observe a set's new stage intervals into ``counters``; returns the new history.

    ``merged``: the state rows of the items the set touched (their product and origin
    label the first mile); ``retired``: the hashes of the items the set retired from the
    state, whose history goes with them (items waiting for their acceptance keep theirs).
    Only the touched items' scans are decoded (``exporters.compact_stages``).
    """
    if facilities is None:
        facilities = pl.DataFrame(schema=FACILITY_SCHEMA)
    if new_rows.is_empty():
        return history.retire(retired)
    dims = merged.select("item_id", *FIRST_MILE_LABELS)
    before = history.history(key_hashes(new_rows.get_column("item_id")))
    _, inc = stage_increments(before, new_rows, facilities, dims)
    counters.observe(cat.STAGE_DWELL, inc.dwell)
    counters.observe(cat.STAGE_LEG, inc.leg)
    counters.observe(cat.STAGE_FIRST_MILE, inc.first_mile)
    counters.observe(cat.STAGE_LAST_MILE, inc.last_mile)
    counters.add_counts(cat.STAGE_REVISIONS, inc.revisions)
    return history.add(new_rows).retire(retired)
