"""Routing: every item through the hub-and-spoke network, slot by slot, fully vectorised."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from kpi import contract
from kpi.simulate.calendar import Calendar, next_at, on_ops_day
from kpi.simulate.config import BOOL, F64, I64, epoch_hours, lognormal
from kpi.simulate.demand import (
    LOCAL_SHARE,
    MISSED_LINEHAUL_SHARE,
    MISSORT_SHARE,
    PRODUCT_MIX,
    STUCK_SHARE,
)
from kpi.simulate.incidents import (
    FAILING_OFFICE_FAIL_P,
    INCIDENT_FAILING_OFFICE,
    INCIDENT_ROUTE,
    INCIDENT_SLOW_HUB,
    ROUTE_EXTRA_HOURS,
    SLOW_HUB_CAPACITY_SHARE,
    SLOW_HUB_END_BACKLOG,
    Incidents,
    hub_queue,
)
from kpi.simulate.network import REGION_INFO, WIDE_REGIONS, Network, region_distances

FAILURE_REASONS: Final = ("addressee_absent", "refused", "wrong_address", "office_closed")
_REASON_P: Final = (0.62, 0.12, 0.16, 0.10)
_REASON_P_FAILING: Final = (0.55, 0.05, 0.10, 0.30)
_REFUSED: Final = 1

#: (event, facility role) of each lifecycle slot; slot order is lifecycle order.
SLOTS: Final = (
    ("accepted", "co"),
    ("departed", "co"),
    ("arrived", "hub1"),
    ("departed", "hub1"),
    ("arrived", "hub2"),
    ("departed", "hub2"),
    ("arrived", "do"),
    ("out_for_delivery", "do"),
    ("delivery_failed", "do"),
    ("out_for_delivery", "do"),
    ("delivery_failed", "do"),
    ("out_for_delivery", "do"),
    ("delivery_failed", "do"),
    ("delivered", "do"),
    ("returned", "do"),
)
S_ACC, S_CO_DEP, S_ARR1, S_DEP1, S_ARR2, S_DEP2, S_DO = range(7)
_S_OFD: Final = (7, 9, 11)
S_FAIL: Final = (8, 10, 12)
S_DELIVERED: Final = 13
S_RETURNED: Final = 14
_ROLES: Final = ("co", "hub1", "hub2", "do")
SLOT_ROLE: Final = np.array([_ROLES.index(role) for _, role in SLOTS], dtype=np.int64)
SLOT_EVENT: Final = np.array([contract.EVENT_TYPES.index(e) for e, _ in SLOTS], dtype=np.int64)


def _line_haul(ready: F64, product: I64, same: BOOL, cal: Calendar) -> F64:
    """Departure from the origin hub: express leaves when sorted, others wait for a truck."""
    standard = next_at(ready, cal.trunks_standard)
    economy = next_at(ready, cal.trunks)
    # Within a region standard mail rides the frequent shuttles, like express.
    out: F64 = np.select(
        [product == 0, (product == 1) & same, product == 1], [ready, ready, standard], economy
    )
    return out


@dataclass
class Routes:
    """Per-item route: facilities, slot times (n x slots, NaN = no such event), outcome."""

    product: I64
    origin: I64
    dest: I64
    fac: I64  # (4, n): co, hub1, hub2 (-1 when same region), do
    times: F64  # (n, len(SLOTS))
    reasons: I64  # (n, 3) reason index per attempt, -1 = none
    cut: I64  # last slot index kept for stuck items (len(SLOTS) when not stuck)
    #: Hub-visit times without the slow-hub incident (for threshold calibration).
    hub1_dep_base: F64
    hub2_dep_base: F64


@dataclass(frozen=True)
class _Assignment:
    """Who sends what where: product, regions and the four facilities of each item."""

    product: I64
    origin: I64
    dest: I64
    same: BOOL
    co: I64
    do: I64
    hub1: I64
    hub2: I64  # -1 when origin and destination share a region


@dataclass(frozen=True)
class _Draws:
    """Every random column of the route, drawn up front so the order never depends on data."""

    u_pick: F64
    leg_co: F64
    dwell1: F64
    trunk_noise: F64
    missed: BOOL
    missed_h: F64
    missort: BOOL
    missort_h: F64
    route_extra: F64
    dwell2: F64
    leg_do: F64
    release_jitter: F64
    u_fail: F64  # (n, 3): one column per delivery attempt
    u_reason: F64
    u_return: F64
    after_ofd: F64
    return_h: F64
    stuck: BOOL
    stuck_stage: I64


def _assign(rng: np.random.Generator, net: Network, n: int) -> _Assignment:
    """Products, origins, destinations (28% local) and the facilities on the way."""
    n_regions = len(contract.PROVINCES)
    weights = np.array([REGION_INFO[c][4] for c in contract.PROVINCES])
    dest_weights = weights**0.7  # deliveries follow population more than e-commerce origin
    product = rng.choice(3, size=n, p=PRODUCT_MIX).astype(np.int64)
    origin = rng.choice(n_regions, size=n, p=weights / weights.sum()).astype(np.int64)
    local = rng.random(n) < LOCAL_SHARE
    dest_draw = rng.choice(n_regions, size=n, p=dest_weights / dest_weights.sum()).astype(np.int64)
    dest = np.where(local, origin, dest_draw)
    same = origin == dest
    co = net.co_start[origin] + (rng.random(n) * net.co_count[origin]).astype(np.int64)
    do = net.do_start[dest] + (rng.random(n) * net.do_count[dest]).astype(np.int64)
    hub1 = net.home_pc[co]
    hub2 = np.where(same, -1, net.home_pc[do])
    return _Assignment(product, origin, dest, same, co, do, hub1, hub2)


def _draw(rng: np.random.Generator, n: int, product: I64) -> _Draws:
    """The route's random columns, in their fixed order."""
    return _Draws(
        u_pick=rng.uniform(0.25, 0.75, n),
        leg_co=lognormal(rng, 1.0, 0.4, n),
        dwell1=lognormal(rng, 2.5, 0.5, n),
        trunk_noise=np.exp(rng.standard_normal(n) * np.array([0.2, 0.15, 0.2])[product]),
        missed=rng.random(n) < MISSED_LINEHAUL_SHARE,
        missed_h=rng.uniform(20.0, 48.0, n),
        missort=rng.random(n) < MISSORT_SHARE,
        missort_h=rng.uniform(24.0, 72.0, n),
        route_extra=rng.uniform(*ROUTE_EXTRA_HOURS, n),
        dwell2=lognormal(rng, 2.0, 0.5, n),
        leg_do=lognormal(rng, 1.5, 0.4, n),
        release_jitter=rng.uniform(0.2, 1.0, n),
        u_fail=rng.random((n, 3)),
        u_reason=rng.random((n, 3)),
        u_return=rng.random((n, 3)),
        after_ofd=rng.uniform(0.3, 5.0, (n, 3)),
        return_h=rng.uniform(2.0, 30.0, n),
        stuck=rng.random(n) < STUCK_SHARE,
        stuck_stage=rng.choice(np.array([S_ARR1, S_ARR2, S_DO, _S_OFD[0]]), size=n),
    )


