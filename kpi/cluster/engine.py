"""``report``: a KPI question over a lake, one task per bucket on a Dask cluster.

A bucket holds every event of its items (``kpi.lake``), so each task builds its
bucket's lifecycle (and stage tables) and runs the single-process KPI functions on it
(``kpi.cluster.partials``); one more task reads the complaints. The partials combine
exactly (``kpi.cluster.combine``). Every part the manifest lists must be there and
readable: a missing or corrupt part is an error, never a smaller answer.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from kpi.cluster.combine import combine
from kpi.cluster.connect import ClusterError
from kpi.cluster.partials import (
    SPECS,
    Ask,
    Part,
    Span,
    bucket_partial,
    bucket_span,
    complaints_partial,
    empty_partial,
)
from kpi.cluster.ranks import (
    SHIFTS,
    TOTAL,
    Selection,
    light_partial,
    narrow,
    narrow_partial,
)
from kpi.kpis.catalog import Family, KpiError, resolve
from kpi.kpis.exprs import PERIOD
from kpi.kpis.filters import Filter
from kpi.kpis.query import KpiQuery, Snapshot, join_families
from kpi.lake import LakeError, LakeVersion, Manifest

if TYPE_CHECKING:
    from distributed import Client, Future

#: Seconds a run may take once connected, by default (``kpi report --timeout``).
RUN_TIMEOUT: Final = 3600.0
#: Families read from the complaints (one task), not from the buckets.
COMPLAINT_FAMILIES: Final = frozenset({Family.COMPLAINT, Family.OPEN_COMPLAINT})


def _check(q: KpiQuery) -> None:
    """The questions the single-process engine refuses, refused the same way."""
    if len(set(q.by)) != len(q.by):
        raise KpiError(f"dimension listed twice in {list(q.by)}")
    if q.granularity is not None:
        try:
            pl.select(pl.lit(dt.datetime(2000, 1, 1)).dt.replace_time_zone(q.tz))
        except Exception as exc:
            raise KpiError(f"unknown time zone {q.tz!r}") from exc


def _check_parts(lake: Path, manifest: Manifest) -> None:
    """Every part ``manifest`` lists is present (else ``LakeError``)."""
    missing = [p for p in manifest.parts if not (lake / p).exists()]
    if missing:
        buckets = sorted({p.split("bucket=", 1)[1].split("/", 1)[0] for p in missing})
        raise LakeError(
            f"{lake}: {len(missing)} part(s) listed in the manifest are missing"
            f" (bucket(s) {', '.join(buckets)}; first: {missing[0]}): refusing a partial answer"
        )
    if manifest.complaints is not None and not (lake / manifest.complaints).exists():
        raise LakeError(f"{lake}: the complaints part {manifest.complaints} is missing")


def _buckets(version: LakeVersion) -> list[tuple[int, list[str]]]:
    """(bucket, its part files) of every bucket with parts, every listed part present."""
    _check_parts(version.lake, version.manifest)
    parts = version.manifest.bucket_parts(version.lake)
    return [(b, [str(p) for p in files]) for b, files in parts.items() if files]


@dataclass(frozen=True)
class Run:
    """One cluster run and its deadline: every wait of the run takes its time from it."""

    client: Client
    timeout: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        """Seconds left before the deadline (a little above zero once it passed)."""
        return max(self.start + self.timeout - time.monotonic(), 0.001)

    def expired(self, pending: Sequence[str]) -> ClusterError:
        """The error of a run past its deadline, naming what it still waited for."""
        shown = ", ".join(pending[:8]) + (", …" if len(pending) > 8 else "")
        return ClusterError(
            f"the cluster run took longer than {self.timeout:g} s (the run's timeout):"
            f" {len(pending)} task(s) still pending ({shown}); no answer"
        )


def _gather(run: Run, labelled: Sequence[tuple[str, Future[Any]]]) -> list[Any]:
    """Every task's result, fetched as each finishes and then released, so a worker holds
    one bucket's work at a time, not its finished partials until the last task ends. On
    the first error, or past the run's deadline, the remaining tasks are cancelled and an
    error raised: no answer."""
    from distributed import as_completed  # noqa: PLC0415  (lazy: distributed)

    client = run.client
    futures = [f for _, f in labelled]
    fetched: set[str] = set()
    out: list[Any] = []
    try:
        for future in as_completed(futures, loop=client.loop, timeout=run.left()):  # type: ignore[no-untyped-call]
            out.append(future.result(timeout=run.left()))
            fetched.add(future.key)
            future.release()
    except TimeoutError as exc:  # as_completed's or result's: the deadline passed
        client.cancel(futures)  # type: ignore[no-untyped-call]
        raise run.expired([name for name, f in labelled if f.key not in fetched]) from exc
    except BaseException:
        client.cancel(futures)  # type: ignore[no-untyped-call]
        raise
    return out


def _span(
    run: Run, version: LakeVersion, as_of: dt.datetime | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    submit = run.client.submit
    labelled = [
        (f"span of bucket {b:02d}", submit(bucket_span, files, b, as_of, pure=False))
        for b, files in _buckets(version)
    ]
    spans: list[Span] = _gather(run, labelled)
    firsts = [s[0] for s in spans if s[0] is not None]
    lasts = [s[1] for s in spans if s[1] is not None]
    first = min(firsts) if firsts else None
    if as_of is not None and first is None:  # nothing up to as-of: the first event at all
        first = min((s[2] for s in spans if s[2] is not None), default=None)
    return first, max(lasts) if lasts else None


def span(
    version: LakeVersion,
    client: Client,
    as_of: dt.datetime | None,
    timeout: float = RUN_TIMEOUT,
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(first, last) event instants as the single-process snapshot defines them, bucket by
    bucket on the cluster (the client reads no event)."""
    return _span(Run(client, timeout), version, as_of)


