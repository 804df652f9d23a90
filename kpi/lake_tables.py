"""What each bucket of a lake adds up to: its items' lifecycle state, kept beside the events.

A lake (``kpi.lake``) holds events; answering from them means rebuilding every item's
lifecycle from every event. This module keeps, per bucket, the mergeable lifecycle
state (``kpi.lifecycle.STATE_SCHEMA``) of the bucket's items, plus what the API needs
of the whole history without its events (the first and last event instants and the
values each event-borne dimension takes), so a reader starts from ~one row per item.

Incremental: ``refresh_tables`` reads only the parts no table covers yet, turns their
events into partial states and merges them into the bucket's state with the
lifecycle's own order-independent rules (``reduce_states``), so runs of any split of
the events give the table a full rebuild gives. Atomic like the lake: new state files
are staged, moved in under fresh names, and only then listed in ``_tables.json``
(replaced with ``os.replace``); the files they replace are deleted after that.

The tables trail the lake's manifest: ``kpi compact`` refreshes them after it commits
its manifest, so a crash in between leaves tables that cover a subset of the
committed parts. Readers (``read_tables``) merge the parts not covered yet, so they
always see exactly the committed events; the next compaction catches the tables up.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from kpi.contract import SCHEMAS, Kind
from kpi.events import Effect, event_has
from kpi.lifecycle import STATE_SCHEMA, empty_state, event_partials, reduce_states

TABLES: Final = "_tables.json"
STATE_DIR: Final = "state"
#: Event columns whose values the API accepts as filters (``facility``: every event's;
#: the others: acceptances').
EVENT_DIMS: Final = ("product", "origin", "destination", "facility")


class TablesError(Exception):
    """Lifecycle tables that cannot be read or written as asked (with the reason)."""


def part_bucket(rel: str) -> int:
    """The bucket of a lake part from its path (``events/bucket=07/date=…/part-….parquet``)."""
    try:
        return int(rel.split("bucket=", 1)[1].split("/", 1)[0])
    except (IndexError, ValueError) as exc:
        raise TablesError(f"{rel}: not a bucketed lake part") from exc


def part_date(rel: str) -> dt.date | None:
    """The event date of a lake part from its path (None when the path has none)."""
    if "date=" not in rel:
        return None
    return dt.date.fromisoformat(rel.split("date=", 1)[1].split("/", 1)[0])


@dataclass
class TableIndex:
    """What the tables hold: each bucket's state file and the parts merged into them."""

    #: bucket -> state file (relative to the lake)
    states: dict[int, str] = field(default_factory=dict)
    #: lake parts whose events the states hold
    covered: list[str] = field(default_factory=list)
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    #: EVENT_DIMS -> the values seen in the covered events
    known: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, lake: Path) -> TableIndex:
        """The lake's table index (an empty one when none was written)."""
        path = lake / TABLES
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(
                states={int(k): str(v) for k, v in raw["states"].items()},
                covered=[str(p) for p in raw["covered"]],
                first=_instant(raw.get("first")),
                last=_instant(raw.get("last")),
                known={k: [str(v) for v in vs] for k, vs in raw.get("known", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TablesError(f"{path}: not a lifecycle table index ({exc})") from exc

    def save(self, lake: Path) -> None:
        """Replace the index atomically (the commit point of a refresh)."""
        raw = {
            "states": {str(k): v for k, v in sorted(self.states.items())},
            "covered": sorted(self.covered),
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "known": {k: sorted(v) for k, v in sorted(self.known.items())},
        }
        tmp = lake / f".{TABLES}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(raw, indent=1))
        os.replace(tmp, lake / TABLES)


def _instant(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def scan_parts(lake: Path, parts: Sequence[str]) -> pl.LazyFrame:
    """Events of the given lake parts in the pinned schema (empty when none)."""
    if not parts:
        return pl.LazyFrame(schema=SCHEMAS[Kind.EVENTS])
    files = [lake / p for p in parts]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise TablesError(f"lake part(s) listed but missing: {', '.join(missing[:5])}")
    return pl.scan_parquet(files).cast(SCHEMAS[Kind.EVENTS])  # type: ignore[arg-type]


@dataclass
class Addition:
    """What a set of events adds to the tables: per-bucket partial states and the summary."""

    states: dict[int, pl.DataFrame] = field(default_factory=dict)
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    known: dict[str, set[str]] = field(default_factory=dict)


def summarise(lake: Path, parts: Iterable[str]) -> Addition:
    """The states (per bucket) and summary of the events in ``parts``."""
    by_bucket: dict[int, list[str]] = {}
    for rel in parts:
        by_bucket.setdefault(part_bucket(rel), []).append(rel)
    add = Addition(known={d: set() for d in EVENT_DIMS})
    for bucket, rels in sorted(by_bucket.items()):
        events = scan_parts(lake, sorted(rels))
        state_plan = reduce_states(event_partials(events)).select(STATE_SCHEMA.keys())
        accepted = events.filter(event_has(Effect.ACCEPTS))
        plans = [
            state_plan,
            events.select(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")),
            *(accepted.select(pl.col(d).unique()) for d in EVENT_DIMS[:-1]),
            events.select(pl.col("facility").unique()),
        ]
        state, span, *values = pl.collect_all(plans)
        add.states[bucket] = state
        first, last = span.row(0)
        add.first = _least(add.first, first)
        add.last = _most(add.last, last)
        for dim, frame in zip(EVENT_DIMS, values, strict=True):
            add.known[dim].update(v for v in frame.to_series().to_list() if v is not None)
    return add


def _least(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return b if a is None else a if b is None else max(a, b)


def merge_states(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """One state from two states of the same bucket (the lifecycle's merge rules)."""
    if old.is_empty():
        return new
    both = pl.concat([old, new], how="vertical").lazy()
    return reduce_states(both).select(STATE_SCHEMA.keys()).collect()


def _read_state(lake: Path, rel: str | None) -> pl.DataFrame:
    if rel is None:
        return empty_state()
    try:
        return pl.read_parquet(lake / rel).cast(STATE_SCHEMA)  # type: ignore[arg-type]
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise TablesError(f"{lake / rel}: unreadable lifecycle table ({exc})") from exc


def _write_state(lake: Path, stage: Path, bucket: int, state: pl.DataFrame, run: str) -> str:
    """The bucket's new state file, staged then moved into the lake; its relative path."""
    rel = f"{STATE_DIR}/bucket={bucket:02d}/state-{run}.parquet"
    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
    state.sort("item_id").write_parquet(stage / rel)
    (lake / rel).parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage / rel, lake / rel)
    return rel


def refresh_tables(lake: Path, parts: Sequence[str]) -> TableIndex:
    """Bring the tables up to the committed ``parts`` (the lake manifest's): merge what is new.

    Called by ``kpi compact`` after it commits its manifest; safe to call again at any
    time (a refresh with nothing new writes nothing).
    """
    index = TableIndex.load(lake)
    covered = set(index.covered)
    gone = covered - set(parts)
    if gone:
        raise TablesError(
            f"{lake / TABLES} covers parts the lake no longer lists ({sorted(gone)[:3]}): "
            f"delete {TABLES} and {STATE_DIR}/ to rebuild them"
        )
    new = [p for p in parts if p not in covered]
    _sweep(lake, index)
    if not new:
        return index
    add = summarise(lake, new)
    run = uuid.uuid4().hex[:12]
    stage = lake / f"_staging-tables-{run}"
    replaced: list[str] = []
    try:
        stage.mkdir()
        states = dict(index.states)
        for bucket, fresh in add.states.items():
            old = states.get(bucket)
            merged = merge_states(_read_state(lake, old), fresh)
            states[bucket] = _write_state(lake, stage, bucket, merged, run)
            if old is not None:
                replaced.append(old)
        out = TableIndex(
            states=states,
            covered=sorted(covered | set(new)),
            first=_least(index.first, add.first),
            last=_most(index.last, add.last),
            known={
                d: sorted(set(index.known.get(d, ())) | add.known.get(d, set())) for d in EVENT_DIMS
            },
        )
        out.save(lake)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for rel in replaced:
        (lake / rel).unlink(missing_ok=True)
    return out


def _sweep(lake: Path, index: TableIndex) -> None:
    """Remove what a killed refresh left: its staging folder, state files never listed.

    Readers open only listed files, so an unlisted one is nobody's (one writer at a
    time, as for the lake itself).
    """
    for stale in lake.glob("_staging-tables-*"):
        shutil.rmtree(stale, ignore_errors=True)
    listed = set(index.states.values())
    for path in lake.glob(f"{STATE_DIR}/bucket=*/state-*.parquet"):
        if str(path.relative_to(lake)) not in listed:
            path.unlink(missing_ok=True)


@dataclass
class Tables:
    """Every item's state as of the lake's last event, read from the tables (a reader's view)."""

    state: pl.DataFrame
    first: dt.datetime | None
    last: dt.datetime | None
    known: dict[str, frozenset[str]]
    #: committed parts the tables did not cover yet (merged in from their events)
    uncovered: int = 0


def read_tables(lake: Path, parts: Sequence[str], attempts: int = 3) -> Tables:
    """The state of every item of the committed ``parts``: the tables, plus any part they miss.

    A refresh running meanwhile may delete a state file this read was about to open:
    the read then starts again from the new index (up to ``attempts`` times).
    """
    for attempt in range(attempts):
        index = TableIndex.load(lake)
        rels = [rel for _, rel in sorted(index.states.items())]
        try:
            if set(parts) <= set(index.covered):
                # Every part covered (the usual case): one read of all files, in parallel.
                return _with_uncovered(lake, parts, index, [_read_states(lake, rels)])
            states = [_read_state(lake, rel) for rel in rels]
        except TablesError:
            if attempt + 1 == attempts:
                raise
            continue
        return _with_uncovered(lake, parts, index, states)
    raise TablesError(f"{lake}: the lifecycle tables kept changing while being read")


def _read_states(lake: Path, rels: list[str]) -> pl.DataFrame:
    """All the given state files as one frame (in order)."""
    if not rels:
        return empty_state()
    try:
        files = [lake / rel for rel in rels]
        return pl.scan_parquet(files).cast(STATE_SCHEMA).collect()  # type: ignore[arg-type]
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise TablesError(f"{lake}: unreadable lifecycle table ({exc})") from exc


def _with_uncovered(
    lake: Path, parts: Sequence[str], index: TableIndex, states: list[pl.DataFrame]
) -> Tables:
    covered = set(index.covered)
    gone = covered - set(parts)
    if gone:
        raise TablesError(
            f"{lake / TABLES} covers parts the lake does not list ({sorted(gone)[:3]}): "
            "a table ahead of the manifest is never read"
        )
    missing = [p for p in parts if p not in covered]
    first, last = index.first, index.last
    known = {d: set(index.known.get(d, ())) for d in EVENT_DIMS}
    if missing:
        add = summarise(lake, missing)
        by_bucket = dict(zip(sorted(index.states), states, strict=True))
        for bucket, fresh in add.states.items():
            by_bucket[bucket] = merge_states(by_bucket.get(bucket, empty_state()), fresh)
        states = [by_bucket[b] for b in sorted(by_bucket)]
        first, last = _least(first, add.first), _most(last, add.last)
        for d in EVENT_DIMS:
            known[d] |= add.known[d]
    state = pl.concat(states, how="vertical") if states else empty_state()
    return Tables(
        state=state,
        first=first,
        last=last,
        known={d: frozenset(v) for d, v in known.items()},
        uncovered=len(missing),
    )
