"""A naive, independent reference of the lifecycle and every KPI, in plain Python.

No polars here: dicts, loops, ``datetime`` and ``zoneinfo`` only, written from the
spec (the KPI-engine issue and the catalog descriptions), not from the engine's
code. The property tests compare the engine with it on random data.

Inputs are rows as plain dicts (the keys of the pinned schemas):
- events: ``event_id, item_id, event, ts, facility, product, origin, destination,
  promised_by, reason``;
- complaints: ``complaint_id, opened_at, category, item_id, region, product, valid,
  resolved_at, updated_at`` (several versions per id allowed);
- facilities: ``facility, name, type, region, backlog_threshold``.

Timestamps are timezone-aware ``datetime`` objects.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import stage_reference

Row = dict[str, Any]
Key = tuple[Any, ...]

UTC = dt.UTC
#: Lifecycle order (ties between events at the same instant: a later stage wins "last").
STAGES = (
    "accepted",
    "arrived",
    "departed",
    "out_for_delivery",
    "delivery_failed",
    "delivered",
    "returned",
)
STAGE = {name: i for i, name in enumerate(STAGES)}
US = dt.timedelta(microseconds=1)
HOUR = dt.timedelta(hours=1)
COMPLAINT_DEADLINE = dt.timedelta(days=7)
AGE_BANDS = (
    ("lt_6h", dt.timedelta(hours=6)),
    ("6h_12h", dt.timedelta(hours=12)),
    ("12h_24h", dt.timedelta(hours=24)),
    ("24h_48h", dt.timedelta(hours=48)),
    ("ge_48h", None),
)

FLOW = (
    "accepted_items",
    "delivered_items",
    "delivered_without_acceptance",
    "returned_items",
    "on_time_items",
    "on_time_ratio",
    "late_1d_items",
    "late_2d_items",
    "late_3d_plus_items",
    "transit_hours_mean",
    "transit_hours_p50",
    "transit_hours_p90",
    "within_72h_ratio",
    "first_attempt_ratio",
)
COMPLAINT = (
    "complaints",
    "valid_complaints",
    "complaints_per_million",
    "resolved_within_7d_ratio",
)
BACKLOG = (
    "backlog_items",
    "backlog_oldest_hours",
    *(f"backlog_items_{band}" for band, _ in AGE_BANDS),
    "backlog_threshold_items",
    "backlog_over_threshold",
)
NETWORK = ("in_network_items", "overdue_items", "stalled_items")
OPEN_COMPLAINT = ("open_complaints", "overdue_complaints")
FAMILIES: dict[str, tuple[str, ...]] = {
    "flow": FLOW,
    "complaint": COMPLAINT,
    "backlog": BACKLOG,
    "network": NETWORK,
    "open_complaint": OPEN_COMPLAINT,
    **stage_reference.FAMILIES,
}
FAMILY_OF = {kpi: fam for fam, names in FAMILIES.items() for kpi in names}
FLOAT_KPIS = frozenset(
    {
        "on_time_ratio",
        "transit_hours_mean",
        "transit_hours_p50",
        "transit_hours_p90",
        "within_72h_ratio",
        "first_attempt_ratio",
        "complaints_per_million",
        "resolved_within_7d_ratio",
        "backlog_oldest_hours",
        *stage_reference.FLOAT_KPIS,
    }
)
#: Counts that stay unknown (null) rather than zero when a group has nothing to count.
NULLABLE_COUNTS = frozenset({"backlog_threshold_items", "backlog_over_threshold"})


def utc(text: str) -> dt.datetime:
    """``"2027-01-11T17:00"`` (or with seconds/fraction/offset) as an aware UTC datetime."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def hours(delta: dt.timedelta) -> float:
    """A duration in hours, from its exact number of microseconds."""
    return (delta // US) / 3_600_000_000


# --- service standards -------------------------------------------------------


def _counts(day: dt.date, working_days: bool, holidays: frozenset[dt.date]) -> bool:
    """Whether ``day`` counts towards the allowed days (no holiday; no Sunday if working days)."""
    if day in holidays:
        return False
    return not (working_days and day.isoweekday() == 7)


def deadline(
    accepted_at: dt.datetime,
    product: str | None,
    origin: str | None,
    destination: str | None,
    standards: Any,
) -> dt.datetime | None:
    """The promised deadline from the service standard (None for unknown products).

    The day of deposit is the local date of acceptance, or the next day after the
    cut-off; a deposit on a non-counting day moves to the next counting day; the
    deadline is the last microsecond of the n-th counting day after it (local time).
    """
    std = standards.products.get(product) if product is not None else None
    if std is None:
        return None
    tz = ZoneInfo(std.time_zone or standards.time_zone)
    holidays = frozenset(std.holidays)
    local = accepted_at.astimezone(tz)
    day = local.date()
    if local.time() > std.cutoff:
        day += dt.timedelta(days=1)
    while not _counts(day, std.working_days, holidays):
        day += dt.timedelta(days=1)
    if destination is not None and destination in standards.remote_regions:
        allowed = std.days.remote
    elif origin is not None and origin == destination:
        allowed = std.days.same_region
    else:
        allowed = std.days.other_region
    for _ in range(allowed):
        day += dt.timedelta(days=1)
        while not _counts(day, std.working_days, holidays):
            day += dt.timedelta(days=1)
    next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return next_midnight.astimezone(UTC) - US


# --- lifecycle ---------------------------------------------------------------


def lifecycle(
    events: Iterable[Row], standards: Any, as_of: dt.datetime | None = None
) -> dict[str, Row]:
    """One row per item (keyed by item id) from its events with ``ts <= as_of``."""
    by_item: dict[str, list[Row]] = defaultdict(list)
    for e in events:
        if as_of is None or e["ts"] <= as_of:
            by_item[e["item_id"]].append(e)
    out: dict[str, Row] = {}
    for item, evs in by_item.items():
        accepted = [e for e in evs if e["event"] == "accepted"]
        acc = min(accepted, key=lambda e: (e["ts"], e["event_id"])) if accepted else None
        attempts = [e for e in evs if e["event"] in ("delivered", "delivery_failed")]
        first = min(attempts, key=lambda e: (e["ts"], STAGE[e["event"]])) if attempts else None
        delivered = [e["ts"] for e in evs if e["event"] == "delivered"]
        returned = [e["ts"] for e in evs if e["event"] == "returned"]
        last = max(evs, key=lambda e: (e["ts"], STAGE[e["event"]], e["facility"]))
        promised = None
        if acc is not None:
            promised = acc.get("promised_by") or deadline(
                acc["ts"], acc.get("product"), acc.get("origin"), acc.get("destination"), standards
            )
        row: Row = {
            "item_id": item,
            "accepted_at": acc["ts"] if acc else None,
            "product": acc.get("product") if acc else None,
            "origin": acc.get("origin") if acc else None,
            "destination": acc.get("destination") if acc else None,
            "promised_by": promised,
            "first_attempt_at": first["ts"] if first else None,
            "first_attempt_outcome": first["event"] if first else None,
            "delivered_at": min(delivered) if delivered else None,
            "returned_at": min(returned) if returned else None,
            "last_event": last["event"],
            "last_event_at": last["ts"],
            "last_facility": last["facility"],
        }
        row["finished"] = row["delivered_at"] is not None or row["returned_at"] is not None
        out[item] = row
    return out


# --- KPI helpers ---------------------------------------------------------------


def bucket(ts: dt.datetime, granularity: str, tz: str) -> dt.datetime:
    """Start of the hour/day/week (Monday)/month holding ``ts`` in local time of ``tz``.

    Returned in UTC: two local times that differ only by ``fold`` (the repeated hour
    when clocks go back) compare equal in Python, so local values make bad keys.
    """
    local = ts.astimezone(ZoneInfo(tz))
    if granularity == "hour":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.date()
    if granularity == "week":
        day -= dt.timedelta(days=day.weekday())
    elif granularity == "month":
        day = day.replace(day=1)
    elif granularity != "day":
        raise ValueError(granularity)
    return dt.datetime.combine(day, dt.time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between order statistics (numpy's default method)."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def div(num: float, den: float) -> float | None:
    """num / den, or None when the denominator is zero."""
    return num / den if den else None


ITEM_DIM_FIELDS = {
    "product": "product",
    "origin": "origin",
    "destination": "destination",
    "region": "destination",
}


class Question:
    """The window of a KPI question and how to key its rows."""

    def __init__(
        self,
        by: Sequence[str],
        as_of: dt.datetime,
        start: dt.datetime | None,
        end: dt.datetime | None,
        granularity: str | None,
        tz: str,
        stall_hours: float,
    ) -> None:
        self.by = list(by)
        self.as_of = as_of
        self.start = start
        self.end = end
        self.granularity = granularity
        self.tz = tz
        self.stall = dt.timedelta(hours=stall_hours)

    def in_window(self, ts: dt.datetime | None) -> bool:
        if ts is None or ts > self.as_of:
            return False
        if self.start is not None and ts < self.start:
            return False
        return not (self.end is not None and ts >= self.end)

    def key(self, dims: dict[str, Any], ts: dt.datetime | None = None) -> Key:
        """Dimension values (and the time bucket of ``ts`` when bucketing)."""
        values = [dims[d] for d in self.by]
        if self.granularity is not None:
            assert ts is not None
            values.append(bucket(ts, self.granularity, self.tz))
        return tuple(values)


def _item_dims(item: Row) -> dict[str, Any]:
    return {d: item[f] for d, f in ITEM_DIM_FIELDS.items()}


# --- families ------------------------------------------------------------------


def flow(items: Iterable[Row], q: Question) -> dict[Key, Row]:
    """Window KPIs of item flow."""
    acc: dict[Key, int] = defaultdict(int)
    ret: dict[Key, int] = defaultdict(int)
    delivered: dict[Key, list[Row]] = defaultdict(list)
    first_ok: dict[Key, int] = defaultdict(int)
    first_n: dict[Key, int] = defaultdict(int)
    for it in items:
        dims = _item_dims(it)
        if q.in_window(it["accepted_at"]):
            acc[q.key(dims, it["accepted_at"])] += 1
        if q.in_window(it["returned_at"]):
            ret[q.key(dims, it["returned_at"])] += 1
        if q.in_window(it["delivered_at"]):
            delivered[q.key(dims, it["delivered_at"])].append(it)
        if q.in_window(it["first_attempt_at"]):
            k = q.key(dims, it["first_attempt_at"])
            first_n[k] += 1
            first_ok[k] += it["first_attempt_outcome"] == "delivered"
    keys = set(acc) | set(ret) | set(delivered) | set(first_n)
    if not q.by and q.granularity is None:
        keys.add(())
    out: dict[Key, Row] = {}
    for k in keys:
        dels = delivered.get(k, [])
        with_acc = [it for it in dels if it["accepted_at"] is not None]
        judged = [it for it in with_acc if it["promised_by"] is not None]
        late = [it["delivered_at"] - it["promised_by"] for it in judged]
        day = dt.timedelta(days=1)
        transit = [it["delivered_at"] - it["accepted_at"] for it in with_acc]
        transit_h = [hours(t) for t in transit]
        on_time = sum(1 for d in late if d <= dt.timedelta(0))
        out[k] = {
            "accepted_items": acc.get(k, 0),
            "delivered_items": len(dels),
            "delivered_without_acceptance": len(dels) - len(with_acc),
            "returned_items": ret.get(k, 0),
            "on_time_items": on_time,
            "on_time_ratio": div(on_time, len(judged)),
            "late_1d_items": sum(1 for d in late if dt.timedelta(0) < d <= day),
            "late_2d_items": sum(1 for d in late if day < d <= 2 * day),
            "late_3d_plus_items": sum(1 for d in late if d > 2 * day),
            "transit_hours_mean": math.fsum(transit_h) / len(transit_h) if transit_h else None,
            "transit_hours_p50": quantile(transit_h, 0.5),
            "transit_hours_p90": quantile(transit_h, 0.9),
            "within_72h_ratio": div(
                sum(1 for t in transit if t <= dt.timedelta(hours=72)), len(transit)
            ),
            "first_attempt_ratio": div(first_ok.get(k, 0), first_n.get(k, 0)),
        }
    return out


def complaint(complaints: Iterable[Row], items: Iterable[Row], q: Question) -> dict[Key, Row]:
    """Window KPIs of complaints; the per-million rate divides by items accepted in the window."""
    groups: dict[Key, list[Row]] = defaultdict(list)
    for c in complaints:
        if q.in_window(c["opened_at"]):
            groups[q.key(c, c["opened_at"])].append(c)
    if not q.by and q.granularity is None:
        groups.setdefault((), [])
    item_dims = [d for d in q.by if d in ("region", "product")]
    accepted: dict[Key, int] = defaultdict(int)
    for it in items:
        if q.in_window(it["accepted_at"]):
            dims = _item_dims(it)
            k: list[Any] = [dims[d] for d in item_dims]
            if q.granularity is not None:
                k.append(bucket(it["accepted_at"], q.granularity, q.tz))
            accepted[tuple(k)] += 1
    out: dict[Key, Row] = {}
    for key, rows in groups.items():
        sub = [key[q.by.index(d)] for d in item_dims]
        if q.granularity is not None:
            sub.append(key[-1])
        n_acc = accepted.get(tuple(sub), 0)
        due = [c for c in rows if c["opened_at"] + COMPLAINT_DEADLINE <= q.as_of]
        in_time = [
            c
            for c in due
            if c["resolved_at"] is not None
            and c["resolved_at"] <= q.as_of
            and c["resolved_at"] - c["opened_at"] <= COMPLAINT_DEADLINE
        ]
        out[key] = {
            "complaints": len(rows),
            "valid_complaints": sum(1 for c in rows if c["valid"] is True),
            "complaints_per_million": len(rows) * 1_000_000 / n_acc if n_acc else None,
            "resolved_within_7d_ratio": div(len(in_time), len(due)),
        }
    return out


def backlog(items: Iterable[Row], facilities: Sequence[Row], q: Question) -> dict[Key, Row]:
    """As-of backlog: items whose last scan (unfinished) is `arrived`/`delivery_failed`."""
    fac_by_id = {f["facility"]: f for f in facilities}
    waiting_at: dict[str, int] = defaultdict(int)
    groups: dict[Key, list[dt.timedelta]] = defaultdict(list)
    for it in items:
        if it["finished"] or it["last_event"] not in ("arrived", "delivery_failed"):
            continue
        fac = fac_by_id.get(it["last_facility"], {})
        dims = {
            "facility": it["last_facility"],
            "facility_type": fac.get("type"),
            "region": fac.get("region"),
            "product": it["product"],
        }
        waiting_at[it["last_facility"]] += 1
        groups[q.key(dims)].append(q.as_of - it["last_event_at"])
    if not q.by:
        groups.setdefault((), [])
    out: dict[Key, Row] = {}
    for k, ages in groups.items():
        row: Row = {
            "backlog_items": len(ages),
            "backlog_oldest_hours": hours(max(ages)) if ages else None,
            "backlog_threshold_items": None,
            "backlog_over_threshold": None if "product" in q.by else 0,
        }
        lower = dt.timedelta(0)
        for band, upper in AGE_BANDS:
            row[f"backlog_items_{band}"] = sum(
                1 for a in ages if a >= lower and (upper is None or a < upper)
            )
            lower = upper or lower
        out[k] = row
    if "product" in q.by:
        return out
    # Thresholds: every known facility, its whole backlog against its own threshold.
    for f in facilities:
        k = q.key({"facility": f["facility"], "facility_type": f["type"], "region": f["region"]})
        row = out.setdefault(
            k,
            {
                "backlog_items": 0,
                "backlog_oldest_hours": None,
                **{f"backlog_items_{band}": 0 for band, _ in AGE_BANDS},
                "backlog_threshold_items": None,
                "backlog_over_threshold": 0,
            },
        )
        threshold = f["backlog_threshold"]
        if threshold is not None:
            row["backlog_threshold_items"] = (row["backlog_threshold_items"] or 0) + threshold
            row["backlog_over_threshold"] += int(waiting_at.get(f["facility"], 0) > threshold)
    return out


def network(items: Iterable[Row], q: Question) -> dict[Key, Row]:
    """As-of counts of unfinished, overdue and stalled items."""
    out: dict[Key, Row] = {}
    if not q.by:
        out[()] = {"in_network_items": 0, "overdue_items": 0, "stalled_items": 0}
    for it in items:
        if it["finished"]:
            continue
        row = out.setdefault(
            q.key(_item_dims(it)), {"in_network_items": 0, "overdue_items": 0, "stalled_items": 0}
        )
        row["in_network_items"] += 1
        row["overdue_items"] += it["promised_by"] is not None and it["promised_by"] < q.as_of
        row["stalled_items"] += q.as_of - it["last_event_at"] > q.stall
    return out


def open_complaint(complaints: Iterable[Row], q: Question) -> dict[Key, Row]:
    """As-of counts of open complaints and of those open more than 7 days."""
    out: dict[Key, Row] = {}
    if not q.by:
        out[()] = {"open_complaints": 0, "overdue_complaints": 0}
    for c in complaints:
        if c["opened_at"] > q.as_of:
            continue
        if c["resolved_at"] is not None and c["resolved_at"] <= q.as_of:
            continue
        row = out.setdefault(q.key(c), {"open_complaints": 0, "overdue_complaints": 0})
        row["open_complaints"] += 1
        row["overdue_complaints"] += q.as_of - c["opened_at"] > COMPLAINT_DEADLINE
    return out


# --- the whole question ----------------------------------------------------------


def latest_versions(complaints: Iterable[Row]) -> list[Row]:
    """One row per complaint id: the latest ``updated_at`` (missing = oldest), ties: last read."""
    best: dict[str, tuple[tuple[bool, dt.datetime | None, int], Row]] = {}
    for i, c in enumerate(complaints):
        upd = c.get("updated_at")
        rank = (upd is not None, upd, i) if upd is not None else (False, None, i)
        cur = best.get(c["complaint_id"])
        if cur is None or _newer(rank, cur[0]):
            best[c["complaint_id"]] = (rank, c)
    return [row for _, row in best.values()]


def _newer(
    a: tuple[bool, dt.datetime | None, int], b: tuple[bool, dt.datetime | None, int]
) -> bool:
    if a[0] != b[0]:
        return a[0]
    if a[0] and a[1] != b[1]:
        assert a[1] is not None and b[1] is not None
        return a[1] > b[1]
    return a[2] > b[2]


def kpis(
    events: Sequence[Row],
    complaints: Sequence[Row],
    facilities: Sequence[Row],
    standards: Any,
    names: Sequence[str],
    by: Sequence[str] = (),
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    as_of: dt.datetime | None = None,
    granularity: str | None = None,
    tz: str = "UTC",
    stall_hours: float = 48.0,
) -> dict[Key, Row]:
    """Every requested KPI per group (dimension values in ``by`` order, then the period).

    Defaults like the engine's snapshot: as-of = the latest event, window from the
    first event to just after as-of. A group appears when any requested family has
    something for it; counts missing for a group are 0, other values None.
    """
    all_ts = [e["ts"] for e in events]
    if as_of is None:
        as_of = max(all_ts) if all_ts else dt.datetime.now(UTC)
    if start is None and all_ts:
        start = min(all_ts)
    if end is None:
        end = as_of + US
    q = Question(by, as_of, start, end, granularity, tz, stall_hours)
    items = list(lifecycle(events, standards, as_of).values())
    comps = [c for c in latest_versions(complaints) if c["opened_at"] <= as_of]
    families = {FAMILY_OF[n] for n in names}
    results: list[dict[Key, Row]] = []
    if "flow" in families:
        results.append(flow(items, q))
    if "complaint" in families:
        results.append(complaint(comps, items, q))
    if "backlog" in families:
        results.append(backlog(items, facilities, q))
    if "network" in families:
        results.append(network(items, q))
    if "open_complaint" in families:
        results.append(open_complaint(comps, q))
    by_id = {it["item_id"]: it for it in items}
    results += stage_reference.families(events, by_id, facilities, standards, q, families)
    keys = set().union(*results)
    out: dict[Key, Row] = {}
    for k in keys:
        merged: Row = {}
        for res in results:
            merged.update(res.get(k, {}))
        out[k] = {
            n: merged.get(n, None if n in FLOAT_KPIS or n in NULLABLE_COUNTS else 0) for n in names
        }
    return out
