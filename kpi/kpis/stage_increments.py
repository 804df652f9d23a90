"""Stage increments: what a *set* of newly read scans adds to the exporter's stage histograms.

Pure polars, no I/O and no Prometheus. The stages are the report's
(``kpi.kpis.stages``): a departure closes a dwell, an arrival closes a leg, the
first departure after the acceptance closes the first mile, the delivery closes the
last mile. The exporter keeps the *stage history* of the items in its state: one
row per acceptance, arrival, departure and delivery scan (``HISTORY_SCHEMA``: the
item, the scan's key ``ts`` in microseconds with the stage rank packed below, and
the facility), a few dozen bytes per scan.

A set is applied by computing the stage tables of the items it touches twice, with
the report's own function (``stage_tables``): from their history before the set, and
from that history plus the set's scans. An interval found after and not before is
new and observed; so the order in which scans arrive, within a set or across sets,
never matters: a departure read before its arrival is observed when the arrival
comes. Histograms only go up: an interval counted earlier that a late scan changes
(an arrival read late that falls between an arrival and a departure already counted)
cannot be taken back; it is counted in ``revisions`` and the histograms then differ
from the report by that many observations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from kpi.contract import EVENT_TYPES, UTC, EventType
from kpi.events import RANK_BITS, event_key, key_ts
from kpi.kpis.labels import UNKNOWN
from kpi.kpis.stages import DWELL, ITEM_HASH_SEED, LEG, STAGE_EVENTS, StageTables, stage_tables

SECONDS: Final = "seconds"
COUNT: Final = "count"

#: One row per stage scan of an item in the exporter's state.
HISTORY_SCHEMA: Final[dict[str, pl.DataType]] = {
    "item_id": pl.String(),
    "key": pl.Int64(),
    "facility": pl.String(),
}

DWELL_LABELS: Final = ("facility", "facility_type", "region")
LEG_LABELS: Final = ("from_region", "to_region")
FIRST_MILE_LABELS: Final = ("product", "origin")
LAST_MILE_LABELS: Final = ("facility", "facility_type", "region")
#: The stages, as the ``stage`` label of the revisions counter.
STAGES: Final = ("dwell", "leg", "first_mile", "last_mile")

_SCAN_KEYS: Final = ("kind", "item_id", "at", "facility", "from_facility", "started_at")


@dataclass(frozen=True)
class StageIncrements:
    """Observations (label columns plus ``seconds``, one row each) and revisions of a set."""

    dwell: pl.DataFrame
    leg: pl.DataFrame
    first_mile: pl.DataFrame
    last_mile: pl.DataFrame
    revisions: pl.DataFrame  # stage, count (intervals changed after they were counted)


def empty_history() -> pl.DataFrame:
    """A stage history with no scans."""
    return pl.DataFrame(schema=HISTORY_SCHEMA)


def history_rows(events: pl.DataFrame) -> pl.DataFrame:
    """The stage scans of validated, de-duplicated events, as history rows."""
    ev = pl.col("event").cast(pl.String)
    return events.filter(
        ev.is_in(STAGE_EVENTS)
        & pl.col("item_id").is_not_null()
        & pl.col("ts").is_not_null()
        & pl.col("facility").is_not_null()
    ).select(
        pl.col("item_id").cast(pl.String),
        event_key().alias("key"),
        pl.col("facility").cast(pl.String),
    )


def _as_events(history: pl.DataFrame) -> pl.LazyFrame:
    """History rows as the validated events ``stage_tables`` reads."""
    names = dict(enumerate(EVENT_TYPES))
    key = pl.col("key")
    return history.lazy().select(
        "item_id",
        (key % RANK_BITS)
        .replace_strict(names, return_dtype=pl.String)
        .cast(EventType)
        .alias("event"),
        key_ts(key).alias("ts"),
        "facility",
    )


def _tables(history: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-scan stage rows, per-item rows) of ``history``, keyed by ``item_id``."""
    tables: StageTables = stage_tables(_as_events(history))
    ids = tables.ids
    if ids is None:  # ``h`` is the hash of the id
        ids = (
            history.select("item_id")
            .unique()
            .with_columns(pl.col("item_id").hash(ITEM_HASH_SEED).alias("h"))
        )
    scans = tables.scans.join(ids, on="h", how="inner").select(
        "kind",
        "item_id",
        "at",
        pl.col("facility").cast(pl.String),
        pl.col("from_facility").cast(pl.String),
        "started_at",
    )
    items = tables.items.join(ids, on="h", how="inner").select(
        "item_id",
        "accepted_at",
        "first_departed_at",
        "delivered_at",
        "last_arrived_at",
        pl.col("last_arrival_facility").cast(pl.String),
    )
    return scans, items


