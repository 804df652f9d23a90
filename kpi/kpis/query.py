"""Answering a KPI question: pick the families, run their functions, join the results.

``Snapshot`` holds the lifecycle table as of one instant plus the complaints and
facilities; the report, the API and the exporter all ask it, so a number is
computed one way only.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import polars as pl

from kpi.contract import UTC
from kpi.kpis.catalog import FAMILY_DIMS, STAGE_FAMILIES, Family, Kpi, KpiError, resolve
from kpi.kpis.exprs import PERIOD, Window, outer_join
from kpi.kpis.functions import (
    ITEM_COLUMNS,
    CountsOf,
    backlog_kpis,
    complaint_kpis,
    flow_kpis,
    network_kpis,
    open_complaint_kpis,
)
from kpi.kpis.hour_counts import HourCounts
from kpi.kpis.stages import (
    STAGE_EVENTS,  # the scans stage_tables keeps
    StageTables,
    dwell_kpis,
    empty_stage_tables,
    first_mile_kpis,
    item_stage_rows,
    last_mile_kpis,
    leg_kpis,
    stage_tables,
    stage_tables_of_pass,
)
from kpi.lifecycle import collect_state_counted, lifecycle
from kpi.sources.files import file_format
from kpi.sources.folder import DataSet
from kpi.standards import StageTargets
from kpi.state_scan import ScannedState, scan_state

log = logging.getLogger(__name__)

_EPSILON = dt.timedelta(microseconds=1)
#: The lifecycle's dimension columns (``ITEM_COLUMNS``) a prepared snapshot keeps as Enums.
CODED_COLUMNS = ("product", "origin", "destination")
#: Counts that are unknown (not zero) for some groups: thresholds are per facility over
#: all products, undefined when split by product.
NULLABLE_COUNTS = frozenset({"backlog_threshold_items", "backlog_over_threshold"})


@dataclass(frozen=True)
class KpiQuery:
    """A KPI question: which KPIs, grouped by what, over which window and as of when."""

    kpis: tuple[str, ...] | None = None
    by: tuple[str, ...] = ()
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    as_of: dt.datetime | None = None
    granularity: str | None = None
    tz: str = "UTC"
    stall_hours: float = 48.0


@dataclass
class Snapshot:
    """Everything the KPI functions read, as of one instant."""

    lifecycle: pl.DataFrame
    complaints: pl.DataFrame
    facilities: pl.DataFrame
    as_of: dt.datetime
    first_event_at: dt.datetime | None
    version: str = field(default="0")
    #: Event rows left out of the lifecycle (failed validation, or repeated an event id),
    #: when the build counted them (it does for a whole folder, without ``as_of``).
    rejected_events: int | None = None
    #: Event files that could not be read at all (counted where ``rejected_events`` is).
    unreadable_event_files: int = 0
    #: Builds the stage tables (per-scan dwell and leg rows, per-item first and last
    #: mile rows) on the first stage question: the other KPIs never pay for them.
    stage_builder: Callable[[], StageTables] | None = None
    stage_targets: StageTargets = field(default_factory=StageTargets)
    _stages: list[StageTables] = field(default_factory=list, repr=False)
    #: The lifecycle with its item dimensions as Enums (``prepare``); not carried over by
    #: ``dataclasses.replace``, so a snapshot restricted to some rows never reads it.
    _coded: list[pl.DataFrame] = field(default_factory=list, init=False, repr=False)
    #: The flow counts per (dimension, UTC hour) of the coded lifecycle (``build_index``).
    _hour_counts: list[HourCounts] = field(default_factory=list, init=False, repr=False)

    @property
    def stages(self) -> StageTables:
        """The stage tables, built once (empty when the snapshot has no builder)."""
        if not self._stages:
            self._stages.append(
                self.stage_builder() if self.stage_builder else empty_stage_tables()
            )
        return self._stages[0]

    @classmethod
    def from_dataset(
        cls, ds: DataSet, as_of: dt.datetime | None = None, stages: bool = False
    ) -> Snapshot:
        """Build the lifecycle from all events up to ``as_of`` (default: the latest event).

        ``stages`` says stage KPIs will be asked: the fast path then keeps the stage
        scans in its pass over the events (same tables, no second read); without it
        they are read again on the first stage question."""
        # The state and the events' time span together: from the raw files when they
        # prove clean enough for the fast path (same answer), else from the validated rows.
        scanned = (
            scan_state(ds.event_files, as_of, event_ids=False, stage_rows=stages)
            if ds.event_files
            else "no event files"
        )
        rejected: int | None = None
        unreadable = 0
        if isinstance(scanned, ScannedState):
            log.info(
                "lifecycle state from the typed-Parquet fast path%s",
                f" and {scanned.text_files} validated text file(s)" if scanned.text_files else "",
            )
            state, first, last, rejected = (
                scanned.state,
                scanned.first,
                scanned.last,
                scanned.rejected,
            )
            unreadable = scanned.unreadable_files
        else:
            log.info("lifecycle state from the validated rows: %s", scanned)
            state, first, last, used = collect_state_counted(ds.events, as_of)
            if as_of is None and ds.events_read is not None:
                read = ds.events_read()
                rejected, unreadable = read.rows - used, read.unreadable_files
        if as_of is not None and first is None:
            # Nothing up to as-of: the window still starts at the first event (if any).
            first = ds.events.select(pl.col("ts").min()).collect().item()
        effective = as_of or last or dt.datetime.now(dt.UTC)
        table = lifecycle(state.lazy(), ds.standards).collect()
        complaints = ds.complaints.filter(pl.col("opened_at") <= effective).collect()
        clean_parquet = isinstance(scanned, ScannedState) and not scanned.text_files
        rows = scanned.stage_rows if isinstance(scanned, ScannedState) else None
        # The stage KPIs will be asked: their tables are built from the pass's rows in the
        # background from now on (the first questions' other families, run meanwhile,
        # leave a core idle much of the time), and their rows let go once built.
        pending: list[Future[StageTables]] = []
        if rows is not None and clean_parquet:
            pool = ThreadPoolExecutor(1, thread_name_prefix="stage-build")
            pending.append(pool.submit(stage_tables_of_pass, rows, table, ds.standards))
            pool.shutdown(wait=False)  # its one task still runs; the thread then ends
        del rows

        def build_stages() -> StageTables:
            if pending:
                return pending.pop().result()
            # A snapshot may come from any frame of events: repeated event ids (one scan
            # read twice) must not count twice (the lifecycle's rules are idempotent).
            events = (
                _raw_stage_events(ds)
                if clean_parquet
                else ds.events.unique("event_id", keep="first", maintain_order=True)
            )
            if as_of is not None:
                events = events.filter(pl.col("ts") <= as_of)
            return item_stage_rows(stage_tables(events), table, ds.standards)

        return cls(
            table,
            complaints,
            ds.facilities,
            effective,
            first,
            rejected_events=rejected,
            unreadable_event_files=unreadable,
            stage_builder=build_stages,
            stage_targets=ds.standards.stages,
        )

    def prepare(self, index: bool = True) -> None:
        """Keep a copy of the lifecycle whose item dimensions are Enums, for the queries that
        follow: grouping on an Enum costs about half of grouping on text (built once); with
        ``index``, its flow counts per hour too (``build_index``)."""
        if not self._coded:
            self._coded.append(coded_dims(self.lifecycle))
        if index:
            self.build_index()

    def build_index(self) -> None:
        """Count the prepared lifecycle's flow per dimension and UTC hour (once): a flow
        question asking counts and their ratios (``on_time_ratio``...) then adds up hours
        instead of grouping the rows. Until they exist, questions group the rows."""
        if self._coded and not self._hour_counts:
            self._hour_counts.append(HourCounts.build(self._coded[0], CODED_COLUMNS))

    @property
    def coded(self) -> pl.DataFrame | None:
        """The lifecycle with Enum dimensions when ``prepare`` kept it."""
        return self._coded[0] if self._coded else None

    def window(self, q: KpiQuery) -> Window:
        """The query's window with the snapshot's defaults filled in."""
        as_of = self.as_of
        if q.as_of is not None and q.as_of != self.as_of:
            raise KpiError("this snapshot is as of a different instant; rebuild it for that as_of")
        start = q.start if q.start is not None else self.first_event_at
        end = q.end if q.end is not None else as_of + _EPSILON
        if start is not None and end <= start and q.start is None:
            start = end  # `to` (or as-of) before the first event: an empty window, not an error
        elif start is not None and end <= start:
            raise KpiError(f"`from` ({start.isoformat()}) must be before `to` ({end.isoformat()})")
        return Window(
            as_of=as_of,
            start=start,
            end=end,
            granularity=q.granularity,
            tz=q.tz,
            stall_hours=q.stall_hours,
        )

    def query(self, q: KpiQuery) -> pl.DataFrame:
        """The tidy answer: dimension columns, ``period``, then one column per KPI."""
        return compute(self, q)


def _raw_stage_events(ds: DataSet) -> pl.LazyFrame:
    """The stage scans straight from typed Parquet files the fast path proved clean: the
    rows validation keeps are those with an event name, an id, an item, a time and a
    facility (no text needs cleaning, no event id repeats)."""
    frames = [
        pl.scan_parquet(p).select(
            "item_id",
            "event",
            pl.col("ts").dt.convert_time_zone("UTC").cast(UTC),
            "facility",
            "event_id",
        )
        for p in ds.event_files
        if file_format(p) == "parquet"
    ]
    return pl.concat(frames, how="vertical").filter(
        pl.col("event_id").is_not_null() & pl.col("event").is_in(STAGE_EVENTS)
    )


def _stage_frame(snap: Snapshot, family: Family, by: list[str], w: Window) -> pl.LazyFrame:
    targets = snap.stage_targets
    if family is Family.DWELL:
        return dwell_kpis(snap.stages.scans.lazy(), snap.facilities.lazy(), by, w, targets)
    if family is Family.LEG:
        return leg_kpis(snap.stages.scans.lazy(), snap.facilities.lazy(), by, w, targets)
    if family is Family.FIRST_MILE:
        return first_mile_kpis(snap.stages.items.lazy(), by, w)
    return last_mile_kpis(snap.stages.items.lazy(), by, w)


def coded_dims(lifecycle: pl.DataFrame) -> pl.DataFrame:
    """``lifecycle`` with its item dimension columns as Enums of their values (same rows)."""
    return lifecycle.with_columns(
        pl.col(c).cast(pl.Enum(lifecycle[c].drop_nulls().unique().sort()))
        for c in CODED_COLUMNS
        if lifecycle.schema.get(c) == pl.String
    )


def _coded_frame(
    snap: Snapshot, family: Family, by: list[str], w: Window, names: Sequence[str]
) -> pl.LazyFrame:
    """The family's answer, grouped on the Enum dimensions when the snapshot keeps them
    (flow and network group the lifecycle alone): the keys are text again in the answer.

    Not for means: grouped on an Enum, polars adds a group's floats in another order
    (the last bit differs), so a mean is grouped on text as everywhere else."""
    coded = snap.coded
    if (
        coded is None
        or not by
        or family not in (Family.FLOW, Family.NETWORK)
        or any(n.endswith("_mean") for n in names)
    ):
        return _family_frame(snap, family, by, w)
    lc = coded.lazy()
    if family is Family.FLOW:
        frame = flow_kpis(lc, by, w, asked=names, counts_of=_counts_of(snap, lc, by, w))
    else:
        frame = network_kpis(lc, by, w)
    return frame.with_columns(pl.col(by).cast(pl.String))


def _counts_of(snap: Snapshot, lc: pl.LazyFrame, by: list[str], w: Window) -> CountsOf | None:
    """The flow branches' counts from the snapshot's per-hour counts (one dimension at most)."""
    if not snap._hour_counts or len(by) > 1:
        return None
    hours = snap._hour_counts[0]
    dim = (by[0], ITEM_COLUMNS[by[0]]) if by else None
    return lambda time_col, wanted: hours.counts(lc, time_col, dim, w, wanted)


def _family_frame(snap: Snapshot, family: Family, by: list[str], w: Window) -> pl.LazyFrame:
    lc = snap.lifecycle.lazy()
    if family in STAGE_FAMILIES:
        return _stage_frame(snap, family, by, w)
    if family is Family.FLOW:
        return flow_kpis(lc, by, w)
    if family is Family.COMPLAINT:
        return complaint_kpis(snap.complaints.lazy(), lc, by, w)
    if family is Family.BACKLOG:
        return backlog_kpis(lc, snap.facilities.lazy(), by, w)
    if family is Family.NETWORK:
        return network_kpis(lc, by, w)
    return open_complaint_kpis(snap.complaints.lazy(), by, w)


def compute(snap: Snapshot, q: KpiQuery) -> pl.DataFrame:
    """Answer ``q`` from ``snap``; raises ``KpiError`` for questions that cannot be answered."""
    by = list(q.by)
    if len(set(by)) != len(by):
        raise KpiError(f"dimension listed twice in {by}")
    if q.granularity is not None:
        try:
            pl.select(pl.lit(dt.datetime(2000, 1, 1)).dt.replace_time_zone(q.tz))
        except Exception as exc:
            raise KpiError(f"unknown time zone {q.tz!r}") from exc
    kpis: list[Kpi] = resolve(list(q.kpis) if q.kpis else None, by, q.granularity)
    w = snap.window(q)
    families = [f for f in Family if any(k.family is f for k in kpis)]
    keys = [*by, PERIOD] if q.granularity else by
    # Only the asked KPIs' columns: the optimiser then drops the aggregations no one reads
    # (percentiles are the costly ones).
    asked = {f: [k.name for k in kpis if k.family is f] for f in families}
    plans = {f: _coded_frame(snap, f, by, w, asked[f]).select(*keys, *asked[f]) for f in families}
    stage = [f for f in families if f in STAGE_FAMILIES]
    rest = [f for f in families if f not in STAGE_FAMILIES]
    got = dict(zip(rest, pl.collect_all([plans[f] for f in rest]), strict=True))
    # The stage tables are in memory already: the in-memory engine answers them ~3x
    # faster than the streaming one (its percentiles and means over a whole window; its
    # means are also the exactly rounded ones where the streaming sums were 1 ulp off).
    stage_frames = pl.collect_all([plans[f] for f in stage], engine="in-memory")
    got.update(zip(stage, stage_frames, strict=True))
    return join_families([got[f] for f in families], kpis, keys)


def wants_stages(q: KpiQuery) -> bool:
    """Whether answering ``q`` builds the stage tables (False when ``q`` is no question:
    answering it raises the error)."""
    try:
        kpis = resolve(list(q.kpis) if q.kpis else None, list(q.by), q.granularity)
    except KpiError:
        return False
    return any(k.family in STAGE_FAMILIES for k in kpis)


def join_families(
    frames: Sequence[pl.DataFrame], kpis: Sequence[Kpi], keys: list[str]
) -> pl.DataFrame:
    """One tidy frame from per-family answers: full join on the keys, counts zero-filled."""
    out = outer_join(frames, keys)
    # A group missing from one family had nothing to count there: zero, not unknown.
    zero_fill = [k.name for k in kpis if k.dtype == "int" and k.name not in NULLABLE_COUNTS]
    out = out.select(*keys, *(k.name for k in kpis)).with_columns(pl.col(zero_fill).fill_null(0))
    if keys:
        out = out.sort(keys, nulls_last=True)
    return out


def supported_dims() -> dict[str, tuple[str, ...]]:
    """Dimensions per family, for error messages and the catalog endpoint."""
    return {f.value: d for f, d in FAMILY_DIMS.items()}


def _answer_order(out: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    return out.sort(keys, nulls_last=True) if keys else out


def concat_answers(parts: Sequence[pl.DataFrame], q: KpiQuery) -> pl.DataFrame:
    """The answer of ``q`` from its answers over parts of the data that share no group
    (e.g. items split by facility, asked by facility): their rows, in ``compute``'s order."""
    if q.granularity is not None:
        raise KpiError("answers over parts are combined for as-of questions only")
    filled = [p for p in parts if p.height] or list(parts[:1])
    return _answer_order(pl.concat(filled, how="vertical"), list(q.by))


def add_answers(parts: Sequence[pl.DataFrame], q: KpiQuery) -> pl.DataFrame:
    """The answer of ``q`` from its answers over disjoint sets of items: every KPI of
    ``q`` must be an item count (``in_network_items``...), so a group's count is the sum
    of the parts' (a group missing from a part counted nothing there)."""
    kpis = resolve(list(q.kpis) if q.kpis else None, list(q.by), q.granularity)
    not_counts = [k.name for k in kpis if k.unit != "items" or k.dtype != "int"]
    if not_counts or q.granularity is not None:
        raise KpiError(f"answers over parts are added for as-of item counts only, not {not_counts}")
    keys = list(q.by)
    filled = [p for p in parts if p.height] or list(parts[:1])
    both = pl.concat(filled, how="vertical")
    names = [k.name for k in kpis]
    if not keys:
        return both.select(pl.col(names).sum())
    summed = both.group_by(keys).agg(pl.col(names).sum())
    return _answer_order(summed.select(*keys, *names), keys)
