"""``report``: a KPI question over a lake, one task per bucket on a Dask cluster.

A bucket holds every event of its items (``kpi.lake``), so each task builds its
bucket's lifecycle (and stage tables) and runs the single-process KPI functions on it
(``kpi.cluster.partials``); one more task reads the complaints. The partials combine
exactly (``kpi.cluster.combine``). Every part the manifest lists must be there and
readable: a missing or corrupt part is an error, never a smaller answer.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from kpi.cluster.combine import combine
from kpi.cluster.partials import (
    Ask,
    Part,
    Span,
    bucket_partial,
    bucket_span,
    complaints_partial,
    empty_partial,
)
from kpi.kpis.catalog import Family, KpiError, resolve
from kpi.kpis.exprs import PERIOD
from kpi.kpis.query import KpiQuery, Snapshot, join_families
from kpi.lake import LakeError, Manifest
from kpi.sources.folder import load_facilities
from kpi.standards import load_standards

if TYPE_CHECKING:
    from distributed import Client, Future

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


def _manifest(lake: Path) -> Manifest:
    """The lake's manifest, every part it lists present (else ``LakeError``)."""
    manifest = Manifest.load(lake)
    if manifest is None:
        raise LakeError(f"{lake} is not a lake (no manifest): run `kpi compact` first")
    missing = [p for p in manifest.parts if not (lake / p).exists()]
    if missing:
        buckets = sorted({p.split("bucket=", 1)[1].split("/", 1)[0] for p in missing})
        raise LakeError(
            f"{lake}: {len(missing)} part(s) listed in the manifest are missing"
            f" (bucket(s) {', '.join(buckets)}; first: {missing[0]}): refusing a partial answer"
        )
    if manifest.complaints is not None and not (lake / manifest.complaints).exists():
        raise LakeError(f"{lake}: the complaints part {manifest.complaints} is missing")
    return manifest


def _gather(client: Client, futures: list[Future[Any]]) -> list[Any]:
    """Every task's result, fetched as each finishes and then released, so a worker holds
    one bucket's work at a time, not its finished partials until the last task ends. On
    the first error the remaining tasks are cancelled and the error raised: no answer."""
    from distributed import as_completed  # noqa: PLC0415  (lazy: distributed)

    out: list[Any] = []
    try:
        for future in as_completed(futures, loop=client.loop):  # type: ignore[no-untyped-call]
            out.append(future.result())
            future.release()
    except BaseException:
        client.cancel(futures)  # type: ignore[no-untyped-call]
        raise
    return out


def _span(
    client: Client, buckets: list[tuple[int, list[str]]], as_of: dt.datetime | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(first, last) event instants as the single-process snapshot defines them, bucket by
    bucket on the cluster (the client reads no event)."""
    futures = [client.submit(bucket_span, files, b, as_of, pure=False) for b, files in buckets]
    spans: list[Span] = _gather(client, futures)
    firsts = [s[0] for s in spans if s[0] is not None]
    lasts = [s[1] for s in spans if s[1] is not None]
    first = min(firsts) if firsts else None
    if as_of is not None and first is None:  # nothing up to as-of: the first event at all
        first = min((s[2] for s in spans if s[2] is not None), default=None)
    return first, max(lasts) if lasts else None


def report(
    lake: Path, q: KpiQuery, client: Client, as_of: dt.datetime | None = None
) -> pl.DataFrame:
    """Answer ``q`` over ``lake`` on the cluster behind ``client`` (see the module doc)."""
    _check(q)
    manifest = _manifest(lake)
    by = list(q.by)
    kpis = resolve(list(q.kpis) if q.kpis else None, by, q.granularity)
    parts = manifest.bucket_parts(lake)
    buckets = [(b, [str(p) for p in files]) for b, files in parts.items() if files]
    first, last = _span(client, buckets, as_of)
    effective = as_of or last or dt.datetime.now(dt.UTC)
    # The window exactly as the single-process snapshot forms it (defaults, errors).
    shell = Snapshot(
        lifecycle=pl.DataFrame(),
        complaints=pl.DataFrame(),
        facilities=pl.DataFrame(),
        as_of=effective,
        first_event_at=first,
    )
    w = shell.window(q)
    ask = Ask(
        as_of=effective,
        w=w,
        by=tuple(by),
        families=frozenset(k.family for k in kpis),
        standards=load_standards(lake),
        facilities=load_facilities(lake),
    )
    [ask_future] = client.scatter([ask], broadcast=True)  # type: ignore[no-untyped-call]
    futures = [
        client.submit(bucket_partial, files, b, ask_future, pure=False) for b, files in buckets
    ]
    if ask.families & COMPLAINT_FAMILIES:
        complaints = str(lake / manifest.complaints) if manifest.complaints else None
        futures.append(client.submit(complaints_partial, complaints, ask_future, pure=False))
    partials: list[dict[str, Part]] = _gather(client, futures)
    # The shape of an empty answer (one row of zeros without --by) comes from an empty bucket.
    partials.append(empty_partial(ask))
    keys = [*by, PERIOD] if w.granularity else by
    return join_families(combine(partials, ask), kpis, keys)
