"""The per-event rules: one row per event type, read by everything that gives an event meaning.

The vocabulary (``kpi.contract.EVENT_TYPES``, ``UPU_ALIASES``, the fields required on
an event), the lifecycle (``kpi.lifecycle.event_partials``), the report's fast path
(``kpi.state_scan``) and the backlog KPI read this table, so a new event type or alias
is one edit here plus its tests.

A row says:

- ``name`` and its ``aliases`` (UPU EMSEVT codes, matched case-insensitively);
- its **stage rank**: its position in the table, which is lifecycle order. The rank is
  packed below the microsecond timestamp of the lifecycle's keys, and so decides ties
  between events at the same instant: the *last scan* is the latest key (the later
  stage wins a tie, then the greatest facility name); the *first attempt* is the
  earliest key (the earlier stage wins a tie: ``delivery_failed`` before
  ``delivered``). The acceptance is the earliest, then the smallest event id;
- what it **sets** in the item's state and **counts** in the exporter's counters
  (``Effect``), each kept by the rule above;
- the fields it **requires** besides the common ones (a row without them is rejected).

The key helpers (``event_key``, ``key_ts``, ``key_has``) are the one place the stage
rank is packed below the timestamp and read back; the lifecycle, the fast path and
the counter increments (``kpi.kpis.increments``) read events only through
``event_has`` / ``events_with`` and these helpers, never by name.

Ranks are packed into the exporter's checkpointed state: appending a row keeps every
existing rank, inserting one renumbers the rows after it, so a checkpoint written with
the old table must not be read with the new one (``exporters/state.py``'s format).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import polars as pl


class Effect(StrEnum):
    """What an event sets in its item's lifecycle state."""

    #: The acceptance (``accepted_at``, its event id, product, route, given promise):
    #: earliest wins, then the smallest event id.
    ACCEPTS = "accepts"
    #: A delivery attempt (``attempt_key``): the earliest is the first attempt. Every
    #: attempt either ``DELIVERS`` (a successful attempt) or ``FAILS``.
    ATTEMPTS = "attempts"
    #: A failed delivery attempt: counted by its ``reason`` when read.
    FAILS = "fails"
    #: Delivered (``delivered_at``, earliest); the item is finished.
    DELIVERS = "delivers"
    #: Returned to the sender (``returned_at``, earliest); the item is finished.
    RETURNS = "returns"
    #: As an unfinished item's last scan: the item waits at that facility (backlog).
    WAITS = "waits"


@dataclass(frozen=True)
class EventRule:
    """One event type: its name, aliases, effects and required fields."""

    name: str
    effects: frozenset[Effect] = frozenset()
    requires: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


_E = Effect

#: The table, in lifecycle order (the stage rank is the position).
EVENT_RULES: Final = (
    EventRule(
        "accepted",
        frozenset({_E.ACCEPTS}),
        requires=("product", "origin", "destination"),
        aliases=("EMA",),
    ),
    EventRule("arrived", frozenset({_E.WAITS}), aliases=("EMB", "EMD", "EMJ", "EMG")),
    EventRule("departed", aliases=("EMC", "EMF", "EMK")),
    EventRule("out_for_delivery"),
    EventRule(
        "delivery_failed",
        frozenset({_E.ATTEMPTS, _E.FAILS, _E.WAITS}),
        requires=("reason",),
        aliases=("EMH",),
    ),
    EventRule("delivered", frozenset({_E.ATTEMPTS, _E.DELIVERS}), aliases=("EMI",)),
    EventRule("returned", frozenset({_E.RETURNS})),
)

EVENT_TYPES: Final = tuple(rule.name for rule in EVENT_RULES)
#: Stage rank of each event type (lifecycle order).
STAGE: Final = {rule.name: rank for rank, rule in enumerate(EVENT_RULES)}
UPU_ALIASES: Final = {alias: rule.name for rule in EVENT_RULES for alias in rule.aliases}
EVENT_REQUIRED_ON: Final = {rule.name: rule.requires for rule in EVENT_RULES if rule.requires}
#: The event types as a polars Enum: its physical value is the stage rank.
EVENT_ENUM: Final = pl.Enum(EVENT_TYPES)

#: Bits of a key below the microsecond timestamp that hold the stage rank (a multiplier,
#: kept at 8 by the exporter's checkpoint format: at most 8 event types).
RANK_BITS: Final = 8


def check_rules(rules: tuple[EventRule, ...]) -> None:
    """The table's own invariants, checked at import (a bad row fails every test at once)."""
    names = [r.name for r in rules]
    aliases = [a.lower() for r in rules for a in r.aliases]
    if len(set(names)) != len(names) or len(set(aliases)) != len(aliases):
        raise ValueError("event names and aliases must be distinct")
    if set(aliases) & set(names):
        raise ValueError("an alias must not be an event name")
    if len(rules) > RANK_BITS:
        raise ValueError(f"at most {RANK_BITS} event types fit below the timestamp")
    for r in rules:
        attempts, fails = Effect.ATTEMPTS in r.effects, Effect.FAILS in r.effects
        if fails and (not attempts or Effect.DELIVERS in r.effects):
            raise ValueError(f"{r.name}: a failure is an attempt that does not deliver")
        if attempts and not r.effects & {Effect.DELIVERS, Effect.FAILS}:
            raise ValueError(f"{r.name}: an attempt either delivers or fails")


check_rules(EVENT_RULES)


def events_with(*effects: Effect) -> tuple[str, ...]:
    """The event types that have every one of ``effects``, in lifecycle order."""
    return tuple(rule.name for rule in EVENT_RULES if rule.effects.issuperset(effects))


def events_with_any(*effects: Effect) -> tuple[str, ...]:
    """The event types that have at least one of ``effects``, in lifecycle order."""
    return tuple(rule.name for rule in EVENT_RULES if rule.effects & set(effects))


def event_in(names: tuple[str, ...], column: str = "event") -> pl.Expr:
    """Whether the event in ``column`` is one of ``names`` (false for null or unknown)."""
    event = pl.col(column)
    if not names:
        return pl.lit(False)
    # One name compares directly: cheaper than is_in on a hot path of 10 M rows.
    return (event == names[0]) if len(names) == 1 else event.is_in(names)


def event_has(*effects: Effect, column: str = "event") -> pl.Expr:
    """Whether the event in ``column`` has every one of ``effects`` (false for an unknown or null event)."""
    return event_in(events_with(*effects), column)


def stage(column: str = "event") -> pl.Expr:
    """The stage rank of the event in ``column`` (an ``EVENT_ENUM`` or text; null when unknown)."""
    event = pl.col(column)
    return event.cast(EVENT_ENUM, strict=False).to_physical().cast(pl.Int64)


def event_key(column: str = "event", ts: str = "ts") -> pl.Expr:
    """``ts`` in microseconds with the stage rank packed below it: orders ties between
    events at one instant (the later stage is the later key)."""
    return pl.col(ts).dt.epoch("us") * RANK_BITS + stage(column)


def key_us(key: str | pl.Expr) -> pl.Expr:
    """The instant of a packed key, in microseconds."""
    return (pl.col(key) if isinstance(key, str) else key) // RANK_BITS


def key_ts(key: str | pl.Expr) -> pl.Expr:
    """The instant of a packed key, as a UTC timestamp."""
    return key_us(key).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def key_has(key: str, *effects: Effect) -> pl.Expr:
    """Whether the event packed in ``key`` has every one of ``effects`` (null for a null key)."""
    ranks = [STAGE[name] for name in events_with(*effects)]
    return (pl.col(key) % RANK_BITS).is_in(ranks)
