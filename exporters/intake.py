"""One set of records being gathered before it is applied (see ``exporters.books``).

``Intake.add_events`` takes validated events (``SOURCE``, ``ROW`` and the
``EVENT_SCHEMA`` columns) in any order and any number of calls; it drops what must
not count (duplicates, scans of retired items, events older than the dedup window)
as rejects, counts what is decided when read (failures by reason, late events) and
folds the rest into per-item summaries (``kpi.kpis.increments.SET_SCHEMA``), so a
set as large as a whole history is held per item, not per event. Every decision is
taken against the state the set started from, never against records of the same
set: so the set's outcome does not depend on the order of its records.

A call either changes the intake completely or not at all (it computes on the side
and assigns at the end), so a caller can reject a chunk that fails and go on.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from exporters.compact import CompactItems, event_key, item_key, key_hashes
from exporters.seen import DAY_US, Days, Hashes, SeenIds, SeenWindow, hash_ids
from kpi.contract import EVENT_SCHEMA, RejectReason
from kpi.events import Effect, event_has, event_in, key_us
from kpi.kpis.increments import (
    FAILURE_LABELS,
    IN_MEMORY,
    LABEL_EVENTS,
    failure_counts,
    late_count,
    merge_sets,
    reduce_complaints,
    reduce_set,
    set_rows,
    sum_counts,
)
from kpi.kpis.stage_increments import empty_history, history_rows
from kpi.lifecycle import finished
from kpi.sources.validate import REJECT_SCHEMA, ROW, SOURCE

DUPLICATE: Final = RejectReason.DUPLICATE.value
RETIRED: Final = RejectReason.RETIRED_ITEM.value
TOO_OLD: Final = RejectReason.TOO_OLD.value


def _raw_json(frame: pl.DataFrame) -> pl.Expr:
    cols = [c for c in frame.columns if c not in (SOURCE, ROW)]
    return pl.struct([pl.col(c).cast(pl.String) for c in cols]).struct.json_encode()


def rejects_of(rows: pl.DataFrame, reason: str, field_name: str) -> pl.DataFrame:
    """Valid rows dropped for ``reason`` (about ``field_name``), as reject records."""
    return rows.select(
        pl.col(SOURCE).alias("source"),
        pl.col(ROW).cast(pl.Int64).alias("row"),
        pl.lit(reason).alias("reason"),
        pl.lit(field_name).alias("field"),
        _raw_json(rows).alias("raw"),
    )


class Intake:
    """A set being gathered against a fixed state (the ledger it was opened on)."""

    def __init__(
        self,
        items: CompactItems,
        held: pl.DataFrame,
        seen: SeenWindow,
        retired: SeenIds,
        clock_us: int | None,
        retention_us: int | None,
        dedup_window_us: int | None,
    ) -> None:
        self.base_items = items
        self._held = held
        self._seen = seen
        self._retired = retired
        self._clock = clock_us
        self._retention = retention_us
        self._window = dedup_window_us
        #: Hashes of ``_new_hashes[:_folded]`` as a set; the rest are folded in only when
        #: a later call looks them up (a set of one call never builds it).
        self._new_seen = SeenIds()
        self._folded = 0
        self._new_hashes: list[Hashes] = []
        self._new_days: list[Days] = []
        #: Reduced per-item summaries of each call, folded once when read (``merge_sets``).
        self._rest_parts: list[pl.DataFrame] = []
        self._label_parts: list[pl.DataFrame] = []
        self.failures = sum_counts([], FAILURE_LABELS)
        self.late_events = 0
        self.events = 0
        self.complaint_records = 0
        self.complaints = pl.DataFrame()
        self.newest_us: int | None = None
        self._rejects: list[pl.DataFrame] = []
        #: The set's stage scans (``kpi.kpis.stage_increments.HISTORY_SCHEMA``).
        self._stage_rows: list[pl.DataFrame] = []
        self.rows = 0  # input rows handled (counted, dropped or rejected)

    # --- adding records -------------------------------------------------------------

    def add_rejects(self, rejects: pl.DataFrame) -> None:
        """Rows rejected before they got here (parsing, validation), as reject records."""
        if rejects.is_empty():
            return
        frame = rejects.select(REJECT_SCHEMA.keys()).cast(REJECT_SCHEMA)  # type: ignore[arg-type]
        self._rejects.append(frame)
        self.rows += frame.filter(pl.col("row").is_not_null()).height

    def add_events(self, events: pl.DataFrame) -> None:
        """Validated events (``SOURCE``, ``ROW``, ``EVENT_SCHEMA``), in any order."""
        if events.is_empty():
            return
        # Most rows of a set pass every check: a mask that drops nothing filters nothing.
        # Repeats within the call are found on the ids' hashes (as the window finds them),
        # not by hashing the id strings once more.
        all_hashes = hash_ids(events.get_column("event_id"))
        first_mask = pl.Series(all_hashes).is_first_distinct()
        first, again = _split(events, first_mask)
        hashes = all_hashes[first_mask.to_numpy()]
        known_mask = self._seen.contains(hashes) | self._earlier(hashes)
        known, fresh = _split(first, pl.Series(known_mask))
        rejects = [rejects_of(pl.concat([again, known], how="vertical"), DUPLICATE, "event_id")]
        old = self._too_old(fresh)
        too_old, fresh = _split(fresh, old)
        rejects.append(rejects_of(too_old, TOO_OLD, "ts"))
        fresh_hashes = hashes[~known_mask][~old.to_numpy()]
        fresh_days = (fresh.get_column("ts").dt.epoch("us").to_numpy() // DAY_US).astype(np.int64)
        items = pl.Series("item", hash_ids(fresh.get_column("item_id")), dtype=pl.UInt64)
        gone = self._of_retired_items(fresh, items)
        retired, kept_rows = _split(fresh, gone)
        rejects.append(rejects_of(retired, RETIRED, "item_id"))
        # The clock counts every new event read, a retired item's scans included.
        newest = fresh.select(pl.col("ts").max().dt.epoch("us")).item() if fresh.height else None
        # From here on an item is its hash and an event id its order key (exporters.compact).
        kept = ~gone
        kept_items = items.filter(kept) if retired.height else items
        counted = kept_rows.with_columns(
            item_key(kept_items), _acceptance_keys(kept_rows, fresh_hashes[kept.to_numpy()])
        ).select(EVENT_SCHEMA.keys())
        label = counted.select(event_in(LABEL_EVENTS)).to_series()
        rest, labels = _split(set_rows(counted), ~label)
        item_hashes = kept_items.to_numpy()
        new_rest = _reduced(rest, item_hashes[~label.to_numpy()])
        new_labels = _reduced(labels, item_hashes[label.to_numpy()])
        failures = sum_counts([self.failures, failure_counts(counted)], FAILURE_LABELS)
        late = late_count(
            pl.DataFrame([kept_items.alias("item_id"), counted.get_column("ts")]),
            self._newest_before(kept_items),
        )
        stage = history_rows(counted)
        # All computed: now change the intake in one go.
        self._new_hashes.append(fresh_hashes)
        self._new_days.append(fresh_days)
        self._rest_parts.append(new_rest)
        self._label_parts.append(new_labels)
        self.failures = failures
        self.late_events += late
        self.events += counted.height
        self.newest_us = _later(self.newest_us, newest)
        self._rejects.extend(r for r in rejects if r.height)
        self._stage_rows.append(stage)
        self.rows += events.height

    def add_complaints(self, records: pl.DataFrame) -> None:
        """Validated complaint records, in read order."""
        if records.is_empty():
            return
        frame = records.drop(SOURCE, ROW, strict=False)
        both = (
            pl.concat([self.complaints, frame], how="vertical") if self.complaints.width else frame
        )
        self.complaints = reduce_complaints(both)
        self.complaint_records += frame.height
        self.rows += frame.height

    # --- what the set holds ---------------------------------------------------------

    @property
    def rest(self) -> pl.DataFrame:
        """Per-item summary (``SET_SCHEMA``) of the events counted at once."""
        self._rest_parts = [merge_sets(self._rest_parts)]
        return self._rest_parts[0]

    @property
    def labels(self) -> pl.DataFrame:
        """Per-item summary of the label events (they may wait for their acceptance)."""
        self._label_parts = [merge_sets(self._label_parts)]
        return self._label_parts[0]

    def rejects(self) -> pl.DataFrame:
        """Every reject of the set, in the order added."""
        if not self._rejects:
            return pl.DataFrame(schema=REJECT_SCHEMA)
        return pl.concat(self._rejects, how="vertical")

    def stage_rows(self) -> pl.DataFrame:
        """The set's stage scans (acceptances, arrivals, departures, deliveries)."""
        if not self._stage_rows:
            return empty_history()
        return pl.concat(self._stage_rows, how="vertical")

    def new_hashes(self) -> tuple[Hashes, Days]:
        """Hashes of the event ids this set counts, and their events' days."""
        if not self._new_hashes:
            return no_hashes(), np.empty(0, dtype=np.int64)
        return np.concatenate(self._new_hashes), np.concatenate(self._new_days)

    @property
    def empty(self) -> bool:
        """Whether nothing at all was added."""
        return self.rows == 0 and not self._rejects

    # --- rules ------------------------------------------------------------------------

    def _earlier(self, hashes: Hashes) -> np.ndarray:
        """Which ``hashes`` earlier calls of this set counted."""
        pending = self._new_hashes[self._folded :]
        if pending:
            self._new_seen = self._new_seen.add(np.concatenate(pending))
            self._folded = len(self._new_hashes)
        return self._new_seen.contains(hashes)

    def _newest_before(self, items: pl.Series) -> pl.DataFrame:
        """The newest known key before the set (counted or held) of the items among
        ``items``, keyed by the item hash (as ``item_id``: joined as integers, not text)."""
        held = self._held.select(
            key_hashes(self._held.get_column("item_id")).alias("item_id"), "last_key"
        )
        return pl.concat([self.base_items.newest_keys(items), held], how="vertical")

    def _too_old(self, fresh: pl.DataFrame) -> pl.Series:
        """Events older than the dedup window behind the clock the set started at."""
        if self._window is None or self._clock is None or fresh.is_empty():
            return pl.repeat(False, fresh.height, eager=True)
        horizon = self._clock - self._window
        return fresh.select((pl.col("ts").dt.epoch("us") < horizon).alias("old")).to_series()

    def _of_retired_items(self, fresh: pl.DataFrame, items: pl.Series) -> pl.Series:
        """Events of items retired before the set, or retired by the rule at the event.

        Retired: in the retired set, or finished in the state the set started from with
        a last scan older than the retention behind the clock (the newer of the set's
        starting clock and the event's own ``ts``). ``items``: the events' item hashes.
        """
        none = pl.repeat(False, fresh.height, eager=True)
        if fresh.is_empty() or (self._retention is None and not len(self._retired)):
            return none
        known = self.base_items.contains(items)
        late = none
        if len(self._retired):
            # Only items not in the state can be retired.
            late = ~known & pl.Series(self._retired.contains(items.to_numpy()))
        if self._retention is None:
            return late
        prior = self.base_items.rows(items.filter(known)).filter(finished())
        if prior.is_empty():
            return late
        clock = pl.max_horizontal(pl.lit(self._clock, pl.Int64), pl.col("ts").dt.epoch("us"))
        by_rule = (
            fresh.select(item_key(items), "ts")
            .join(
                prior.select("item_id", key_us("last_key").alias("_last")),
                on="item_id",
                how="left",
                maintain_order="left",
            )
            .select((pl.col("_last") < clock - self._retention).fill_null(False))
            .to_series()
        )
        return late | by_rule


