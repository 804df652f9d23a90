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
- what it **sets** in the item's state (``Effect``), each kept by the rule above;
- the fields it **requires** besides the common ones (a row without them is rejected).

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
    #: A delivery attempt (``attempt_key``): the earliest is the first attempt.
    ATTEMPTS = "attempts"
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
        frozenset({_E.ATTEMPTS, _E.WAITS}),
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


def events_with(effect: Effect) -> tuple[str, ...]:
    """The event types that have ``effect``, in lifecycle order."""
    return tuple(rule.name for rule in EVENT_RULES if effect in rule.effects)


def event_has(effect: Effect, column: str = "event") -> pl.Expr:
    """Whether the event in ``column`` has ``effect`` (false for an unknown or null event)."""
    names = events_with(effect)
    event = pl.col(column)
    if not names:
        return pl.lit(False)
    # One name compares directly: cheaper than is_in on a hot path of 10 M rows.
    return (event == names[0]) if len(names) == 1 else event.is_in(names)
