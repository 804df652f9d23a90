"""The whole run: every stage in a fixed order of random draws."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from kpi import contract
from kpi.simulate.bad_rows import Feeds, text_feeds
from kpi.simulate.calendar import build_calendar
from kpi.simulate.columns import gather, promise_series, utc_series
from kpi.simulate.complaints import Outcome, complaint_records, item_outcomes
from kpi.simulate.config import BOOL, F64, SimConfig, epoch_hours
from kpi.simulate.demand import (
    EXPLICIT_PROMISE_SHARE,
    PRODUCTS,
    acceptance_times,
    deadlines,
    item_ids,
)
from kpi.simulate.events import events_frame
from kpi.simulate.facilities import (
    backlog_thresholds,
    facilities_frame,
    nice_threshold,
    peak_presence,
)
from kpi.simulate.incidents import Incidents, incident_schedule
from kpi.simulate.network import build_network
from kpi.simulate.routing import SLOTS, Routes, route_items


@dataclass
class SimResult:
    """Everything a run produces, as polars frames (the writers only serialise these)."""

    events: pl.DataFrame
    complaints: pl.DataFrame
    facilities: pl.DataFrame
    #: Ground truth per item (not written): product, regions, deadline, outcome.
    items: pl.DataFrame
    incidents: Incidents
    config: SimConfig
    feeds: Feeds = field(default_factory=Feeds)


#: Progress callback: (step description, fraction of the run done).
Report = Callable[[str, float], None]


def no_report(_: str, __: float) -> None:
    """A progress callback that shows nothing."""
    return None


def _ground_truth(
    routes: Routes, ids: pl.Series, acc: F64, promise: F64, explicit: BOOL, outcome: Outcome
) -> pl.DataFrame:
    """One row per item: what happened to it, for tests and docs (not written)."""
    return pl.DataFrame(
        {
            "item_id": ids,
            "product": gather(PRODUCTS, routes.product),
            "origin": gather(contract.PROVINCES, routes.origin),
            "destination": gather(contract.PROVINCES, routes.dest),
            "accepted_at": utc_series("accepted_at", acc),
            "promised_by": promise_series("promised_by", promise),
            "explicit_promise": explicit,
            "delivered_at": utc_series("delivered_at", outcome.delivered),
            "returned_at": utc_series("returned_at", outcome.returned),
            "last_seen": utc_series("last_seen", outcome.last_seen),
            "late": np.nan_to_num(outcome.late_h, nan=-1.0) >= 0,
            "stuck": routes.cut < len(SLOTS),
            "failed_attempts": outcome.failed_attempts,
        }
    )


def generate(cfg: SimConfig, report: Report | None = None) -> SimResult:
    """Simulate a run in memory: events, complaints, facilities, ground truth, feeds."""
    say = report or no_report
    items_seq, complaints_seq, feeds_seq = np.random.SeedSequence(cfg.seed).spawn(3)
    rng = np.random.Generator(np.random.PCG64(items_seq))
    net = build_network()
    incidents = incident_schedule(cfg.start, cfg.days)
    start_h = epoch_hours(cfg.start)
    end_h = epoch_hours(cfg.end)
    festival = cfg.scenario == "spring-festival"

    say("sampling acceptances", 0.02)
    acc = acceptance_times(rng, cfg)
    cal = build_calendar(start_h, end_h, festival)

    def slow_hub_threshold(enter: F64, leave: F64) -> float:
        peak = peak_presence(
            np.zeros(len(enter), dtype=np.int64), enter, leave, 1, start_h, cfg.days * 24
        )
        return float(nice_threshold(peak)[0])

    say("routing items", 0.08)
    routes = route_items(rng, net, acc, cal, incidents, festival, slow_hub_threshold)
    promise = deadlines(acc, routes.product, routes.origin, routes.dest)
    explicit = rng.random(cfg.items) < EXPLICIT_PROMISE_SHARE
    ids = item_ids(routes.product, cfg.seed)
    thresholds = backlog_thresholds(net, routes, start_h, cfg.days)

    say("building events", 0.25)
    events = events_frame(routes, ids, promise, explicit, net, start_h, end_h)
    outcome = item_outcomes(routes, promise, end_h)
    say("complaints", 0.4)
    complaints_rng = np.random.Generator(np.random.PCG64(complaints_seq))
    complaints = complaint_records(complaints_rng, routes, ids, promise, outcome, start_h, end_h)
    feeds = Feeds()
    if cfg.bad_rows > 0:
        say("text feeds and bad rows", 0.45)
        feeds_rng = np.random.Generator(np.random.PCG64(feeds_seq))
        feeds = text_feeds(feeds_rng, cfg, events, complaints, ids)
    return SimResult(
        events=events,
        complaints=complaints,
        facilities=facilities_frame(net, thresholds),
        items=_ground_truth(routes, ids, acc, promise, explicit, outcome),
        incidents=incidents,
        config=cfg,
        feeds=feeds,
    )