def _trunk_hours(a: _Assignment, d: _Draws) -> F64:
    """Hours between the hubs by product and distance, plus missed line-hauls."""
    dist = region_distances()[a.origin, a.dest]
    express_air = (a.product == 0) & (dist > 700)
    trunk: F64 = np.select(
        [express_air, a.product == 0, a.product == 1],
        [5.0 + dist / 650, 1.5 + dist / 70, 2.0 + dist / 55],
        4.0 + dist / 45,
    ) * d.trunk_noise + np.where(d.missed, d.missed_h, 0.0)
    return trunk


def _route_incident(a: _Assignment, t_dep1: F64, incidents: Incidents | None) -> BOOL:
    """Items on the delayed route while its incident lasts."""
    if incidents is None:
        return np.zeros(len(t_dep1), dtype=np.bool_)
    ro, rd = (contract.PROVINCES.index(r) for r in INCIDENT_ROUTE)
    hit: BOOL = (
        (a.origin == ro)
        & (a.dest == rd)
        & (t_dep1 >= epoch_hours(incidents.route_from))
        & (t_dep1 < epoch_hours(incidents.route_until))
    )
    return hit


def _dwell_hub2(arrived: F64, d: _Draws, cal: Calendar, ops_mult: float) -> F64:
    """Hours at the second hub (longer on the holiday timetable)."""
    on_ops = on_ops_day(np.nan_to_num(arrived), cal)
    out: F64 = (1.0 + d.dwell2) * np.where(on_ops, ops_mult, 1.0)
    return out


