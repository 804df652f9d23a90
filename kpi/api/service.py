"""KPI questions for the API: validation, filters, region scope, limits, order.

Filters and a key's region scope are applied to the *input rows* of each KPI
family before the KPI functions run (never by re-aggregating answers, which is
not exact for ratios and percentiles). A dimension maps to a different column per
family, exactly as the KPI functions group by it:

- flow and network KPIs: ``region`` and ``destination`` = the item's destination;
  ``product``, ``origin`` = the item's;
- complaint KPIs: ``region``, ``product``, ``category`` = the complaint's; the
  per-million denominator (accepted items) is restricted by destination and product;
- backlog KPIs: ``facility``, ``facility_type``, ``region`` = the waiting item's
  facility (from ``facilities.csv``), ``product`` = the item's. A product filter
  leaves the facility thresholds undefined, as grouping by product does.

So a filter ``d = x`` gives exactly the rows ``d = x`` of the same question
grouped by ``d`` as well (what ``kpi report --by ...,d`` prints). With no filter
and no scope the answer is ``Snapshot.query`` itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final

import polars as pl

from kpi.api.errors import bad_request, forbidden
from kpi.api.settings import Limits
from kpi.kpis.catalog import ALL_DIMS, STAGE_FAMILIES, Family, Kpi, KpiError, resolve
from kpi.kpis.exprs import PERIOD
from kpi.kpis.filters import Filter, match, restrict_rows, restrict_stages
from kpi.kpis.query import KpiQuery, Snapshot, join_families

_GRANULARITY_SPAN: Final = {
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
    "week": dt.timedelta(days=7),
    "month": dt.timedelta(days=28),
}
#: Dimensions whose values are regions, for a region-scoped key.
REGION_DIMS: Final = ("region", "destination", "from_region", "to_region")
THRESHOLD_KPIS: Final = ("backlog_threshold_items", "backlog_over_threshold")
#: The cluster engine: each asked family's answer (``Family`` order) to a filtered question.
FamilyFrames = Callable[[KpiQuery, tuple[Filter, ...]], list[pl.DataFrame]]


@dataclass(frozen=True)
class OrderBy:
    """Sort the answer by one column."""

    by: str
    desc: bool = False


@dataclass(frozen=True)
class QuerySpec:
    """A KPI question as the API receives it (hashable: it is the cache key)."""

    measures: tuple[str, ...] | None
    dimensions: tuple[str, ...] = ()
    granularity: str | None = None
    tz: str = "UTC"
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    as_of: dt.datetime | None = None
    filters: tuple[Filter, ...] = ()
    order: tuple[OrderBy, ...] = ()

    def kpi_query(self) -> KpiQuery:
        """The engine's question (as_of is carried by the snapshot it is asked of)."""
        return KpiQuery(
            kpis=self.measures,
            by=self.dimensions,
            start=self.start,
            end=self.end,
            granularity=self.granularity,
            tz=self.tz,
        )


@dataclass(frozen=True)
class Plan:
    """A checked question: the KPIs it asks for and every filter it applies (scope included)."""

    spec: QuerySpec
    kpis: tuple[Kpi, ...]
    filters: tuple[Filter, ...]


def check_tz(tz: str) -> None:
    """Reject time zones polars does not know (with the message of the engine)."""
    try:
        pl.select(pl.lit(dt.datetime(2000, 1, 1)).dt.replace_time_zone(tz))
    except Exception as exc:  # polars raises several types for a bad zone name
        raise bad_request(
            f"unknown time zone {tz!r}; use an IANA name such as 'UTC' or 'Asia/Shanghai'"
        ) from exc


