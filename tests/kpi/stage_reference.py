"""A naive reference of the stage KPIs (dwell, legs, first and last mile), plain Python.

Written from the catalog's definitions, per item and per scan, with no polars: each
departure looks back over its item's arrivals, each arrival over its item's
departures. ``reference.kpis`` calls ``families`` for the stage families.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

Row = dict[str, Any]
Key = tuple[Any, ...]
US = dt.timedelta(microseconds=1)
STAGE = {
    name: i
    for i, name in enumerate(
        (
            "accepted",
            "arrived",
            "departed",
            "out_for_delivery",
            "delivery_failed",
            "delivered",
            "returned",
        )
    )
}

DWELL = (
    "handled_items",
    "departures_without_arrival",
    "dwell_hours_mean",
    "dwell_hours_p50",
    "dwell_hours_p90",
    "dwell_within_target_ratio",
)
LEG = ("leg_items", "leg_hours_mean", "leg_hours_p50", "leg_hours_p90", "leg_within_target_ratio")
FIRST_MILE = ("first_mile_hours_p50", "first_mile_hours_p90", "dispatched_same_day_ratio")
LAST_MILE = ("last_mile_hours_p50", "last_mile_hours_p90")
FAMILIES = {"dwell": DWELL, "leg": LEG, "first_mile": FIRST_MILE, "last_mile": LAST_MILE}
FLOAT_KPIS = frozenset(
    n
    for names in FAMILIES.values()
    for n in names
    if not n.endswith("_items") and "without" not in n
)


def hours(delta: dt.timedelta) -> float:
    return (delta // US) / 3_600_000_000


def quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _stats(prefix: str, values: list[float], mean: bool = True) -> Row:
    out: Row = {
        f"{prefix}_hours_p50": quantile(values, 0.5),
        f"{prefix}_hours_p90": quantile(values, 0.9),
    }
    if mean:
        out[f"{prefix}_hours_mean"] = math.fsum(values) / len(values) if values else None
    return out


def distinct_events(events: Iterable[Row], as_of: dt.datetime) -> dict[str, list[Row]]:
    """Events by item: the first row of each event id, with ``ts <= as_of``."""
    seen: set[str] = set()
    by_item: dict[str, list[Row]] = defaultdict(list)
    for e in events:
        if e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        if e["ts"] <= as_of:
            by_item[e["item_id"]].append(e)
    return by_item


def dwells(evs: list[Row]) -> list[tuple[Row, dt.timedelta | None]]:
    """Every departure with its dwell (None without an arrival there at or before it)."""
    out = []
    for d in evs:
        if d["event"] != "departed":
            continue
        arrivals = [
            a["ts"]
            for a in evs
            if a["event"] == "arrived" and a["facility"] == d["facility"] and a["ts"] <= d["ts"]
        ]
        out.append((d, d["ts"] - max(arrivals) if arrivals else None))
    return out


def legs(evs: list[Row]) -> list[tuple[Row, Row]]:
    """Every (departure, arrival) leg: an arrival and the latest earlier departure elsewhere."""
    out = []
    for a in evs:
        if a["event"] != "arrived":
            continue
        deps = [
            d
            for d in evs
            if d["event"] == "departed" and d["facility"] != a["facility"] and d["ts"] < a["ts"]
        ]
        if deps:
            out.append((max(deps, key=lambda d: (d["ts"], d["facility"])), a))
    return out


def dispatch_by(
    accepted_at: dt.datetime, product: str | None, standards: Any
) -> dt.datetime | None:
    """The last instant of the deposit day (local date, the next day after the cut-off)."""
    std = standards.products.get(product) if product is not None else None
    if std is None:
        return None
    tz = ZoneInfo(std.time_zone or standards.time_zone)
    local = accepted_at.astimezone(tz)
    day = local.date() + dt.timedelta(days=1 if local.time() > std.cutoff else 0)
    return (
        dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz).astimezone(dt.UTC)
        - US
    )


def _dwell(
    by_item: dict[str, list[Row]], fac: dict[str, Row], standards: Any, q: Any
) -> dict[Key, Row]:
    targets = standards.stages
    groups: dict[Key, list[tuple[Row, dt.timedelta | None]]] = defaultdict(list)
    for evs in by_item.values():
        for d, dwell in dwells(evs):
            if q.in_window(d["ts"]):
                f = fac.get(d["facility"], {})
                dims = {
                    "facility": d["facility"],
                    "facility_type": f.get("type"),
                    "region": f.get("region"),
                }
                groups[q.key(dims, d["ts"])].append((d, dwell))
    if not q.by and q.granularity is None:
        groups.setdefault((), [])
    res: dict[Key, Row] = {}
    for k, rows in groups.items():
        timed = [(d, w) for d, w in rows if w is not None]
        judged = [
            (w, targets.dwell_target(fac.get(d["facility"], {}).get("type"))) for d, w in timed
        ]
        judged = [(w, t) for w, t in judged if t is not None]
        ok = sum(1 for w, t in judged if w <= dt.timedelta(hours=t))
        res[k] = {
            "handled_items": len(rows),
            "departures_without_arrival": len(rows) - len(timed),
            **_stats("dwell", [hours(w) for _, w in timed]),
            "dwell_within_target_ratio": ok / len(judged) if judged else None,
        }
    return res


def _leg(
    by_item: dict[str, list[Row]], fac: dict[str, Row], standards: Any, q: Any
) -> dict[Key, Row]:
    targets = standards.stages
    lgroups: dict[Key, list[dt.timedelta]] = defaultdict(list)
    for evs in by_item.values():
        for d, a in legs(evs):
            if q.in_window(a["ts"]):
                dims = {
                    "from_facility": d["facility"],
                    "to_facility": a["facility"],
                    "from_region": fac.get(d["facility"], {}).get("region"),
                    "to_region": fac.get(a["facility"], {}).get("region"),
                }
                lgroups[q.key(dims, a["ts"])].append(a["ts"] - d["ts"])
    if not q.by and q.granularity is None:
        lgroups.setdefault((), [])
    target = targets.leg_target()
    return {
        k: {
            "leg_items": len(ds),
            **_stats("leg", [hours(x) for x in ds]),
            "leg_within_target_ratio": (
                sum(1 for x in ds if x <= dt.timedelta(hours=target)) / len(ds)
                if target is not None and ds
                else None
            ),
        }
        for k, ds in lgroups.items()
    }


def _first_mile(
    by_item: dict[str, list[Row]], items: dict[str, Row], standards: Any, q: Any
) -> dict[Key, Row]:
    timed_g: dict[Key, list[float]] = defaultdict(list)
    due: dict[Key, int] = defaultdict(int)
    same: dict[Key, int] = defaultdict(int)
    keys: set[Key] = set()
    for item, evs in by_item.items():
        it = items.get(item)
        acc = [e["ts"] for e in evs if e["event"] == "accepted"]
        if not acc or it is None:
            continue
        accepted_at = min(acc)
        deps = [e["ts"] for e in evs if e["event"] == "departed" and e["ts"] >= accepted_at]
        first = min(deps) if deps else None
        dims = {"origin": it["origin"], "product": it["product"]}
        if first is not None and q.in_window(first):
            k = q.key(dims, first)
            keys.add(k)
            timed_g[k].append(hours(first - accepted_at))
        if q.in_window(accepted_at):
            k = q.key(dims, accepted_at)
            keys.add(k)
            by = dispatch_by(accepted_at, it["product"], standards)
            if by is not None and by <= q.as_of:
                due[k] += 1
                same[k] += first is not None and first <= by
    if not q.by and q.granularity is None:
        keys.add(())
    return {
        k: {
            **_stats("first_mile", timed_g.get(k, []), mean=False),
            "dispatched_same_day_ratio": same[k] / due[k] if due.get(k) else None,
        }
        for k in keys
    }


def _last_mile(by_item: dict[str, list[Row]], items: dict[str, Row], q: Any) -> dict[Key, Row]:
    lm: dict[Key, list[float]] = defaultdict(list)
    for item, evs in by_item.items():
        delivered = [e["ts"] for e in evs if e["event"] == "delivered"]
        if not delivered:
            continue
        at = min(delivered)
        arrivals = [e for e in evs if e["event"] == "arrived" and e["ts"] <= at]
        if not arrivals or not q.in_window(at):
            continue
        last = max(arrivals, key=lambda e: (e["ts"], e["facility"]))
        it = items.get(item, {})
        dims = {
            "destination": it.get("destination"),
            "facility": last["facility"],
            "product": it.get("product"),
        }
        lm[q.key(dims, at)].append(hours(at - last["ts"]))
    if not q.by and q.granularity is None:
        lm.setdefault((), [])
    return {k: _stats("last_mile", v, mean=False) for k, v in lm.items()}


def families(
    events: Sequence[Row],
    items: dict[str, Row],
    facilities: Sequence[Row],
    standards: Any,
    q: Any,
    wanted: set[str],
) -> list[dict[Key, Row]]:
    """The stage families asked for (``wanted``), each as ``{key: {kpi: value}}``."""
    by_item = distinct_events(events, q.as_of)
    fac = {f["facility"]: f for f in facilities}
    out: list[dict[Key, Row]] = []
    if "dwell" in wanted:
        out.append(_dwell(by_item, fac, standards, q))
    if "leg" in wanted:
        out.append(_leg(by_item, fac, standards, q))
    if "first_mile" in wanted:
        out.append(_first_mile(by_item, items, standards, q))
    if "last_mile" in wanted:
        out.append(_last_mile(by_item, items, q))
    return out