def _new_and_revised(
    before: pl.DataFrame, after: pl.DataFrame, keys: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows of ``after`` not in ``before`` (as many times as they are missing) and rows
    of ``before`` no longer in ``after`` (multisets over ``keys``)."""
    n_after = after.group_by(keys).agg(pl.len().cast(pl.Int64).alias("_a"))
    n_before = before.group_by(keys).agg(pl.len().cast(pl.Int64).alias("_b"))
    both = n_after.join(n_before, on=keys, how="full", coalesce=True, nulls_equal=True)
    delta = both.select(*keys, (pl.col("_a").fill_null(0) - pl.col("_b").fill_null(0)).alias("_d"))
    new = delta.filter(pl.col("_d") > 0)
    new = new.select(*keys, pl.int_ranges(0, pl.col("_d")).alias("_r")).explode("_r").drop("_r")
    gone = delta.filter(pl.col("_d") < 0).select(*keys, (-pl.col("_d")).alias("_n"))
    return new, gone


def _seconds(later: str, earlier: str) -> pl.Expr:
    return ((pl.col(later) - pl.col(earlier)).dt.total_microseconds() / 1_000_000.0).alias(SECONDS)


def _facility_labels(facilities: pl.DataFrame, prefix: str = "") -> pl.DataFrame:
    return facilities.select(
        pl.col("facility").cast(pl.String).alias(f"{prefix}facility"),
        pl.col("type").cast(pl.String).alias(f"{prefix}facility_type"),
        pl.col("region").cast(pl.String).alias(f"{prefix}region"),
    ).unique(f"{prefix}facility", keep="last")


def _label(*names: str) -> list[pl.Expr]:
    return [pl.col(n).cast(pl.String).fill_null(UNKNOWN).replace("", UNKNOWN) for n in names]


def _observations(
    scans: pl.DataFrame, items: pl.DataFrame, facilities: pl.DataFrame, dims: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """New intervals as histogram observations (labels plus ``seconds``)."""
    fac = _facility_labels(facilities)
    timed = scans.filter(pl.col("started_at").is_not_null())
    dwell = (
        timed.filter(pl.col("kind") == DWELL)
        .join(fac, on="facility", how="left")
        .select(*_label(*DWELL_LABELS), _seconds("at", "started_at"))
    )
    regions = fac.select("facility", "region")
    leg = (
        timed.filter(pl.col("kind") == LEG)
        .join(
            regions.rename({"facility": "from_facility", "region": "from_region"}),
            on="from_facility",
            how="left",
        )
        .join(regions.rename({"region": "to_region"}), on="facility", how="left")
        .select(*_label(*LEG_LABELS), _seconds("at", "started_at"))
    )
    first = (
        items.filter(
            pl.col("accepted_at").is_not_null() & pl.col("first_departed_at").is_not_null()
        )
        .join(dims, on="item_id", how="left")
        .select(*_label(*FIRST_MILE_LABELS), _seconds("first_departed_at", "accepted_at"))
    )
    last = (
        items.filter(pl.col("delivered_at").is_not_null() & pl.col("last_arrived_at").is_not_null())
        .rename({"last_arrival_facility": "facility"})
        .join(fac, on="facility", how="left")
        .select(*_label(*LAST_MILE_LABELS), _seconds("delivered_at", "last_arrived_at"))
    )
    return {"dwell": dwell, "leg": leg, "first_mile": first, "last_mile": last}


_FIRST: Final = ["item_id", "accepted_at", "first_departed_at"]
_LAST: Final = ["item_id", "delivered_at", "last_arrived_at", "last_arrival_facility"]


def _complete(items: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    return items.select(cols).filter(pl.all_horizontal(pl.col(c).is_not_null() for c in cols[1:3]))


def stage_increments(
    history: pl.DataFrame,
    new_rows: pl.DataFrame,
    facilities: pl.DataFrame,
    dims: pl.DataFrame,
) -> tuple[pl.DataFrame, StageIncrements]:
    """The history with a set's stage scans added, and what they add to the histograms.

    ``history``, ``new_rows``: ``HISTORY_SCHEMA`` rows (before the set; the set's,
    ``history_rows``); ``facilities``: ``facilities.csv`` (labels: type, region);
    ``dims``: ``item_id, product, origin`` of the items (first-mile labels).
    """
    if new_rows.is_empty():
        return history, _empty_increments()
    touched = new_rows.select("item_id").unique()
    before = history.join(touched, on="item_id", how="semi")
    after = pl.concat([before, new_rows.select(HISTORY_SCHEMA.keys())], how="vertical")
    scans_a, items_a = _tables(after)
    if before.is_empty():
        scans, first, last = scans_a, _complete(items_a, _FIRST), _complete(items_a, _LAST)
        gone_n = dict.fromkeys(STAGES, 0)
    else:
        scans_b, items_b = _tables(before)
        scans, gone_s = _new_and_revised(scans_b, scans_a, list(_SCAN_KEYS))
        first, gone_f = _new_and_revised(
            _complete(items_b, _FIRST), _complete(items_a, _FIRST), _FIRST
        )
        last, gone_l = _new_and_revised(_complete(items_b, _LAST), _complete(items_a, _LAST), _LAST)
        timed = gone_s.filter(pl.col("started_at").is_not_null())
        gone_n = {
            "dwell": int(timed.filter(pl.col("kind") == DWELL)["_n"].sum()),
            "leg": int(timed.filter(pl.col("kind") == LEG)["_n"].sum()),
            "first_mile": int(gone_f["_n"].sum()),
            "last_mile": int(gone_l["_n"].sum()),
        }
    # Items rows are per item; the multiset diff gives back the new version whole.
    first_items = first.with_columns(
        pl.lit(None, UTC).alias("delivered_at"),
        pl.lit(None, UTC).alias("last_arrived_at"),
        pl.lit(None, pl.String).alias("last_arrival_facility"),
    )
    last_items = last.with_columns(
        pl.lit(None, UTC).alias("accepted_at"), pl.lit(None, UTC).alias("first_departed_at")
    )
    items = pl.concat([first_items, last_items.select(first_items.columns)], how="vertical")
    obs = _observations(scans, items, facilities, dims.select("item_id", *FIRST_MILE_LABELS))
    revisions = pl.DataFrame(
        {"stage": list(STAGES), COUNT: [gone_n[s] for s in STAGES]},
        schema={"stage": pl.String(), COUNT: pl.Int64()},
    ).filter(pl.col(COUNT) > 0)
    merged = pl.concat([history, new_rows.select(HISTORY_SCHEMA.keys())], how="vertical")
    return merged, StageIncrements(revisions=revisions, **obs)


def _empty_increments() -> StageIncrements:
    def obs(labels: tuple[str, ...]) -> pl.DataFrame:
        return pl.DataFrame(schema={**dict.fromkeys(labels, pl.String()), SECONDS: pl.Float64()})

    return StageIncrements(
        dwell=obs(DWELL_LABELS),
        leg=obs(LEG_LABELS),
        first_mile=obs(FIRST_MILE_LABELS),
        last_mile=obs(LAST_MILE_LABELS),
        revisions=pl.DataFrame(schema={"stage": pl.String(), COUNT: pl.Int64()}),
    )


def retire_history(history: pl.DataFrame, retired_items: pl.Series) -> pl.DataFrame:
    """The history without the scans of ``retired_items`` (their ids)."""
    return history.filter(~pl.col("item_id").is_in(retired_items.implode()))