def _slow_hub_release(
    a: _Assignment,
    d: _Draws,
    net: Network,
    incidents: Incidents,
    legs: tuple[F64, F64, F64, F64],
    threshold_of: Callable[[F64, F64], float] | None,
) -> tuple[F64, F64]:
    """Earliest departures from the slow hub, as first and as second hub (-inf elsewhere).

    ``legs`` are (arrival at hub 1, departure from hub 1, arrival at hub 2, hours at hub 2)
    without the incident.
    """
    t_arr1, t_dep1, t_arr2, dwell2 = legs
    n = len(t_arr1)
    slow = net.index(INCIDENT_SLOW_HUB)
    at1 = a.hub1 == slow
    at2 = a.hub2 == slow
    # Items reaching the slow hub second came from another region's hub, so every
    # arrival there is known before the queue runs.
    arrivals = np.concatenate((t_arr1[at1], t_arr2[at2]))
    base_leave = np.concatenate((t_dep1[at1], (t_arr2 + dwell2)[at2]))
    threshold = threshold_of(arrivals, base_leave) if threshold_of else 0.0
    release = hub_queue(
        arrivals,
        (
            epoch_hours(incidents.slow_hub_degraded_from),
            epoch_hours(incidents.slow_hub_degraded_until),
        ),
        epoch_hours(incidents.slow_hub_recovering_until),
        SLOW_HUB_CAPACITY_SHARE,
        SLOW_HUB_END_BACKLOG * threshold,
    )
    n1 = int(at1.sum())
    rel1 = np.full(n, -np.inf)
    rel2 = np.full(n, -np.inf)
    rel1[at1] = release[:n1] + d.release_jitter[at1]
    rel2[at2] = release[n1:] + d.release_jitter[at2]
    return rel1, rel2


def _deliver(
    a: _Assignment,
    d: _Draws,
    net: Network,
    cal: Calendar,
    incidents: Incidents | None,
    t_do: F64,
) -> tuple[F64, I64]:
    """Delivery attempts: up to three rounds, then back to the sender.

    Returns the slot times (only the delivery slots filled) and the failure reason of
    each attempt (-1 = none).
    """
    n = len(t_do)
    is_eco = a.product == 2
    p_base = np.array([0.05, 0.07, 0.08])[a.product]
    failing = np.zeros(n, dtype=np.bool_)
    if incidents is not None:
        failing = a.do == net.index(INCIDENT_FAILING_OFFICE)
    reason_cdf = np.cumsum(_REASON_P)
    reason_cdf_failing = np.cumsum(_REASON_P_FAILING)
    times = np.full((n, len(SLOTS)), np.nan)
    reasons = np.full((n, 3), -1, dtype=np.int64)
    active = np.ones(n, dtype=np.bool_)
    earliest = t_do + 0.5
    for k in range(3):  # over attempts, not items
        ofd = np.where(is_eco, next_at(earliest, cal.rounds_economy), next_at(earliest, cal.rounds))
        p = p_base if k == 0 else np.full(n, 0.3)
        cdf_hit = np.zeros(n, dtype=np.bool_)
        if incidents is not None:
            cdf_hit = (
                failing
                & (ofd >= epoch_hours(incidents.failing_office_from))
                & (ofd < epoch_hours(incidents.failing_office_until))
            )
            p = np.where(cdf_hit, FAILING_OFFICE_FAIL_P if k == 0 else 0.5, p)
        fail = active & (d.u_fail[:, k] < p)
        success = active & ~fail
        done = ofd + d.after_ofd[:, k]
        reason = np.where(
            cdf_hit,
            np.searchsorted(reason_cdf_failing, d.u_reason[:, k] * reason_cdf_failing[-1]),
            np.searchsorted(reason_cdf, d.u_reason[:, k] * reason_cdf[-1]),
        )
        times[:, _S_OFD[k]] = np.where(active, ofd, np.nan)
        times[:, S_FAIL[k]] = np.where(fail, done, np.nan)
        reasons[:, k] = np.where(fail, reason, -1)
        times[:, S_DELIVERED] = np.where(success, done, times[:, S_DELIVERED])
        give_up = fail & ((k == 2) | ((reason == _REFUSED) & (d.u_return[:, k] < 0.8)))
        times[:, S_RETURNED] = np.where(give_up, done + d.return_h, times[:, S_RETURNED])
        active = fail & ~give_up
        earliest = done + 10.0  # the next attempt is on a later round, normally next day
    return times, reasons


