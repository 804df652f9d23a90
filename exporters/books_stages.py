"""The stage histograms' part of applying a set (``exporters.books``): kept apart so the
counting core's own rules stay readable; the rules are ``kpi.kpis.stage_increments``.

The stored history leaves the acceptance scans out: of an item's acceptances the stage
rules read only the first one's time (the first mile starts there; the others change no
interval), and the item state already holds it exactly (``accepted_at``). So a set
computes its items' stage tables from their stored scans plus one acceptance row made
from the state before the set, and stores its scans but the acceptances.
"""

from __future__ import annotations

import polars as pl

from exporters import catalog as cat
from exporters.compact import key_hashes
from exporters.compact_stages import CompactStages
from exporters.seen import Hashes
from exporters.store import CounterStore
from kpi.contract import FACILITY_SCHEMA, EventType
from kpi.kpis.stage_increments import FIRST_MILE_LABELS, history_rows, stage_increments


def first_acceptances(state: pl.DataFrame) -> pl.DataFrame:
    """The first acceptance of each item of ``state`` (``STATE_SCHEMA``) as a history row
    (the facility is left empty: the stage rules read an acceptance's time only)."""
    return history_rows(
        state.filter(pl.col("accepted_at").is_not_null()).select(
            "item_id",
            pl.lit("accepted").cast(EventType).alias("event"),
            pl.col("accepted_at").alias("ts"),
            pl.lit("").alias("facility"),
        )
    )


def apply_stages(
    counters: CounterStore,
    history: CompactStages,
    new_rows: pl.DataFrame,
    facilities: pl.DataFrame | None,
    prior: pl.DataFrame,
    merged: pl.DataFrame,
    retired: Hashes,
) -> CompactStages:
    """Observe a set's new stage intervals into ``counters``; returns the new history.

    ``prior``, ``merged``: the state rows of the items the set touched, before and after
    it (the first acceptance; the product and origin that label the first mile); ``retired``: the hashes of the items the set retired from the
    state, whose history goes with them (items waiting for their acceptance keep theirs).
    Only the touched items' scans are decoded (``exporters.compact_stages``).
    """
    if facilities is None:
        facilities = pl.DataFrame(schema=FACILITY_SCHEMA)
    if new_rows.is_empty():
        return history.retire(retired)
    dims = merged.select("item_id", *FIRST_MILE_LABELS)
    stored = history.history(key_hashes(new_rows.get_column("item_id")))
    before = pl.concat([stored, first_acceptances(prior)], how="vertical")
    _, inc = stage_increments(before, new_rows, facilities, dims)
    counters.observe(cat.STAGE_DWELL, inc.dwell)
    counters.observe(cat.STAGE_LEG, inc.leg)
    counters.observe(cat.STAGE_FIRST_MILE, inc.first_mile)
    counters.observe(cat.STAGE_LAST_MILE, inc.last_mile)
    counters.add_counts(cat.STAGE_REVISIONS, inc.revisions)
    return history.add(new_rows).retire(retired)
