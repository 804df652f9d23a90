"""A refresh's gauges computed part by part, so that the state is never decoded whole.

``build_view`` over ``Ledger.view_items()`` decodes every item into ``STATE_SCHEMA``
rows and builds the engine's lifecycle table from them: ~215 B per item above the
compact state for the seconds a refresh runs. Here the items are split by their last
facility into parts of about ``chunk_items`` items (a hash of the facility's name, so
that the partitions of a Kafka shard, each with its own dictionary codes, agree), and
each part is decoded, asked the engine's own queries and dropped before the next.

The answers are the whole state's: the backlog is asked by facility, so each of its
groups lies in one part (``facilities.csv`` is split the same way) and the parts'
answers are concatenated; the network and stalled gauges are item counts, added over
the parts (``kpi.kpis.query``: ``concat_answers``, ``add_answers``). The complaints'
gauges are asked once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

import polars as pl

from exporters.books import Ledger
from exporters.compact import FACILITY, trim_heap
from exporters.store import CounterStore
from exporters.view import (
    BACKLOG_QUERY,
    COMPLAINTS_QUERY,
    NETWORK_QUERY,
    STALLED_QUERY,
    MetricsView,
    SelfStats,
    gauge_snapshot,
)
from kpi.kpis.increments import empty_complaint_state
from kpi.kpis.query import KpiQuery, add_answers, concat_answers
from kpi.lifecycle import empty_state
from kpi.standards import ServiceStandards

#: Items decoded at once by a refresh (~215 B each while a part is asked).
CHUNK_ITEMS: Final = 250_000
_SEED: Final = 0x6A09E667


def _part(col: str, parts: int) -> pl.Expr:
    return (pl.col(col).cast(pl.String).hash(_SEED) % parts).cast(pl.Int64)


def items_tracked(ledgers: Sequence[Ledger]) -> int:
    """Items the gauges read over ``ledgers``."""
    return sum(led.items_tracked() for led in ledgers)


def build_view_by_parts(
    ledgers: Sequence[Ledger],
    facilities: pl.DataFrame,
    standards: ServiceStandards,
    as_of: dt.datetime,
    counters: CounterStore,
    local: CounterStore,
    stats: SelfStats,
    stall_hours: float = 48.0,
    chunk_items: int = CHUNK_ITEMS,
) -> MetricsView:
    """``build_view`` of the ledgers' items (held scans merged in) and complaints, part by part."""
    n_parts = max(1, -(-sum(led.items.height for led in ledgers) // max(1, chunk_items)))
    held = [led.held_view() for led in ledgers]
    complaints = pl.concat(
        [empty_complaint_state(), *(led.complaints for led in ledgers)], how="vertical"
    )
    stalled_query = KpiQuery(kpis=STALLED_QUERY.kpis, by=STALLED_QUERY.by, stall_hours=stall_hours)
    fac_part = facilities.with_columns(_part("facility", n_parts).alias("_part"))
    backlog, network, stalled = [], [], []
    complaint_answer: pl.DataFrame | None = None
    for k in range(n_parts):
        rows = [empty_state()]  # a shard may hold no partition yet
        for led, (merged, hashes) in zip(ledgers, held, strict=True):
            names = led.items.facilities.with_row_index("_code")
            codes = names.filter(_part(FACILITY, n_parts) == k).get_column("_code")
            rows.append(led.items.at_facilities(codes, hashes))
            rows.append(merged.filter(_part(FACILITY, n_parts) == k))
        snap = gauge_snapshot(
            pl.concat(rows, how="vertical"),
            complaints if k == 0 else complaints.clear(),
            fac_part.filter(pl.col("_part") == k).drop("_part"),
            standards,
            as_of,
        )
        del rows
        backlog.append(snap.query(BACKLOG_QUERY))
        network.append(snap.query(NETWORK_QUERY))
        stalled.append(snap.query(stalled_query))
        if k == 0:
            complaint_answer = snap.query(COMPLAINTS_QUERY)
    # The parts' decoded rows leave holes on the C heap that glibc keeps (the state's size
    # again, ~7 B per item measured): between two refreshes the shard holds its state only.
    trim_heap()
    return MetricsView(
        counters=counters,
        local=local,
        backlog=concat_answers(backlog, BACKLOG_QUERY),
        network=add_answers(network, NETWORK_QUERY),
        stalled=add_answers(stalled, stalled_query),
        complaints=complaint_answer,
        stats=stats,
        as_of=as_of,
        stage_targets=standards.stages,
    )
