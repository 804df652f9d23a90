"""Counter increments: what a *set* of newly read records adds to the exporter's counters.

Pure polars, no I/O and no Prometheus. The business rules of the counters live
here; the exporter only adds the returned counts to its totals.

The unit is a set of records that became visible together (one micro-batch, or the
whole history at the first start), applied as if in event-time order (``ts``, then
lifecycle stage, then ``event_id``): the order in which files or lines were read
inside a set never matters. A set is summarised per item by the lifecycle's own
mergeable partial state (``kpi.lifecycle.reduce_states``) plus a few event counts
(``SET_SCHEMA``), so a set of any size is held in memory per item, not per event,
and its increments are a function of the state before it and that summary.

- accepted: an item is counted once, when its first acceptance enters the state,
  with the acceptance winner's product/origin/destination (the lifecycle's tie rule);
- delivered / returned: an item is counted once, when its first delivery / return
  enters the state; ``on_time`` compares the item's delivery time with the promise
  of its acceptance (a delivery exactly at the deadline is on time), ``unknown``
  when the item has no acceptance or no promise;
- delivery attempts: every event that attempts (``Effect.ATTEMPTS``), ``outcome``
  ``delivered`` when it delivers, ``failed`` when it fails; ``first`` for the item's
  earliest attempt (when it had none counted before), ``repeat`` for the others; with
  the acceptance's product/destination;
- transit time: one observation (delivery minus acceptance) per counted delivery
  whose item has an acceptance;
- failures: every event that fails (``Effect.FAILS``) by its reason, counted when read;
- late events: events whose ``ts`` is earlier than the newest ``ts`` known for their
  item before the set (events of one set are in time order by definition).

**Waiting for acceptances.** Attempts, deliveries and returns (the *label events*)
of an item whose acceptance is not known are *held* (kept summarised per item, out
of the counted state) until its acceptance arrives — then they are counted with its
labels — or until the event-time clock (the newest ``ts`` read) passes the item's
newest held event plus the grace: then they are counted with ``unknown`` labels.

- complaints: a complaint id is counted once, when first read, with the labels of
  its current version then (latest ``updated_at``, ties to the later record, as in
  ``latest_complaints``); ``valid`` is ``unknown`` while undecided;
- complaint resolutions: one observation (resolved_at - opened_at of the current
  version) per complaint, the first time its current version is resolved.

Missing label values (unknown product, region, reason) become ``"unknown"``.

Which event types accept, attempt, deliver, fail or return, their stage rank and tie
rules are read from the rules table (``kpi.events``); nothing here names an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from kpi.contract import COMPLAINT_SCHEMA, EVENT_SCHEMA
from kpi.events import (
    Effect,
    event_has,
    event_in,
    event_key,
    events_with_any,
    key_has,
    key_ts,
    key_us,
)
from kpi.kpis.labels import UNKNOWN, flag
from kpi.lifecycle import STATE_SCHEMA, event_partials, reduce_states
from kpi.sources.folder import latest_complaints
from kpi.standards import ServiceStandards, with_promised_by

COUNT: Final = "count"
SECONDS: Final = "seconds"
_US_PER_S: Final = 1_000_000.0
#: Plans here run on one set's frames (thousands to millions of rows, in memory): the
#: in-memory engine runs them about twice as fast as the default one ("auto", which
#: picks the streaming engine for group-bys and joins).
IN_MEMORY: Final = "in-memory"

#: Events whose counters carry the acceptance's labels: held while it is unknown.
LABEL_EVENTS: Final = events_with_any(Effect.ATTEMPTS, Effect.DELIVERS, Effect.RETURNS)
N_DELIVERED: Final = "n_delivered"
N_FAILED: Final = "n_failed"
#: Newest key (``ts`` in microseconds, stage below) of the item's label events.
LABEL_KEY: Final = "label_key"
#: What an item's acceptance sets besides its time and event id (``kpi.lifecycle``).
_ACCEPTANCE_FIELDS: Final = ("product", "origin", "destination", "promised_by_given")

#: A set of events summarised per item: the lifecycle's partial state plus counts.
SET_SCHEMA: Final[dict[str, pl.DataType]] = {
    **STATE_SCHEMA,
    N_DELIVERED: pl.Int64(),
    N_FAILED: pl.Int64(),
    LABEL_KEY: pl.Int64(),
}

#: Complaint state: the current version of every complaint seen, plus whether its
#: resolution has been observed (counted) already.
COMPLAINT_STATE_SCHEMA: Final[dict[str, pl.DataType]] = {
    **COMPLAINT_SCHEMA,
    "resolution_counted": pl.Boolean(),
}

_COUNT_TYPE: Final = pl.Int64()


def _count_schema(*labels: str) -> dict[str, pl.DataType]:
    return {**{label: pl.String() for label in labels}, COUNT: _COUNT_TYPE}


def _obs_schema(*labels: str) -> dict[str, pl.DataType]:
    return {**{label: pl.String() for label in labels}, SECONDS: pl.Float64()}


ACCEPTED_LABELS: Final = ("product", "origin", "destination")
DELIVERED_LABELS: Final = ("product", "destination", "on_time")
RETURNED_LABELS: Final = ("product", "destination")
ATTEMPT_LABELS: Final = ("product", "destination", "outcome", "attempt")
FAILURE_LABELS: Final = ("reason",)
TRANSIT_LABELS: Final = ("product", "destination")
COMPLAINT_LABELS: Final = ("region", "category", "valid")
RESOLUTION_LABELS: Final = ("region", "category")


@dataclass(frozen=True)
class EventIncrements:
    """Counter increments of one set of events (tidy frames, one row per label set)."""

    accepted: pl.DataFrame  # product, origin, destination, count
    delivered: pl.DataFrame  # product, destination, on_time, count
    returned: pl.DataFrame  # product, destination, count
    attempts: pl.DataFrame  # product, destination, outcome, attempt, count
    failures: pl.DataFrame  # reason, count
    transit: pl.DataFrame  # product, destination, seconds (one row per observation)
    late_events: int


@dataclass(frozen=True)
class ComplaintIncrements:
    """Counter increments of one set of complaint records."""

    complaints: pl.DataFrame  # region, category, valid, count
    resolutions: pl.DataFrame  # region, category, seconds (one row per observation)


@dataclass(frozen=True)
class Settlement:
    """A set applied to a state: the recomputed items, what stays held, the increments."""

    touched: pl.Series  # item ids whose state rows ``merged`` replaces
    merged: pl.DataFrame  # STATE_SCHEMA rows of the touched items that have a state
    held: pl.DataFrame  # SET_SCHEMA rows still waiting for an acceptance
    increments: EventIncrements


def _label(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String).fill_null(UNKNOWN)


def _counts(rows: pl.DataFrame, labels: tuple[str, ...]) -> pl.DataFrame:
    """Rows counted per label set, sorted by labels."""
    if rows.is_empty():
        return pl.DataFrame(schema=_count_schema(*labels))
    return (
        rows.group_by(labels)
        .agg(pl.len().cast(_COUNT_TYPE).alias(COUNT))
        .sort(labels)
        .select(*labels, COUNT)
    )


def _observations(rows: pl.DataFrame, labels: tuple[str, ...]) -> pl.DataFrame:
    """Observations sorted by labels and value; the histogram schema even when empty."""
    if rows.is_empty():
        return pl.DataFrame(schema=_obs_schema(*labels))
    return rows.select(*labels, pl.col(SECONDS).cast(pl.Float64)).sort(*labels, SECONDS)


# --- summarising a set --------------------------------------------------------------


def set_rows(events: pl.DataFrame) -> pl.DataFrame:
    """Each event as a one-event set row (``SET_SCHEMA``), not yet reduced."""
    extra = events.select(
        event_has(Effect.ATTEMPTS, Effect.DELIVERS).cast(pl.Int64).alias(N_DELIVERED),
        event_has(Effect.FAILS).cast(pl.Int64).alias(N_FAILED),
        pl.when(event_in(LABEL_EVENTS)).then(event_key()).alias(LABEL_KEY),
    )
    partials = event_partials(events.select(EVENT_SCHEMA.keys()).lazy()).collect(engine=IN_MEMORY)
    return pl.concat([partials, extra], how="horizontal")


def reduce_set(rows: pl.LazyFrame) -> pl.LazyFrame:
    """One ``SET_SCHEMA`` row per item: the lifecycle's reduction plus summed counts."""
    return reduce_states(
        rows,
        pl.col(N_DELIVERED).sum(),
        pl.col(N_FAILED).sum(),
        pl.col(LABEL_KEY).max(),
    ).select(SET_SCHEMA.keys())


