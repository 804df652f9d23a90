"""Item lifecycle: one row per item, an accumulating snapshot of its events.

Every event is first turned into a *partial state* (a lifecycle row that knows
only that event); ``reduce_states`` combines partial states of the same item with
min/max rules that are associative, commutative and idempotent. Building from all
events and merging batch after batch therefore give the same table, whatever the
order of the batches and however often an event is repeated.

What each event type sets, its stage rank and the tie rules are the table in
``kpi/events.py`` (deterministic, so the merge order never matters):
- acceptance: earliest ``accepted``; at equal ``ts`` the smallest ``event_id`` wins;
- first attempt: earliest ``delivered``/``delivery_failed``; at equal ``ts`` the
  earlier lifecycle stage (``delivery_failed``) wins;
- last event: latest ``ts``; at equal ``ts`` the later lifecycle stage wins, then
  the greatest facility name.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import polars as pl

from kpi.contract import EVENT_TYPES, UTC, EventType
from kpi.events import RANK_BITS, Effect, event_has, event_key, key_ts
from kpi.standards import ServiceStandards, with_promised_by

_ACCEPTANCE_FIELDS: Final = ("product", "origin", "destination", "promised_by_given")

#: Columns of the mergeable state (what the exporter checkpoints).
STATE_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item_id": pl.String(),
    "accepted_at": UTC,
    "accepted_event_id": pl.String(),
    "product": pl.String(),
    "origin": pl.String(),
    "destination": pl.String(),
    "promised_by_given": UTC,
    "attempt_key": pl.Int64(),
    "delivered_at": UTC,
    "returned_at": UTC,
    "last_key": pl.Int64(),
    "last_facility": pl.String(),
}

#: Columns of the lifecycle table the KPI functions read.
LIFECYCLE_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item_id": pl.String(),
    "accepted_at": UTC,
    "product": pl.String(),
    "origin": pl.String(),
    "destination": pl.String(),
    "promised_by": UTC,
    "first_attempt_at": UTC,
    "first_attempt_outcome": EventType,
    "delivered_at": UTC,
    "returned_at": UTC,
    "last_event": EventType,
    "last_event_at": UTC,
    "last_facility": pl.String(),
    "finished": pl.Boolean(),
}


def _key_event(key: str) -> pl.Expr:
    names = dict(enumerate(EVENT_TYPES))
    return pl.col(key).mod(RANK_BITS).replace_strict(names, default=None, return_dtype=EventType)


def event_partials(events: pl.LazyFrame) -> pl.LazyFrame:
    """Each event as a one-event lifecycle state (``STATE_SCHEMA``)."""
    accepted = event_has(Effect.ACCEPTS)
    return events.select(
        pl.col("item_id"),
        pl.when(accepted).then(pl.col("ts")).alias("accepted_at"),
        pl.when(accepted).then(pl.col("event_id")).alias("accepted_event_id"),
        *(pl.when(accepted).then(pl.col(c)).alias(c) for c in ("product", "origin", "destination")),
        pl.when(accepted).then(pl.col("promised_by")).alias("promised_by_given"),
        pl.when(event_has(Effect.ATTEMPTS)).then(event_key()).alias("attempt_key"),
        pl.when(event_has(Effect.DELIVERS)).then(pl.col("ts")).alias("delivered_at"),
        pl.when(event_has(Effect.RETURNS)).then(pl.col("ts")).alias("returned_at"),
        event_key().alias("last_key"),
        pl.col("facility").alias("last_facility"),
    )


def _last_facility() -> pl.Expr:
    """The facility of the last scan: the row with the greatest ``(last_key, last_facility)``.

    ``max_by`` a struct key follows the tie rule in one aggregation: the latest key, then
    the greatest facility; struct fields order nulls first, so a row without a facility
    sorts below the rows of its key that have one. Rows without a key never win (their
    facility is masked), as ``max`` ignores null keys.
    """
    key = pl.col("last_key")
    facility = pl.col("last_facility")
    return pl.when(key.is_not_null()).then(facility).max_by(pl.struct(key, facility))


def reduce_states(states: pl.LazyFrame, *extra: pl.Expr) -> pl.LazyFrame:
    """Combine partial states of the same item into one row per item.

    Two passes over ``states`` that avoid per-group filters: min/max aggregations per
    item (the last scan's facility is a ``max_by`` of a struct key), and the acceptance
    winner from the rows that have an acceptance, sorted by the tie rule (earliest
    ``accepted_at``, smallest ``accepted_event_id``, then the first row read).
    ``extra`` per-item aggregations (e.g. the exporter's event counts) come out as
    trailing columns.
    """
    return _reduce(states, *extra)


def _reduce(states: pl.LazyFrame, *extra: pl.Expr) -> pl.LazyFrame:
    """``reduce_states`` plus ``extra`` per-item aggregations (as trailing columns)."""
    totals = states.group_by("item_id").agg(
        pl.col("attempt_key").min(),
        pl.col("delivered_at").min(),
        pl.col("returned_at").min(),
        pl.col("last_key").max(),
        _last_facility().alias("last_facility"),
        *extra,
    )
    has_winner = pl.col("accepted_event_id").is_not_null()
    acceptance = (
        states.filter(pl.col("accepted_at").is_not_null())
        .select("item_id", "accepted_at", "accepted_event_id", *_ACCEPTANCE_FIELDS)
        .with_row_index("_order")
        .sort(["accepted_at", "accepted_event_id", "_order"], nulls_last=True)
        .unique("item_id", keep="first", maintain_order=True)
        .select(
            "item_id",
            "accepted_at",
            "accepted_event_id",
            # Equal earliest acceptances without any event id: no winner.
            *(pl.when(has_winner).then(pl.col(c)).alias(c) for c in _ACCEPTANCE_FIELDS),
        )
    )
    return totals.join(acceptance, on="item_id", how="left", nulls_equal=True).select(
        "item_id",
        "accepted_at",
        "accepted_event_id",
        *_ACCEPTANCE_FIELDS,
        "attempt_key",
        "delivered_at",
        "returned_at",
        "last_key",
        "last_facility",
        *(e.meta.output_name() for e in extra),
    )


def empty_state() -> pl.DataFrame:
    """A state with no items."""
    return pl.DataFrame(schema=STATE_SCHEMA)


def build_state(events: pl.LazyFrame, as_of: dt.datetime | None = None) -> pl.LazyFrame:
    """The state of every item from its events with ``ts <= as_of`` (all events when None)."""
    if as_of is not None:
        events = events.filter(pl.col("ts") <= as_of)
    return reduce_states(event_partials(events)).select(STATE_SCHEMA.keys())


def collect_state(
    events: pl.LazyFrame, as_of: dt.datetime | None = None
) -> tuple[pl.DataFrame, dt.datetime | None, dt.datetime | None]:
    """The state of every item from its events up to ``as_of``, and the events' time span.

    Returns ``(state, first, last)``: ``build_state(events, as_of)`` collected, and the
    earliest and latest ``ts`` of the events it used (None when there are none). With
    ``as_of=None`` every event that has a ``ts`` is used. One pass over ``events`` (the
    span comes from the same aggregation), on the streaming engine.
    """
    state, first, last, _ = collect_state_counted(events, as_of)
    return state, first, last


def collect_state_counted(
    events: pl.LazyFrame, as_of: dt.datetime | None = None
) -> tuple[pl.DataFrame, dt.datetime | None, dt.datetime | None, int]:
    """``collect_state`` plus the number of events the state was built from."""
    ts = pl.col("ts")
    events = events.filter(ts.is_not_null() if as_of is None else ts <= as_of)
    first_key = pl.col("last_key").min().alias("_first_key")
    table = _reduce(event_partials(events), first_key, pl.len().alias("_rows")).collect(
        engine="streaming"
    )
    span = table.select(
        key_ts("_first_key").min().alias("first"), key_ts("last_key").max().alias("last")
    )
    first, last = span.row(0) if table.height else (None, None)
    rows = int(table.get_column("_rows").sum())
    return table.select(STATE_SCHEMA.keys()), first, last, rows


def merge_events(state: pl.DataFrame, events: pl.LazyFrame) -> pl.DataFrame:
    """The state after applying a batch of events; only the items it touches are recomputed."""
    partials = event_partials(events).collect()
    if partials.is_empty():
        return state
    # One membership test splits the state (cheaper than a semi and an anti join).
    touched = state.get_column("item_id").is_in(partials.get_column("item_id").unique().implode())
    touched = touched.fill_null(False)  # a null id joins nothing: it stays in the rest
    affected = state.filter(touched)
    rest = state.filter(~touched)
    merged = reduce_states(pl.concat([affected, partials], how="vertical").lazy()).select(
        STATE_SCHEMA.keys()
    )
    return pl.concat([rest, merged.collect()], how="vertical")


def finished() -> pl.Expr:
    """Whether an item is finished: delivered or returned (state or lifecycle columns)."""
    return pl.col("delivered_at").is_not_null() | pl.col("returned_at").is_not_null()


def lifecycle(state: pl.LazyFrame, standards: ServiceStandards) -> pl.LazyFrame:
    """The lifecycle table (``LIFECYCLE_SCHEMA``) from a state: decoded keys and the promise."""
    return with_promised_by(state, standards).select(
        pl.col("item_id"),
        pl.col("accepted_at"),
        pl.col("product"),
        pl.col("origin"),
        pl.col("destination"),
        pl.col("promised_by"),
        key_ts("attempt_key").alias("first_attempt_at"),
        _key_event("attempt_key").alias("first_attempt_outcome"),
        pl.col("delivered_at"),
        pl.col("returned_at"),
        _key_event("last_key").alias("last_event"),
        key_ts("last_key").alias("last_event_at"),
        pl.col("last_facility"),
        finished().alias("finished"),
    )


def build_lifecycle(
    events: pl.LazyFrame, standards: ServiceStandards, as_of: dt.datetime | None = None
) -> pl.LazyFrame:
    """Lifecycle table of every item from its events up to ``as_of``."""
    return lifecycle(build_state(events, as_of), standards)


__all__ = [
    "LIFECYCLE_SCHEMA",
    "RANK_BITS",
    "STATE_SCHEMA",
    "build_lifecycle",
    "build_state",
    "collect_state",
    "collect_state_counted",
    "empty_state",
    "event_partials",
    "finished",
    "lifecycle",
    "merge_events",
    "reduce_states",
]
