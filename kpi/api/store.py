"""The data store: the loaded data folder, its snapshots and cached answers, kept fresh.

A *generation* is one load of the data folder, named by ``data_version`` (a hash
of the folder's file names, sizes and modification times). Snapshots for other
as-of instants and cached answers belong to their generation, so swapping in a
new generation invalidates all of them at once. The folder is re-checked at most
every ``watch_interval_seconds``; a change is loaded in the background while the
current generation keeps answering (every answer says which version it is from).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import polars as pl

from kpi.api.errors import ApiError
from kpi.api.metrics import ApiMetrics
from kpi.api.service import FamilyFrames
from kpi.api.settings import Settings
from kpi.contract import COMPLAINT_CATEGORIES, FACILITY_TYPES, Kind
from kpi.events import Effect, event_has
from kpi.kpis.catalog import KpiError
from kpi.kpis.exprs import Window
from kpi.kpis.filters import Filter
from kpi.kpis.functions import waiting_items
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.lake import LakeError
from kpi.lake_snapshot import LakeReader, LakeStart, is_lake, version_stamp
from kpi.lake_tables import TablesError
from kpi.sources.folder import FACILITIES_FILE, DataSet, load_data_dir, source_files
from kpi.standards import STANDARDS_FILE

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("kpi.api")

T = TypeVar("T")
Fingerprint = tuple[tuple[str, int, int], ...]
#: Dimension -> known values; filters on values never seen are rejected, not answered empty.
KnownValues = dict[str, frozenset[str]]
_EVENT_ORDER: Final = ("item_id", "ts", "event", "event_id")


def fingerprint(data_dir: Path) -> Fingerprint:
    """(relative path, size, mtime) of every file the loader reads, in a stable order.

    A lake's version is its commit points (manifest, lifecycle table index) and
    reference files: its parts never change once listed.
    """
    if is_lake(data_dir):
        return version_stamp(data_dir)
    paths = [p for kind in Kind for p in source_files(data_dir, kind)]
    paths += [data_dir / name for name in (FACILITIES_FILE, STANDARDS_FILE)]
    out: list[tuple[str, int, int]] = []
    for p in paths:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        out.append((str(p.relative_to(data_dir)), st.st_size, st.st_mtime_ns))
    return tuple(out)


def version_of(fp: Fingerprint) -> str:
    """A short, stable name for a fingerprint: the ``data_version`` of answers."""
    return hashlib.sha256(repr(fp).encode()).hexdigest()[:16]


class Lru(OrderedDict[Hashable, Any]):
    """A small least-recently-used map (only touched from the event loop thread)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_item(self, key: Hashable) -> Any:
        """The value (marking it recently used) or None."""
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Store a value, evicting the least recently used beyond ``size``."""
        if self.size <= 0:
            return
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


@dataclass
class Generation:
    """One load of the data folder and everything derived from it."""

    version: str
    fingerprint: Fingerprint
    dataset: DataSet
    #: A folder's events sorted by item, time, stage (timelines are slices of it);
    #: None for a lake, whose timelines are read from the item's bucket (``reader``).
    events: pl.DataFrame | None
    default: Snapshot
    known: KnownValues
    facility_region: dict[str, str | None]
    loaded_at: dt.datetime
    snapshots: Lru
    results: Lru
    inflight: dict[Hashable, asyncio.Future[Any]] = field(default_factory=dict)
    reader: LakeReader | None = None

    @property
    def lake(self) -> LakeReader | None:
        """The lake version the cluster engine reads (the one this generation loaded)."""
        return self.reader

    def item_events(self, item_id: str, as_of: dt.datetime) -> pl.DataFrame:
        """The item's events at or before ``as_of``, in lifecycle order.

        A folder's: a binary search in the sorted events; a lake's: its bucket only.
        """
        if self.events is None:
            assert self.reader is not None
            try:
                return self.reader.item_events(item_id, as_of)
            except (TablesError, LakeError, pl.exceptions.PolarsError, OSError) as exc:
                raise ApiError(503, f"the lake cannot be read for {item_id!r}: {exc}") from exc
        ids = self.events["item_id"]
        lo = int(ids.search_sorted(item_id, "left"))
        hi = int(ids.search_sorted(item_id, "right"))
        return self.events.slice(lo, hi - lo).filter(pl.col("ts") <= as_of)


def event_values(events: pl.DataFrame) -> dict[str, frozenset[str]]:
    """Values of the event-borne dimensions (acceptances' product, origin, destination;
    every event's facility), as ``kpi.lake_tables`` keeps them for a lake."""
    accepted = events.filter(event_has(Effect.ACCEPTS))
    cols = {"product": accepted, "origin": accepted, "destination": accepted, "facility": events}
    return {c: frozenset(f[c].drop_nulls().unique().to_list()) for c, f in cols.items()}


def _known_values(ds: DataSet, ev: dict[str, frozenset[str]]) -> KnownValues:
    """Every value each dimension takes anywhere in the data (all history)."""
    complaints = ds.complaints.select("region", "product").collect()
    fac = ds.facilities

    def values(*series: pl.Series | frozenset[str]) -> frozenset[str]:
        out: set[str] = set()
        for s in series:
            out |= s if isinstance(s, frozenset) else set(s.drop_nulls().unique().to_list())
        return frozenset(out)

    return {
        "product": values(ev["product"], complaints["product"]),
        "origin": ev["origin"],
        "destination": ev["destination"],
        "region": values(ev["destination"], complaints["region"], fac["region"]),
        "facility": values(ev["facility"], fac["facility"]),
        "facility_type": frozenset(FACILITY_TYPES),
        "category": frozenset(COMPLAINT_CATEGORIES),
        "from_facility": values(ev["facility"], fac["facility"]),
        "to_facility": values(ev["facility"], fac["facility"]),
        "from_region": values(fac["region"]),
        "to_region": values(fac["region"]),
    }


def build_generation(
    settings: Settings, fp: Fingerprint, start: LakeStart | None = None
) -> Generation:
    """Load the folder into memory and build the default snapshot (blocking; run in a thread).

    ``start``: the lake's read begun earlier (``kpi api``), used when it is of version ``fp``.
    """
    if is_lake(settings.data_dir):
        return build_lake_generation(settings, fp, start)
    ds = load_data_dir(settings.data_dir)
    loaded = ds.events.collect()
    # The snapshot reads the in-memory frames, so other as-of instants need no re-read.
    # They keep the reader's row order: float sums (means) then add up in the same order
    # as in `kpi report`, so answers are equal to the last bit.
    mem = DataSet(
        events=loaded.lazy(),
        complaints=ds.complaints.collect().lazy(),
        facilities=ds.facilities,
        standards=ds.standards,
    )
    version = version_of(fp)
    default = Snapshot.from_dataset(mem, settings.as_of)
    default.version = version
    default.prepare(index=False)  # every KPI question asks it; hour counts after the load
    fac = ds.facilities
    return Generation(
        version=version,
        fingerprint=fp,
        dataset=mem,
        events=loaded.sort(list(_EVENT_ORDER)),
        default=default,
        known=_known_values(mem, event_values(loaded)),
        facility_region=dict(zip(fac["facility"].to_list(), fac["region"].to_list(), strict=True)),
        loaded_at=dt.datetime.now(dt.UTC),
        snapshots=Lru(settings.limits.snapshot_cache),
        results=Lru(settings.limits.result_cache),
    )


def build_lake_generation(
    settings: Settings, fp: Fingerprint, start: LakeStart | None = None
) -> Generation:
    """A lake's generation: the default snapshot from its lifecycle tables, no event in memory.

    Drill-downs that need events read them from the lake when asked (``LakeReader``):
    an item's timeline from its bucket, the stage tables from the stage scans.
    """
    version = version_of(fp)
    if start is not None and start.stamp == fp and settings.as_of is None:
        reader, tables, default = start.reader, start.tables, start.default  # prepared
    else:
        reader = LakeReader.open(settings.data_dir)
        tables = reader.tables()
        if settings.as_of is None:
            default = reader.snapshot(tables)
        else:
            default = reader.snapshot_at(settings.as_of)
        default.prepare(index=False)  # every KPI question asks it; hour counts after the load
    default.version = version
    fac = reader.facilities
    ds = reader.dataset()
    return Generation(
        version=version,
        fingerprint=fp,
        dataset=ds,
        events=None,
        default=default,
        known=_known_values(ds, dict(tables.known)),
        facility_region=dict(zip(fac["facility"].to_list(), fac["region"].to_list(), strict=True)),
        loaded_at=dt.datetime.now(dt.UTC),
        snapshots=Lru(settings.limits.snapshot_cache),
        results=Lru(settings.limits.result_cache),
        reader=reader,
    )


#: Seconds the start-up's secondary work waits for the first readiness answer at most.
SETTLE_SECONDS: Final = 3.0


def _count_hours(gen: Generation) -> None:
    """The default snapshot's flow counts per hour (``Snapshot.build_index``), after its load."""
    try:
        gen.default.build_index()
    except Exception:  # an accelerator: without it the questions group the rows
        log.exception("data version %s: the flow counts per hour were not built", gen.version)


class DataStore:
    """Holds the current generation, reloads it when the folder changes, caches answers."""

    def __init__(
        self,
        settings: Settings,
        metrics: ApiMetrics,
        cluster: Client | None = None,
        lake_start: Future[LakeStart] | None = None,
    ) -> None:
        self.settings = settings
        #: The lake's first read, begun before the API was built (taken by the first load).
        self._lake_start = lake_start
        self.metrics = metrics
        #: ``--engine dask``: the client of the cluster the KPI endpoints are computed on.
        self.cluster = cluster
        self.gen: Generation | None = None
        self.error: str | None = None
        self._loading: asyncio.Task[Generation | None] | None = None
        self._last_check = 0.0
        #: Set when ``/readyz`` first answers 200: the start-up's secondary work (the hour
        #: counts, the duty desk) waits for it, so it does not delay that answer.
        self.ready_served = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """Whether a generation is loaded and answering."""
        return self.gen is not None

    @property
    def timeout(self) -> float:
        """Seconds a request may wait for a computation."""
        return self.settings.limits.request_timeout_seconds

    def _build(self, fp: Fingerprint) -> Generation:
        start = time.perf_counter()
        early, self._lake_start = self._lake_start, None
        try:
            lake_start = early.result() if early is not None else None
        except Exception:  # the load reads the lake again and reports what fails
            lake_start = None
        gen = build_generation(self.settings, fp, lake_start)
        self.metrics.load_seconds.set(time.perf_counter() - start)
        return gen

    async def _load(self, fp: Fingerprint) -> Generation | None:
        loop = asyncio.get_running_loop()
        try:
            gen = await loop.run_in_executor(None, self._build, fp)
        except Exception as exc:  # any failure of a load is reported, the old data keeps serving
            log.exception("loading %s failed", self.settings.data_dir)
            self.error = f"loading {self.settings.data_dir} failed: {exc}"
            self.metrics.loads.labels("error").inc()
            return None
        finally:
            self._loading = None
        first = self.gen is None
        self.gen, self.error = gen, None
        # Ready without them: the questions asked meanwhile group the rows (same answers).
        task = asyncio.create_task(self._count_hours(gen, first))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self.metrics.loads.labels("ok").inc()
        self.metrics.loaded_at.set(gen.loaded_at.timestamp())
        self.metrics.items.set(gen.default.lifecycle.height)
        log.info("data version %s loaded (%d items)", gen.version, gen.default.lifecycle.height)
        return gen

    async def settled(self, timeout: float) -> None:
        """Return once ``/readyz`` has answered 200, or after ``timeout`` seconds."""
        # Polled, not an asyncio.Event: a test may run one app in several event loops.
        deadline = time.monotonic() + timeout
        while not self.ready_served and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def _count_hours(self, gen: Generation, first: bool) -> None:
        if first:  # after the first readiness answer, which it would otherwise slow down
            await self.settled(SETTLE_SECONDS)
        await asyncio.get_running_loop().run_in_executor(None, _count_hours, gen)

    def start_load(self, fp: Fingerprint | None = None) -> asyncio.Task[Generation | None]:
        """Start loading the folder in the background (or join the load already running)."""
        if self._loading is None:
            self._last_check = time.monotonic()
            self._loading = asyncio.create_task(
                self._load(fp or fingerprint(self.settings.data_dir))
            )
        return self._loading

    async def reload(self) -> Generation | None:
        """Check the folder now and, when it changed, load it and wait for the load."""
        fp = fingerprint(self.settings.data_dir)
        if self.gen is not None and fp == self.gen.fingerprint and self._loading is None:
            self._last_check = time.monotonic()
            return self.gen
        return await asyncio.shield(self.start_load(fp))

    async def current(self) -> Generation:
        """The generation to answer from; starts a background reload when the folder changed."""
        gen = self.gen
        if gen is None:
            task = self.start_load()
            try:
                gen = await asyncio.wait_for(asyncio.shield(task), self.timeout)
            except TimeoutError:
                raise ApiError(503, "the data is still loading; retry shortly") from None
            if gen is None:
                raise ApiError(503, self.error or "the data could not be loaded")
            return gen
        now = time.monotonic()
        if self._loading is None and now - self._last_check >= self.settings.watch_interval_seconds:
            self._last_check = now
            fp = fingerprint(self.settings.data_dir)
            if fp != gen.fingerprint:
                self.start_load(fp)
        return gen

    def cached(self, gen: Generation, key: Hashable) -> Any:
        """A cached answer page (counted as a hit) or None."""
        hit = gen.results.get_item(key)
        if hit is not None:
            self.metrics.cache.labels("hit").inc()
        return hit

    async def compute(
        self,
        gen: Generation,
        cache: Lru,
        key: Hashable,
        fn: Callable[[], T],
        what: str,
        *,
        count: bool = False,
    ) -> tuple[T, bool]:
        """(``fn()`` run once in a worker thread for all concurrent callers and cached, cache hit)."""
        # A computation that outlives the request timeout keeps running and fills the
        # cache, so a retry finds the answer. `count` marks the answer-level lookup the
        # cache metric counts (one per request).
        hit = cache.get_item(key)
        if hit is not None:
            if count:
                self.metrics.cache.labels("hit").inc()
            return hit, True
        if count:
            self.metrics.cache.labels("miss").inc()
        fut = gen.inflight.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(None, fn)
            gen.inflight[key] = fut

            def done(f: asyncio.Future[Any]) -> None:
                gen.inflight.pop(key, None)
                if not f.cancelled() and f.exception() is None:
                    cache.put(key, f.result())

            fut.add_done_callback(done)
        try:
            value: T = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except TimeoutError:
            raise ApiError(
                504,
                f"{what} took longer than {self.timeout:g} s; it goes on in the background, "
                "retry shortly, or narrow the question (shorter window, fewer dimensions)",
            ) from None
        return value, False

    async def snapshot(self, gen: Generation, as_of: dt.datetime | None) -> Snapshot:
        """The generation's snapshot as of ``as_of`` (the default one when None or equal)."""
        if as_of is None or as_of == gen.default.as_of:
            return gen.default
        key = as_of.astimezone(dt.UTC)

        def build() -> Snapshot:
            if gen.reader is not None:
                snap = gen.reader.snapshot_at(key)
            else:
                snap = Snapshot.from_dataset(gen.dataset, key)
            snap.version = gen.version
            return snap

        snap, _ = await self.compute(gen, gen.snapshots, key, build, "building the snapshot")
        return snap

    async def waiting(self, gen: Generation, snap: Snapshot) -> pl.DataFrame:
        """Items waiting at a facility at the snapshot's as-of, oldest first (cached)."""

        def build() -> pl.DataFrame:
            w = Window(as_of=snap.as_of)
            return (
                waiting_items(snap.lifecycle.lazy(), snap.facilities.lazy(), w)
                .sort(["age_hours", "item_id"], descending=[True, False])
                .collect()
            )

        frame, _ = await self.compute(
            gen, gen.results, ("waiting", snap.as_of), build, "the backlog drill-down"
        )
        return frame

    def engine(self, gen: Generation, snap: Snapshot) -> FamilyFrames | None:
        """The cluster engine for questions about ``snap`` (None: the process answers)."""
        client, lake = self.cluster, gen.lake
        if client is None or lake is None:
            return None
        limit = self.settings.cluster.run_timeout_seconds
        from kpi.cluster import family_frames  # noqa: PLC0415  (numpy: only with a cluster)

        def frames(q: KpiQuery, filters: tuple[Filter, ...]) -> list[pl.DataFrame]:
            try:
                return family_frames(
                    lake, q, client, snap.as_of, snap.first_event_at, filters, limit
                )
            except (KpiError, ApiError):
                raise
            except Exception as exc:  # the cluster, the lake or a task: never a partial answer
                raise ApiError(503, f"the Dask cluster could not answer: {exc}") from exc

        return frames

    async def kpi_snapshot(self, gen: Generation, as_of: dt.datetime | None) -> Snapshot:
        """The snapshot a KPI question is checked against. On the cluster engine, for another
        as-of, only its window's bounds: the first event up to it comes from the cluster."""
        client, lake = self.cluster, gen.lake
        if client is None or lake is None or as_of is None or as_of == gen.default.as_of:
            return await self.snapshot(gen, as_of)
        key = as_of.astimezone(dt.UTC)
        from kpi.cluster import span  # noqa: PLC0415  (numpy: only with a cluster)

        def build() -> Snapshot:
            try:
                first, _ = span(lake, client, key, self.settings.cluster.run_timeout_seconds)
            except Exception as exc:  # as in `engine`: no answer rather than a wrong one
                raise ApiError(503, f"the Dask cluster could not answer: {exc}") from exc
            shell = Snapshot(
                lifecycle=pl.DataFrame(),
                complaints=pl.DataFrame(),
                facilities=lake.facilities,
                as_of=key,
                first_event_at=first,
            )
            shell.version = gen.version
            return shell

        snap, _ = await self.compute(
            gen, gen.snapshots, ("window", key), build, "the window of the snapshot"
        )
        return snap