def _split(rows: pl.DataFrame, mask: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows where ``mask``, the others); no copy when the mask takes none or all."""
    if not mask.any():
        return rows.clear(), rows
    if mask.all():
        return rows, rows.clear()
    return rows.filter(mask), rows.filter(~mask)


def _reduced(rows: pl.DataFrame, items: Hashes) -> pl.DataFrame:
    """``reduce_set`` of one-event set rows (``items``: their item hashes): only the items
    with more than one event are reduced. A validated event's row is its own reduction
    (its ``ts``, so its key, and an acceptance's event key are never null), so the others
    pass as they are."""
    again = pl.Series(items).is_duplicated()
    if not again.any():
        return rows
    # Grouped by the hash, not its text: one key per item all the same, and integers
    # hash and compare cheaper; the text is made once per item after.
    hashes = pl.Series("item_id", items[again.to_numpy()], dtype=pl.UInt64)
    repeated = rows.filter(again).with_columns(hashes)
    reduced = reduce_set(repeated.lazy()).collect(engine=IN_MEMORY)
    reduced = reduced.with_columns(item_key(reduced.get_column("item_id")))
    return pl.concat([rows.filter(~again), reduced], how="vertical")


def _acceptance_keys(rows: pl.DataFrame, hashes: Hashes) -> pl.Series:
    """The ``event_id`` column of counted rows: the order key of each acceptance's id
    (``hashes``: the rows' event-id hashes), null for other events, which never read it
    (only an acceptance's id breaks a tie, ``kpi.lifecycle``)."""
    accepts = rows.select(event_has(Effect.ACCEPTS)).to_series().to_numpy()
    if accepts.all():
        return event_key(hashes)
    ids = pl.Series("event_id", [None], dtype=pl.String).extend_constant(None, len(rows) - 1)
    if not accepts.any():
        return ids
    return ids.scatter(np.flatnonzero(accepts), event_key(hashes[accepts]))


def _later(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def no_hashes() -> Hashes:
    """An empty hash array."""
    return np.empty(0, dtype=np.uint64)