def _scatter(run: Run, data: list[Any]) -> list[Future[Any]]:
    """``data`` on every worker once (tasks then refer to it), within the deadline."""
    try:
        futures: list[Future[Any]] = run.client.scatter(data, broadcast=True, timeout=run.left())  # type: ignore[no-untyped-call]
    except TimeoutError as exc:
        raise run.expired(["sending the question to every worker"]) from exc
    return futures


def family_frames(
    version: LakeVersion,
    q: KpiQuery,
    client: Client,
    as_of: dt.datetime | None = None,
    first: dt.datetime | None = None,
    filters: tuple[Filter, ...] = (),
    timeout: float = RUN_TIMEOUT,
) -> list[pl.DataFrame]:
    """Each asked family's answer (in ``Family`` order, hidden columns included) to ``q``
    with ``filters`` on its input rows. ``first``: the first event instant up to ``as_of``
    when the caller knows it (then the cluster is not asked for it). A run longer than
    ``timeout`` seconds raises ``ClusterError`` naming the tasks still pending."""
    _check(q)
    run = Run(client, timeout)
    by = list(q.by)
    kpis = resolve(list(q.kpis) if q.kpis else None, by, q.granularity)
    if as_of is None or first is None:
        first, last = _span(run, version, as_of)
        as_of = as_of or last or dt.datetime.now(dt.UTC)
    # The window exactly as the single-process snapshot forms it (defaults, errors).
    shell = Snapshot(
        lifecycle=pl.DataFrame(),
        complaints=pl.DataFrame(),
        facilities=pl.DataFrame(),
        as_of=as_of,
        first_event_at=first,
    )
    ask = Ask(
        as_of=as_of,
        w=shell.window(q),
        by=tuple(by),
        families=frozenset(k.family for k in kpis),
        standards=version.standards,
        facilities=version.facilities,
        filters=filters,
    )
    [ask_future] = _scatter(run, [ask])
    # The buckets' partials stay on the workers (their values are the big part): the
    # client gathers their sums and first-pass bins, then narrows the wanted ranks.
    heavy = [
        (f"bucket {b:02d}", client.submit(bucket_partial, files, b, ask_future, pure=False))
        for b, files in _buckets(version)
    ]
    light = [(name, client.submit(light_partial, f, pure=False)) for name, f in heavy]
    if ask.families & COMPLAINT_FAMILIES:
        manifest = version.manifest
        complaints = str(version.lake / manifest.complaints) if manifest.complaints else None
        task = client.submit(complaints_partial, complaints, ask_future, pure=False)
        light.append(("complaints", task))
    try:
        partials: list[dict[str, Part]] = _gather(run, light)
        # The shape of an empty answer (one row of zeros without --by): an empty bucket's.
        partials.append(light_partial(empty_partial(ask)))
        stats = _exact_stats(run, heavy, partials, ask)
    except BaseException:
        client.cancel([f for _, f in heavy])  # type: ignore[no-untyped-call]
        raise
    finally:
        for _, future in heavy:
            future.release()  # type: ignore[no-untyped-call]
    return combine(partials, ask, stats)


def _exact_stats(
    run: Run,
    heavy: Sequence[tuple[str, Future[Any]]],
    partials: Sequence[dict[str, Part]],
    ask: Ask,
) -> dict[str, pl.DataFrame]:
    """Means and percentiles of every asked stat, by ``family/prefix`` (``kpi.cluster.ranks``)."""
    found: dict[str, tuple[Selection, str, bool]] = {}
    for family in (f for f in Family if f in ask.families):
        for prefix, mean in SPECS[family].stats:
            parts = [p[family.value] for p in partials if family.value in p]
            selection = Selection([p.values[prefix + TOTAL] for p in parts], ask.keys)
            selection.locate([p.values[prefix] for p in parts], None, SHIFTS[0])
            found[f"{family.value}/{prefix}"] = (selection, prefix, mean)

    def ship(chosen: dict[str, pl.DataFrame], parent: int, shift: int) -> list[Any]:
        [chosen_future] = _scatter(run, [chosen])
        labelled = [
            (f"{name}, narrowing to shift {shift}",
             run.client.submit(narrow_partial, f, chosen_future, parent, shift, pure=False))
            for name, f in heavy
        ]  # fmt: skip
        shipped = _gather(run, labelled)
        chosen_future.release()  # type: ignore[no-untyped-call]
        return shipped

    narrow({name: s for name, (s, _, _) in found.items()}, ship)
    return {name: s.stats(prefix, mean) for name, (s, prefix, mean) in found.items()}


def report(
    lake: Path,
    q: KpiQuery,
    client: Client,
    as_of: dt.datetime | None = None,
    timeout: float = RUN_TIMEOUT,
) -> pl.DataFrame:
    """Answer ``q`` over ``lake`` on the cluster behind ``client`` (see the module doc)."""
    frames = family_frames(LakeVersion.open(lake), q, client, as_of, timeout=timeout)
    kpis = resolve(list(q.kpis) if q.kpis else None, list(q.by), q.granularity)
    return join_families(frames, kpis, [*q.by, PERIOD] if q.granularity else list(q.by))