def route_items(
    rng: np.random.Generator,
    net: Network,
    acc: F64,
    cal: Calendar,
    incidents: Incidents | None,
    festival_ops: bool,
    slow_hub_threshold: Callable[[F64, F64], float] | None = None,
) -> Routes:
    """Route every item through the hub-and-spoke network, fully vectorised."""
    n = len(acc)
    a = _assign(rng, net, n)
    d = _draw(rng, n, a.product)
    wide = np.isin(
        np.arange(len(contract.PROVINCES)),
        [contract.PROVINCES.index(r) for r in WIDE_REGIONS],
    )
    ops_mult = 1.5 if festival_ops else 1.0

    t_co_dep = next_at(acc + d.u_pick, cal.pickups)
    t_arr1 = t_co_dep + (1.0 + d.leg_co) * np.where(wide[a.origin], 2.0, 1.0)
    d1 = (1.5 + d.dwell1) * np.where(on_ops_day(t_arr1, cal), ops_mult, 1.0)
    # A missorted item rides to the wrong hub and back before it continues.
    ready1 = t_arr1 + (d1 + np.where(d.missort, d.missort_h, 0.0))
    t_dep1 = _line_haul(ready1, a.product, a.same, cal)
    hub1_dep_base = t_dep1.copy()
    trunk = _trunk_hours(a, d)
    trunk = trunk + np.where(_route_incident(a, t_dep1, incidents), d.route_extra, 0.0)
    t_arr2 = np.where(a.same, np.nan, t_dep1 + trunk)
    rel2 = np.full(n, -np.inf)
    if incidents is not None:
        legs = (t_arr1, t_dep1, t_arr2, _dwell_hub2(t_arr2, d, cal, ops_mult))
        rel1, rel2 = _slow_hub_release(a, d, net, incidents, legs, slow_hub_threshold)
        t_dep1 = _line_haul(np.maximum(ready1, rel1), a.product, a.same, cal)
        t_arr2 = np.where(a.same, np.nan, t_dep1 + trunk)
    hub2_dep_base = t_arr2 + _dwell_hub2(t_arr2, d, cal, ops_mult)
    t_dep2 = np.where(a.same, np.nan, np.maximum(hub2_dep_base, rel2))
    t_do = np.where(a.same, t_dep1, t_dep2) + (1.0 + d.leg_do) * np.where(wide[a.dest], 2.0, 1.0)

    times, reasons = _deliver(a, d, net, cal, incidents, t_do)
    for slot, column in enumerate((acc, t_co_dep, t_arr1, t_dep1, t_arr2, t_dep2, t_do)):
        times[:, slot] = column
    # Scanners record whole seconds; rounding once here keeps every later use consistent.
    times = np.round(times * 3600.0) / 3600.0
    cut = np.where(d.stuck, d.stuck_stage, len(SLOTS)).astype(np.int64)
    # A "stuck after the second hub" item of a same-region route sticks at its only hub.
    cut = np.where(d.stuck & a.same & (cut == S_ARR2), S_ARR1, cut)
    return Routes(
        product=a.product,
        origin=a.origin,
        dest=a.dest,
        fac=np.stack((a.co, a.hub1, a.hub2, a.do)),
        times=times,
        reasons=reasons,
        cut=cut,
        hub1_dep_base=hub1_dep_base,
        hub2_dep_base=hub2_dep_base,
    )
