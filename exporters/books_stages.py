"""The stage histograms' part of applying a set (``exporters.books``): kept apart so the
counting core's own rules stay readable; the rules are ``kpi.kpis.stage_increments``,
computed over the exporter's integer keys (``kpi.kpis.stage_increments_coded``).

The stored history leaves the acceptance scans out: of an item's acceptances the stage
rules read only the first one's time (the first mile starts there; the others change no
interval), and the item state already holds it exactly (``accepted_at``). So a set
computes its items' stage tables from their stored scans plus one acceptance row made
from the state before the set, and stores its scans but the acceptances. An acceptance's
facility is never read by the rules: acceptance rows carry facility code 0.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import polars as pl

from exporters import catalog as cat
from exporters.compact import CompactItems, key_hashes
from exporters.compact_stages import ROWS_SCHEMA, CompactStages
from exporters.seen import Hashes
from exporters.store import CounterStore
from kpi.contract import FACILITY_SCHEMA
from kpi.events import RANK_BITS, STAGE
from kpi.kpis.stage_increments import COUNT, FIRST_MILE_LABELS
from kpi.kpis.stage_increments_coded import coded_stage_increments

_ACCEPTED: Final = STAGE["accepted"]


def _acceptances() -> pl.Expr:
    return pl.col("key") % RANK_BITS == _ACCEPTED


def first_acceptances(state: pl.DataFrame) -> pl.DataFrame:
    """The first acceptance of each item of ``state`` (``STATE_SCHEMA``) as coded rows
    (``h, key, facility``; facility code 0: the rules read an acceptance's time only)."""
    accepted = state.filter(pl.col("accepted_at").is_not_null())
    return pl.DataFrame(
        {
            "h": key_hashes(accepted.get_column("item_id")),
            "key": accepted.get_column("accepted_at").dt.epoch("us") * RANK_BITS + _ACCEPTED,
            "facility": pl.repeat(0, accepted.height, dtype=pl.UInt32, eager=True),
        }
    )


def apply_stages(
    counters: CounterStore,
    history: CompactStages,
    new_rows: pl.DataFrame,
    facilities: pl.DataFrame | None,
    prior: pl.DataFrame,
    merged: pl.DataFrame,
    retired: Hashes,
    mark: int | None = None,
    items: CompactItems | None = None,
) -> CompactStages:
    """Observe a set's new stage intervals into ``counters``; returns the new history, on
    ``items`` (the item table after the set, whose rows hold their items' summaries:
    ``CompactStages.attach``; None = the history's own).

    ``prior``, ``merged``: the state rows of the items the set touched, before and after
    it (the first acceptance; the product and origin that label the first mile);
    ``retired``: the hashes of the items the set retired from the state, whose stage
    state goes with them (items waiting for their acceptance keep theirs); ``mark``: the
    horizon after the set (a time key; None = none, every scan is kept). Only the touched
    items' scans and summaries are read, as codes (``exporters.compact_stages``).
    """
    if facilities is None:
        facilities = pl.DataFrame(schema=FACILITY_SCHEMA)
    after = history.items if items is None else items
    new_rows = _within_horizon(counters, new_rows, history)
    if new_rows.is_empty():
        return _on(history, after).fold(mark).retire(retired)
    accepted = new_rows.filter(_acceptances())
    grown, coded = history.encode(new_rows.filter(~_acceptances()))
    if grown.names.is_empty():  # only acceptances and nothing stored: no stage can end
        return _on(grown, after).fold(mark).retire(retired)
    new = pl.concat(
        [
            coded.rename({"item": "h"}),
            pl.DataFrame(
                {
                    "h": key_hashes(accepted.get_column("item_id")),
                    "key": accepted.get_column("key"),
                    "facility": pl.repeat(0, accepted.height, dtype=pl.UInt32, eager=True),
                }
            ),
        ],
        how="vertical",
    )
    # Only an acceptance older than the mark reads its item's first departure.
    below = -(2**62) if history.mark is None else history.mark
    late = key_hashes(accepted.filter(pl.col("key") < below).get_column("item_id"))
    stored = grown.coded_rows(
        new.get_column("h"), late.implode(), coded.select(ROWS_SCHEMA.keys())
    ).rename({"item": "h"})
    before = pl.concat([stored, first_acceptances(prior)], how="vertical")
    dims = merged.select(key_hashes(merged.get_column("item_id")).alias("h"), *FIRST_MILE_LABELS)
    names = grown.names.get_column("facility")
    inc = coded_stage_increments(before, new, names, facilities, dims)
    counters.observe(cat.STAGE_DWELL, inc.dwell)
    counters.observe(cat.STAGE_LEG, inc.leg)
    counters.observe(cat.STAGE_FIRST_MILE, inc.first_mile)
    counters.observe(cat.STAGE_LAST_MILE, inc.last_mile)
    counters.add_counts(cat.STAGE_REVISIONS, inc.revisions)
    return _on(grown, after).add_coded(coded).fold(mark).retire(retired)


def _on(history: CompactStages, items: CompactItems | None) -> CompactStages:
    """``history`` on the item table after the set: its rows carry the same summaries
    but the retired items' (a side summary of an item that now has a row moves into it
    at the item's next fold)."""
    return history if items is None else dataclasses.replace(history, items=items)


def _within_horizon(
    counters: CounterStore, rows: pl.DataFrame, history: CompactStages
) -> pl.DataFrame:
    """``rows`` but those older than the history's mark, which are counted by event
    instead; an acceptance older than the mark stays when it comes before its item's
    first departure (or the item has none): its first mile is still exact."""
    mark = history.horizon
    if mark is None or rows.is_empty():
        return rows
    key = pl.col("key")
    if rows.filter(key < mark).is_empty():
        return rows
    touched = key_hashes(rows.filter(key < mark).get_column("item_id")).unique().implode()
    firsts = history.summaries(touched).select(pl.col("item").alias("_h"), "first_dep_key")
    looked = rows.with_columns(key_hashes(rows.get_column("item_id")).alias("_h")).join(
        firsts, on="_h", how="left", maintain_order="left"
    )
    before_departures = _acceptances() & pl.col("first_dep_key").fill_null(2**62).gt(key)
    late = looked.select(((key < mark) & ~before_departures).alias("_late")).get_column("_late")
    beyond = rows.filter(late)
    if beyond.is_empty():
        return rows
    names = {rank: name for name, rank in STAGE.items()}
    counted = beyond.group_by(
        (key % RANK_BITS).replace_strict(names, return_dtype=pl.String).alias("event")
    ).agg(pl.len().alias(COUNT))
    counters.add_counts(cat.EXPORTER_STAGE_LATE_SCANS, counted)
    return rows.filter(~late)


def stage_mark(clock_us: int | None, horizon_us: int | None) -> int | None:
    """The stage horizon as a time key: scans below it are summarised (None = none)."""
    if clock_us is None or horizon_us is None:
        return None
    return (clock_us - horizon_us) * RANK_BITS