def merge_set(summary: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """``summary`` (reduced) with more set rows folded in; only the items they touch are recomputed."""
    if rows.is_empty():
        return summary
    # Rows already reduced (the exporter folds a set's reduced labels into the held
    # ones) are not reduced twice: only items found on both sides are.
    own = _own_reduction(rows)
    if summary.is_empty():
        return rows.select(SET_SCHEMA.keys()) if own else _reduce_set(rows)
    touched = summary.get_column("item_id").is_in(rows.get_column("item_id").unique().implode())
    touched = touched.fill_null(False)
    both = pl.concat([summary.filter(touched), rows.select(SET_SCHEMA.keys())], how="vertical")
    merged = _reduced_again(both) if own else _reduce_set(both)
    return pl.concat([summary.filter(~touched), merged], how="vertical")


def _own_reduction(rows: pl.DataFrame) -> bool:
    """Whether ``reduce_set`` of ``rows`` is ``rows`` (row order aside): one row per item,
    each as a reduction leaves it (no acceptance fields without an acceptance and its
    event id, no facility without a key, counts not null)."""
    fields = pl.any_horizontal(pl.col(c).is_not_null() for c in _ACCEPTANCE_FIELDS)
    unreduced = (
        (pl.col("accepted_at").is_null() & pl.col("accepted_event_id").is_not_null())
        | (pl.col("accepted_event_id").is_null() & fields)
        | (pl.col("last_key").is_null() & pl.col("last_facility").is_not_null())
        | pl.col(N_DELIVERED).is_null()
        | pl.col(N_FAILED).is_null()
    )
    found = rows.select(unreduced.any() | pl.col("item_id").is_duplicated().any()).item()
    return not found


def _reduce_set(rows: pl.DataFrame) -> pl.DataFrame:
    return reduce_set(rows.lazy()).collect(engine=IN_MEMORY)


def _reduced_again(rows: pl.DataFrame) -> pl.DataFrame:
    """``reduce_set`` of reduced ``SET_SCHEMA`` rows: only the items with more than one row
    are recomputed (rows come out in another order)."""
    again = rows.get_column("item_id").is_duplicated()
    if not again.any():
        return rows
    return pl.concat([rows.filter(~again), _reduce_set(rows.filter(again))], how="vertical")


def merge_sets(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Reduced set summaries folded into one; only items found in more than one are recomputed.

    The same as ``merge_set`` applied part after part, in one pass: a set gathered over
    many micro-batches is folded once, not once per batch (which grew with the set).
    """
    parts = [p for p in parts if not p.is_empty()]
    if not parts:
        return empty_set()
    if len(parts) == 1:
        return parts[0]
    return _reduced_again(pl.concat(parts, how="vertical"))


def split_events(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(events counted at once, label events that may wait for an acceptance)."""
    label = event_in(LABEL_EVENTS)
    return events.filter(~label), events.filter(label)


def empty_set() -> pl.DataFrame:
    """A set summary with no items."""
    return pl.DataFrame(schema=SET_SCHEMA)


def failure_counts(events: pl.DataFrame) -> pl.DataFrame:
    """Failed attempts counted by reason (counted when read: no acceptance label)."""
    failed = events.filter(event_has(Effect.FAILS)).select(_label("reason").alias("reason"))
    return _counts(failed, FAILURE_LABELS)


def late_count(events: pl.DataFrame, newest: pl.DataFrame) -> int:
    """Events earlier than their item's newest known ``ts`` (``newest``: item_id, last_key)."""
    if events.is_empty() or newest.is_empty():
        return 0
    # The newest of an item's known keys (an item may be both counted and held): one
    # join probed by the events, not a semi-join of their items first.
    if newest.get_column("item_id").is_duplicated().any():
        newest = newest.group_by("item_id").agg(pl.col("last_key").max())
    rows = events.select("item_id", "ts").join(newest, on="item_id", how="inner")
    return int(rows.select((pl.col("ts") < key_ts("last_key")).sum()).item())


# --- applying a set ---------------------------------------------------------------------


def _attempt_counts(released: pl.DataFrame) -> pl.DataFrame:
    """Attempts of the released label events: the item's earliest one ``first`` when new."""
    first = pl.col(STATE_ATTEMPT).is_not_null() & ~pl.col("_had_attempt")
    first_ok = first & key_has(STATE_ATTEMPT, Effect.DELIVERS)
    first_failed = first & ~first_ok
    per_item = released.select(
        "product",
        "destination",
        first_ok.cast(pl.Int64).alias("first|delivered"),
        first_failed.cast(pl.Int64).alias("first|failed"),
        (pl.col(N_DELIVERED) - first_ok.cast(pl.Int64)).alias("repeat|delivered"),
        (pl.col(N_FAILED) - first_failed.cast(pl.Int64)).alias("repeat|failed"),
    )
    # Summed per label pair first (a few hundred rows), then spread over the four kinds:
    # the sum of the positive counts, as counting each item's positive counts would.
    summed = per_item.group_by("product", "destination").agg(pl.all().clip(0).sum())
    long = (
        summed.unpivot(index=["product", "destination"], variable_name="_k", value_name=COUNT)
        .filter(pl.col(COUNT) > 0)
        .with_columns(
            pl.col("_k").str.split_exact("|", 1).struct.rename_fields(["attempt", "outcome"])
        )
        .unnest("_k")
    )
    if long.is_empty():
        return pl.DataFrame(schema=_count_schema(*ATTEMPT_LABELS))
    return long.select(*ATTEMPT_LABELS, pl.col(COUNT).cast(_COUNT_TYPE)).sort(ATTEMPT_LABELS)


STATE_ATTEMPT: Final = "attempt_key"
#: The state's columns a promise is computed from (``kpi.standards.with_promised_by``).
_PROMISE_INPUTS: Final = ("accepted_at", *_ACCEPTANCE_FIELDS)


def settle(
    before: pl.DataFrame,
    rest: pl.DataFrame,
    labels: pl.DataFrame,
    standards: ServiceStandards,
    clock_us: int | None,
    grace_us: int | None,
) -> Settlement:
    """Apply a set to the counted state ``before``.

    ``rest``: the set's events other than label events, ``labels``: its label events
    together with those held before (both ``SET_SCHEMA``, reduced). Label events of
    items that have an acceptance (before or in ``rest``) are released; of the others,
    those whose newest label event is more than ``grace_us`` behind ``clock_us`` are
    released with unknown labels; the rest stay held. ``grace_us=None`` never holds.
    Failures and late events are counted when read (``failure_counts``, ``late_count``).
    """
    ids = pl.concat([rest.get_column("item_id"), labels.get_column("item_id")])
    in_set = before.get_column("item_id").is_in(ids.implode()).fill_null(False)
    prior = before.filter(in_set)
    accepted = pl.concat(
        [
            prior.filter(pl.col("accepted_at").is_not_null()).get_column("item_id"),
            rest.filter(pl.col("accepted_at").is_not_null()).get_column("item_id"),
        ]
    )
    # The accepted items among the labels' ones, found from the (smaller) labels' side:
    # an ``is_in`` hashes its right-hand list, once per call.
    label_ids = labels.get_column("item_id")
    accepted = accepted.filter(accepted.is_in(label_ids.implode()).fill_null(False))
    known = pl.col("item_id").is_in(accepted.implode())
    if grace_us is None or clock_us is None:
        expired = pl.lit(grace_us is None)
    else:
        expired = key_us(LABEL_KEY) + grace_us < clock_us
    release = labels.select((known | expired).fill_null(False)).to_series()
    released = labels.filter(release)
    held = labels.filter(~release)
    state_cols = list(STATE_SCHEMA)
    merged = reduce_repeated(
        pl.concat(
            [prior.select(state_cols), rest.select(state_cols), released.select(state_cols)],
            how="vertical",
        )
    )
    touched = merged.get_column("item_id")
    inc = _increments(prior, merged, released, standards)
    return Settlement(touched, merged.select(state_cols), held, inc)


def reduce_repeated(states: pl.DataFrame) -> pl.DataFrame:
    """``reduce_states`` of reduced states (``STATE_SCHEMA`` rows): only the items with more
    than one row are recomputed, a reduced row being its own reduction (rows come out
    in another order)."""
    again = states.get_column("item_id").is_duplicated()
    if not again.any():
        return states
    merged = reduce_states(states.filter(again).lazy()).collect(engine=IN_MEMORY)
    return pl.concat([states.filter(~again), merged.select(states.columns)], how="vertical")


def _increments(
    prior: pl.DataFrame, merged: pl.DataFrame, released: pl.DataFrame, standards: ServiceStandards
) -> EventIncrements:
    # New acceptances: merged items with one that had none before (an ``is_in`` of the
    # prior acceptances, not a join of every merged row).
    had_acceptance = prior.filter(pl.col("accepted_at").is_not_null()).get_column("item_id")
    accepted = merged.filter(
        pl.col("accepted_at").is_not_null()
        & ~pl.col("item_id").is_in(had_acceptance.implode()).fill_null(False)
    ).select(*(_label(c).alias(c) for c in ACCEPTED_LABELS))
    # Everything else is about the released label events: only their items' rows are
    # joined (a few of the merged ones).
    rel_ids = pl.col("item_id").is_in(released.get_column("item_id").implode())
    flags = prior.filter(rel_ids).select(
        "item_id",
        pl.col("attempt_key").is_not_null().alias("_had_attempt"),
        pl.col("delivered_at").is_not_null().alias("_had_delivery"),
        pl.col("returned_at").is_not_null().alias("_had_return"),
    )
    had = ("_had_attempt", "_had_delivery", "_had_return")
    lc = (
        merged.filter(rel_ids)
        .select(
            "item_id",
            "accepted_at",
            "delivered_at",
            _label("product").alias("product"),
            _label("destination").alias("destination"),
        )
        .join(flags, on="item_id", how="left")
        .with_columns(pl.col(had).fill_null(False))
    )
    rel = released.select(
        "item_id",
        STATE_ATTEMPT,
        pl.col("delivered_at").alias("_r_delivered"),
        pl.col("returned_at").alias("_r_returned"),
        N_DELIVERED,
        N_FAILED,
    ).join(lc, on="item_id", how="left")
    new_delivery = rel.filter(pl.col("_r_delivered").is_not_null() & ~pl.col("_had_delivery"))
    promised = merged.filter(
        pl.col("item_id").is_in(new_delivery.get_column("item_id").implode()).fill_null(False)
    )
    # Only the promise of the lifecycle (the calendar is its costly part; per item).
    promises = (
        with_promised_by(promised.select("item_id", *_PROMISE_INPUTS).lazy(), standards)
        .select("item_id", "promised_by")
        .collect(engine=IN_MEMORY)
    )
    new_delivery = new_delivery.join(promises, on="item_id", how="left", maintain_order="left")
    judged = pl.col("accepted_at").is_not_null() & pl.col("promised_by").is_not_null()
    delivered = new_delivery.with_columns(
        flag(pl.when(judged).then(pl.col("delivered_at") <= pl.col("promised_by"))).alias("on_time")
    )
    transit = new_delivery.filter(pl.col("accepted_at").is_not_null()).select(
        *TRANSIT_LABELS,
        (
            (pl.col("delivered_at") - pl.col("accepted_at")).dt.total_microseconds() / _US_PER_S
        ).alias(SECONDS),
    )
    returned = rel.filter(pl.col("_r_returned").is_not_null() & ~pl.col("_had_return"))
    return EventIncrements(
        accepted=_counts(accepted, ACCEPTED_LABELS),
        delivered=_counts(delivered, DELIVERED_LABELS),
        returned=_counts(returned, RETURNED_LABELS),
        attempts=_attempt_counts(rel),
        failures=pl.DataFrame(schema=_count_schema(*FAILURE_LABELS)),
        transit=_observations(transit, TRANSIT_LABELS),
        late_events=0,
    )


def event_increments(
    events: pl.DataFrame, before: pl.DataFrame, standards: ServiceStandards
) -> EventIncrements:
    """Increments of one set of new, de-duplicated ``events`` given the state ``before``, holding nothing.

    The whole set's counts: settled ones, failures by reason and late events.
    """
    rest, labels = split_events(events)
    settled = settle(
        before,
        reduce_set(set_rows(rest).lazy()).collect(engine=IN_MEMORY),
        reduce_set(set_rows(labels).lazy()).collect(engine=IN_MEMORY),
        standards,
        None,
        None,
    )
    newest = before.select("item_id", "last_key")
    return add_counts(
        settled.increments,
        failures=failure_counts(events),
        late_events=late_count(events, newest),
    )


def add_counts(inc: EventIncrements, failures: pl.DataFrame, late_events: int) -> EventIncrements:
    """``inc`` with the counts taken when read (failures, late events) added."""
    return EventIncrements(
        accepted=inc.accepted,
        delivered=inc.delivered,
        returned=inc.returned,
        attempts=inc.attempts,
        failures=sum_counts([inc.failures, failures], FAILURE_LABELS),
        transit=inc.transit,
        late_events=inc.late_events + late_events,
    )


def sum_counts(frames: list[pl.DataFrame], labels: tuple[str, ...]) -> pl.DataFrame:
    """Count frames added up per label set."""
    if not frames:
        return pl.DataFrame(schema=_count_schema(*labels))
    frame = pl.concat([f.select(*labels, COUNT) for f in frames], how="vertical")
    if frame.is_empty():
        return pl.DataFrame(schema=_count_schema(*labels))
    return frame.group_by(labels).agg(pl.col(COUNT).sum()).sort(labels).select(*labels, COUNT)


# --- complaints -------------------------------------------------------------------------


def complaint_increments(records: pl.DataFrame, before: pl.DataFrame) -> ComplaintIncrements:
    """Counter increments of a set of complaint ``records`` (read order) given the state ``before``."""
    current, prior = _current(records, before)
    opened = current.filter(~pl.col("_known")).select(
        _label("region").alias("region"),
        _label("category").alias("category"),
        flag(pl.col("valid")).alias("valid"),
    )
    resolved = current.filter(pl.col("_resolves")).select(
        _label("region").alias("region"),
        _label("category").alias("category"),
        ((pl.col("resolved_at") - pl.col("opened_at")).dt.total_microseconds() / _US_PER_S).alias(
            SECONDS
        ),
    )
    del prior
    return ComplaintIncrements(
        complaints=_counts(opened, COMPLAINT_LABELS),
        resolutions=_observations(resolved, RESOLUTION_LABELS),
    )


def _current(records: pl.DataFrame, before: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The current version of each complaint the records touch, flagged; the prior state rows."""
    cols = list(COMPLAINT_SCHEMA)
    touched = records.select("complaint_id").unique()
    prior = before.join(touched, on="complaint_id", how="semi")
    # Prior versions first: at an equal ``updated_at`` the later record (a new one) wins.
    current = latest_complaints(
        pl.concat([prior.select(cols), records.select(cols)], how="vertical").lazy()
    ).collect(engine=IN_MEMORY)
    flags = prior.select(
        "complaint_id",
        pl.lit(True).alias("_known"),
        pl.col("resolution_counted").fill_null(False).alias("_counted"),
    )
    current = (
        current.join(flags, on="complaint_id", how="left")
        .with_columns(pl.col("_known", "_counted").fill_null(False))
        .with_columns(
            (pl.col("resolved_at").is_not_null() & ~pl.col("_counted")).alias("_resolves")
        )
    )
    return current, prior


def empty_complaint_state() -> pl.DataFrame:
    """A complaint state with no complaints."""
    return pl.DataFrame(schema=COMPLAINT_STATE_SCHEMA)


def merge_complaints(state: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """The complaint state after a set of ``records``: current versions and resolution-counted flags."""
    if records.is_empty():
        return state
    current, _ = _current(records, state)
    merged = current.with_columns(
        (pl.col("_counted") | pl.col("_resolves")).alias("resolution_counted")
    ).select(COMPLAINT_STATE_SCHEMA.keys())
    touched = records.select("complaint_id").unique()
    return pl.concat([state.join(touched, on="complaint_id", how="anti"), merged], how="vertical")


def reduce_complaints(records: pl.DataFrame) -> pl.DataFrame:
    """A set's complaint records cut to their current versions (read order kept for ties)."""
    if records.is_empty():
        return records
    return latest_complaints(records.select(COMPLAINT_SCHEMA.keys()).lazy()).collect(
        engine=IN_MEMORY
    )