def check_filter_values(f: Filter, known: dict[str, frozenset[str]]) -> None:
    """400 for a malformed filter or for values no data has (never a silent empty answer)."""
    if f.op == "equals" and len(f.values) != 1:
        raise bad_request(
            f"filter on {f.dimension!r} with op 'equals' takes exactly one value, got "
            f"{len(f.values)}; use op 'in' for several"
        )
    if not f.values:
        raise bad_request(f"filter on {f.dimension!r} has no values; give at least one")
    if f.op == "not_in":
        return
    unknown = sorted(set(f.values) - known.get(f.dimension, frozenset()))
    if unknown:
        sample = sorted(known.get(f.dimension, frozenset()))[:40]
        raise bad_request(
            f"unknown {f.dimension} value(s) {unknown}: no data has them; known values: {sample}"
        )


def _check_scope(f: Filter, scope: frozenset[str], facility_region: dict[str, str | None]) -> None:
    if f.op == "not_in":
        return
    if f.dimension in REGION_DIMS:
        outside = sorted(set(f.values) - scope)
        if outside:
            raise forbidden(
                f"your key is limited to regions {sorted(scope)}; {f.dimension} {outside} "
                "is outside them"
            )
    if f.dimension in ("facility", "from_facility", "to_facility"):
        outside = sorted(v for v in f.values if facility_region.get(v) not in scope)
        if outside:
            raise forbidden(
                f"your key is limited to regions {sorted(scope)}; {f.dimension} {outside} is not"
                " in them"
            )


def plan(
    spec: QuerySpec,
    snap: Snapshot,
    limits: Limits,
    known: dict[str, frozenset[str]],
    facility_region: dict[str, str | None],
    scope: frozenset[str] | None,
) -> Plan:
    """Check a question before computing it; raises ``ApiError`` (4xx) with what to change."""
    try:
        kpis = resolve(
            list(spec.measures) if spec.measures else None, list(spec.dimensions), spec.granularity
        )
    except KpiError as exc:
        raise bad_request(str(exc)) from exc
    if len(set(spec.dimensions)) != len(spec.dimensions):
        raise bad_request(f"dimension listed twice in {list(spec.dimensions)}")
    check_tz(spec.tz)
    for f in spec.filters:
        if f.dimension not in ALL_DIMS:
            raise bad_request(f"unknown filter dimension {f.dimension!r}; known: {list(ALL_DIMS)}")
        bad = [k.name for k in kpis if f.dimension not in k.dimensions]
        if bad:
            raise bad_request(
                f"cannot filter on {f.dimension!r}: KPI(s) {bad} do not have that dimension; "
                "ask for those KPIs separately or drop the filter"
            )
        if scope is not None:
            _check_scope(f, scope, facility_region)
        check_filter_values(f, known)
    try:
        w = snap.window(spec.kpi_query())
    except KpiError as exc:
        raise bad_request(str(exc)) from exc
    if any(k.windowed for k in kpis) and w.start is not None and w.end is not None:
        span = w.end - w.start
        if span > dt.timedelta(days=limits.max_range_days):
            raise bad_request(
                f"the window {w.start.isoformat()} .. {w.end.isoformat()} spans "
                f"{span.total_seconds() / 86400:.1f} days, more than the limit of "
                f"{limits.max_range_days:g}; set `from`/`to` closer together"
            )
        if spec.granularity is not None:
            periods = span / _GRANULARITY_SPAN[spec.granularity]
            if periods > limits.max_groups:
                raise bad_request(
                    f"about {periods:.0f} {spec.granularity} periods exceed the limit of "
                    f"{limits.max_groups} groups; use a coarser granularity or a shorter window"
                )
    filters = spec.filters
    if scope is not None:
        # The key's regions apply whatever else is asked: an implicit region filter.
        filters = (*filters, Filter("region", "in", tuple(sorted(scope))))
    return Plan(spec, tuple(kpis), filters)


def restrict(snap: Snapshot, family: Family, filters: Sequence[Filter]) -> Snapshot:
    """The snapshot with only the input rows the filters keep, for one KPI family."""
    if family in STAGE_FAMILIES:
        tables = restrict_stages(snap.stages, snap.facilities, filters)
        return replace(snap, stage_builder=lambda: tables, _stages=[tables])
    lc, comp, fac = restrict_rows(family, snap.lifecycle, snap.complaints, snap.facilities, filters)
    return replace(snap, lifecycle=lc, complaints=comp, facilities=fac)


