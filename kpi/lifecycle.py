"""Item lifecycle: one row per item, an accumulating snapshot of its events.

Every event is first turned into a *partial state* (a lifecycle row that knows
only that event); ``reduce_states`` combines partial states of the same item with
min/max rules that are associative, commutative and idempotent. Building from all
events and merging batch after batch therefore give the same table, whatever the
order of the batches and however often an event is repeated.

Tie rules (deterministic, so the merge order never matters):
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
from kpi.standards import ServiceStandards, promised_by_expr

_RANK_BITS: Final = 8  # event rank is packed below the microsecond timestamp
_ATTEMPTS: Final = ("delivered", "delivery_failed")

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


def _stage() -> pl.Expr:
    return pl.col("event").to_physical().cast(pl.Int64)


def _event_key() -> pl.Expr:
    """``ts`` in microseconds with the lifecycle stage packed below it (orders ties)."""
    return pl.col("ts").dt.epoch("us") * _RANK_BITS + _stage()


def _key_ts(key: str) -> pl.Expr:
    return (pl.col(key) // _RANK_BITS).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _key_event(key: str) -> pl.Expr:
    names = dict(enumerate(EVENT_TYPES))
    return pl.col(key).mod(_RANK_BITS).replace_strict(names, default=None, return_dtype=EventType)


def event_partials(events: pl.LazyFrame) -> pl.LazyFrame:
    """Each event as a one-event lifecycle state (``STATE_SCHEMA``)."""
    ev = pl.col("event")
    accepted = ev == "accepted"
    return events.select(
        pl.col("item_id"),
        pl.when(accepted).then(pl.col("ts")).alias("accepted_at"),
        pl.when(accepted).then(pl.col("event_id")).alias("accepted_event_id"),
        *(pl.when(accepted).then(pl.col(c)).alias(c) for c in ("product", "origin", "destination")),
        pl.when(accepted).then(pl.col("promised_by")).alias("promised_by_given"),
        pl.when(ev.is_in(_ATTEMPTS)).then(_event_key()).alias("attempt_key"),
        pl.when(ev == "delivered").then(pl.col("ts")).alias("delivered_at"),
        pl.when(ev == "returned").then(pl.col("ts")).alias("returned_at"),
        _event_key().alias("last_key"),
        pl.col("facility").alias("last_facility"),
    )


def reduce_states(states: pl.LazyFrame) -> pl.LazyFrame:
    """Combine partial states of the same item into one row per item."""
    acc = pl.col("accepted_at")
    first_acc = acc == acc.min()
    winner_id = pl.col("accepted_event_id").filter(first_acc).min()
    winner = first_acc & (pl.col("accepted_event_id") == winner_id)
    last = pl.col("last_key") == pl.col("last_key").max()
    return states.group_by("item_id").agg(
        acc.min(),
        winner_id.alias("accepted_event_id"),
        *(
            pl.col(c).filter(winner).first()
            for c in ("product", "origin", "destination", "promised_by_given")
        ),
        pl.col("attempt_key").min(),
        pl.col("delivered_at").min(),
        pl.col("returned_at").min(),
        pl.col("last_key").max(),
        pl.col("last_facility").filter(last).max(),
    )


def empty_state() -> pl.DataFrame:
    """A state with no items."""
    return pl.DataFrame(schema=STATE_SCHEMA)


def build_state(events: pl.LazyFrame, as_of: dt.datetime | None = None) -> pl.LazyFrame:
    """The state of every item from its events with ``ts <= as_of`` (all events when None)."""
    if as_of is not None:
        events = events.filter(pl.col("ts") <= as_of)
    return reduce_states(event_partials(events)).select(STATE_SCHEMA.keys())


def merge_events(state: pl.DataFrame, events: pl.LazyFrame) -> pl.DataFrame:
    """The state after applying a batch of events; only the items it touches are recomputed."""
    partials = event_partials(events).collect()
    if partials.is_empty():
        return state
    touched = partials.select("item_id").unique()
    affected = state.join(touched, on="item_id", how="semi")
    rest = state.join(touched, on="item_id", how="anti")
    merged = reduce_states(pl.concat([affected, partials], how="vertical").lazy()).select(
        STATE_SCHEMA.keys()
    )
    return pl.concat([rest, merged.collect()], how="vertical")


def lifecycle(state: pl.LazyFrame, standards: ServiceStandards) -> pl.LazyFrame:
    """The lifecycle table (``LIFECYCLE_SCHEMA``) from a state: decoded keys and the promise."""
    return state.select(
        pl.col("item_id"),
        pl.col("accepted_at"),
        pl.col("product"),
        pl.col("origin"),
        pl.col("destination"),
        promised_by_expr(standards),
        _key_ts("attempt_key").alias("first_attempt_at"),
        _key_event("attempt_key").alias("first_attempt_outcome"),
        pl.col("delivered_at"),
        pl.col("returned_at"),
        _key_event("last_key").alias("last_event"),
        _key_ts("last_key").alias("last_event_at"),
        pl.col("last_facility"),
        (pl.col("delivered_at").is_not_null() | pl.col("returned_at").is_not_null()).alias(
            "finished"
        ),
    )


def build_lifecycle(
    events: pl.LazyFrame, standards: ServiceStandards, as_of: dt.datetime | None = None
) -> pl.LazyFrame:
    """Lifecycle table of every item from its events up to ``as_of``."""
    return lifecycle(build_state(events, as_of), standards)


__all__ = [
    "LIFECYCLE_SCHEMA",
    "STATE_SCHEMA",
    "build_lifecycle",
    "build_state",
    "empty_state",
    "event_partials",
    "lifecycle",
    "merge_events",
    "reduce_states",
]