def _sliced(frame: pl.DataFrame, plan_: Plan, family: Family) -> pl.DataFrame:
    """A product slice of the backlog is a split by product: thresholds (per facility, all
    products) are undefined and idle facilities get no zero rows, as when grouping by it."""
    if family is not Family.BACKLOG or not any(f.dimension == "product" for f in plan_.filters):
        return frame
    frame = frame.with_columns(
        pl.lit(None, pl.Int64).alias(k) for k in THRESHOLD_KPIS if k in frame.columns
    )
    if plan_.spec.dimensions:
        frame = frame.filter(pl.col("backlog_items") > 0)
    return frame


def _family_answer(snap: Snapshot, plan_: Plan, family: Family) -> pl.DataFrame:
    names = tuple(k.name for k in plan_.kpis if k.family is family)
    # A product slice needs backlog_items to drop the idle facilities (see _sliced).
    needed = family is Family.BACKLOG and "backlog_items" not in names
    asked = (*names, "backlog_items") if needed else names
    return restrict(snap, family, plan_.filters).query(replace(plan_.spec.kpi_query(), kpis=asked))


def answer(
    snap: Snapshot, plan_: Plan, limits: Limits, cluster: FamilyFrames | None = None
) -> pl.DataFrame:
    """The whole answer (before paging), ordered; blocking, run in a worker thread.

    ``cluster``: the families' answers come from the cluster engine (``kpi api --engine
    dask``), computed bucket by bucket with the same filters on the same input rows.
    """
    spec = plan_.spec
    try:
        if cluster is not None:
            out = _joined(cluster(spec.kpi_query(), plan_.filters), plan_)
        elif plan_.filters:
            out = _filtered(snap, plan_)
        else:
            out = snap.query(spec.kpi_query())
    except KpiError as exc:
        raise bad_request(str(exc)) from exc
    if out.height > limits.max_groups:
        raise bad_request(
            f"the answer has {out.height} groups, more than the limit of {limits.max_groups}; "
            "add filters, drop a dimension or use a coarser granularity"
        )
    if spec.order:
        missing = [o.by for o in spec.order if o.by not in out.columns]
        if missing:
            raise bad_request(
                f"cannot order by {missing}: not a column of the answer {out.columns}"
            )
        out = out.sort(
            [o.by for o in spec.order],
            descending=[o.desc for o in spec.order],
            nulls_last=True,
            maintain_order=True,
        )
    return out


def _filtered(snap: Snapshot, plan_: Plan) -> pl.DataFrame:
    """Per-family answers on restricted inputs, joined the way ``Snapshot.query`` joins them."""
    return _joined([_family_answer(snap, plan_, fam) for fam in _families(plan_)], plan_)


def _families(plan_: Plan) -> list[Family]:
    """The families of the asked KPIs, in ``Family`` order (the engines' order)."""
    return [f for f in Family if any(k.family is f for k in plan_.kpis)]


def _joined(frames: Sequence[pl.DataFrame], plan_: Plan) -> pl.DataFrame:
    """Per-family answers (in ``Family`` order) joined as ``Snapshot.query`` joins them."""
    spec = plan_.spec
    keys = [*spec.dimensions, PERIOD] if spec.granularity else list(spec.dimensions)
    frames = [_sliced(f, plan_, fam) for f, fam in zip(frames, _families(plan_), strict=True)]
    out = join_families(frames, plan_.kpis, keys)
    # Filters on grouped dimensions also hold on the answer's rows (a no-op when exact).
    for f in plan_.filters:
        if f.dimension in spec.dimensions:
            out = out.filter(match(f.dimension, f))
    if keys:
        out = out.sort(keys, nulls_last=True)
    return out
