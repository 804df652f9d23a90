"""The exporter's counters as the report says they must be, and folders cut in odd ways.

``report_counters`` derives every item counter from ``kpi report``'s own answers
(``Snapshot.query`` all-time KPIs, its lifecycle table) and the counts that are not
KPIs (repeat attempts, failures by reason) from the raw validated events, by plain
group-bys that share no code with the exporter's counting.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import polars as pl

from exporters import catalog as cat
from exporters.compact import item_key
from exporters.seen import hash_ids
from exporters.store import CounterStore
from kpi.contract import COMPLAINT_SCHEMA, EVENT_SCHEMA
from kpi.kpis.query import KpiQuery, Snapshot
from kpi.sources.folder import load_data_dir

Counts = dict[tuple[str, ...], int]
ITEM_COUNTERS = (
    cat.ITEMS_ACCEPTED,
    cat.ITEMS_DELIVERED,
    cat.ITEMS_RETURNED,
    cat.DELIVERY_ATTEMPTS,
    cat.DELIVERY_FAILURES,
    cat.COMPLAINTS,
)
_ISO = "%Y-%m-%dT%H:%M:%S%.6f%:z"


def _labels(frame: pl.DataFrame, labels: list[str], value: str) -> Counts:
    out: Counts = {}
    for row in frame.select(*labels, value).iter_rows():
        n = int(row[-1] or 0)
        if n:
            key = tuple("unknown" if v is None else str(v) for v in row[:-1])
            out[key] = out.get(key, 0) + n
    return out


def report_counters(data: Path) -> tuple[dict[str, Counts], tuple[int, int]]:
    """Expected counter series by metric name, and the transit histogram's (count, sum µs)."""
    ds = load_data_dir(data)
    snap = Snapshot.from_dataset(ds)

    def q(kpis: list[str], by: list[str]) -> pl.DataFrame:
        return snap.query(KpiQuery(kpis=tuple(kpis), by=tuple(by)))

    out: dict[str, Counts] = {}
    out[cat.ITEMS_ACCEPTED.name] = _labels(
        q(["accepted_items"], ["product", "origin", "destination"]),
        ["product", "origin", "destination"],
        "accepted_items",
    )
    kinds = ["on_time_items", "late_1d_items", "late_2d_items", "late_3d_plus_items"]
    dl = q(["delivered_items", *kinds], ["product", "destination"]).with_columns(
        pl.col("on_time_items").alias("true"),
        (pl.col("late_1d_items") + pl.col("late_2d_items") + pl.col("late_3d_plus_items")).alias(
            "false"
        ),
    )
    dl = dl.with_columns(
        (pl.col("delivered_items") - pl.col("true") - pl.col("false")).alias("unknown")
    )
    delivered: Counts = {}
    for flag in ("true", "false", "unknown"):
        for key, n in _labels(dl, ["product", "destination"], flag).items():
            delivered[(*key, flag)] = n
    out[cat.ITEMS_DELIVERED.name] = delivered
    out[cat.ITEMS_RETURNED.name] = _labels(
        q(["returned_items"], ["product", "destination"]),
        ["product", "destination"],
        "returned_items",
    )
    # Attempts: the lifecycle's first attempt per item; every other attempt event a repeat.
    lc = snap.lifecycle
    events = ds.events.collect().unique("event_id", keep="first")
    per_item = (
        events.filter(pl.col("event").is_in(["delivered", "delivery_failed"]))
        .group_by("item_id")
        .agg(
            (pl.col("event") == "delivered").sum().alias("n_ok"),
            (pl.col("event") == "delivery_failed").sum().alias("n_failed"),
        )
        .join(lc.select("item_id", "product", "destination", "first_attempt_outcome"), on="item_id")
        .with_columns(pl.col("first_attempt_outcome").cast(pl.String).alias("first"))
    )
    attempts: Counts = {}
    for product, dest, n_ok, n_failed, first in per_item.select(
        "product", "destination", "n_ok", "n_failed", "first"
    ).iter_rows():
        p, d = product or "unknown", dest or "unknown"
        for outcome, n in (("delivered", n_ok), ("failed", n_failed)):
            is_first = first == ("delivered" if outcome == "delivered" else "delivery_failed")
            for attempt, k in (("first", int(is_first)), ("repeat", n - int(is_first))):
                if k:
                    key = (p, d, outcome, attempt)
                    attempts[key] = attempts.get(key, 0) + k
    out[cat.DELIVERY_ATTEMPTS.name] = attempts
    failures = events.filter(pl.col("event") == "delivery_failed").group_by("reason").len()
    out[cat.DELIVERY_FAILURES.name] = _labels(failures, ["reason"], "len")
    cq = q(["complaints", "valid_complaints"], ["region", "category"])
    out["complaints_by_region_category"] = _labels(cq, ["region", "category"], "complaints")
    out["valid_complaints"] = {(): int(cq["valid_complaints"].sum() or 0)}
    delivered_lc = lc.filter(
        pl.col("delivered_at").is_not_null() & pl.col("accepted_at").is_not_null()
    )
    transit_us = delivered_lc.select(
        (pl.col("delivered_at") - pl.col("accepted_at")).dt.total_microseconds().sum()
    ).item()
    return out, (delivered_lc.height, int(transit_us or 0))


def exporter_counters(store: CounterStore) -> tuple[dict[str, Counts], tuple[int, int]]:
    """The same shape from an exporter's counters."""
    out: dict[str, Counts] = {}
    for spec in ITEM_COUNTERS[:-1]:
        out[spec.name] = {k: v for k, v in store.series(spec) if v}
    complaints: Counts = {}
    valid = 0
    for (region, category, flag), n in store.series(cat.COMPLAINTS):
        complaints[(region, category)] = complaints.get((region, category), 0) + n
        valid += n if flag == "true" else 0
    out["complaints_by_region_category"] = {k: v for k, v in complaints.items() if v}
    out["valid_complaints"] = {(): valid}
    hist = dict(store.histogram_series(cat.TRANSIT_TIME))
    return out, (sum(h.count for h in hist.values()), sum(h.sum_us for h in hist.values()))


# --- writing a history in odd shapes -------------------------------------------------


def as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Typed rows as the strings a text feed carries (timestamps ISO 8601 with offset)."""
    return frame.with_columns(
        pl.col(c).dt.to_string(_ISO) for c, t in frame.schema.items() if isinstance(t, pl.Datetime)
    ).with_columns(pl.all().cast(pl.String))


def write_frame(path: Path, frame: pl.DataFrame) -> None:
    """A typed frame as CSV, JSONL or Parquet by suffix (Parquet via ``.tmp`` and rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        tmp = path.with_name(path.name + ".tmp")
        frame.write_parquet(tmp)
        tmp.rename(path)
    elif path.suffix == ".csv":
        as_text(frame).write_csv(path)
    else:
        as_text(frame).write_ndjson(path)


def split_write(folder: Path, frame: pl.DataFrame, key: pl.Expr, rng: random.Random) -> None:
    """One file per value of ``key``, random names and formats (name order is not time order)."""
    parts = frame.with_columns(key.alias("_part")).partition_by("_part", as_dict=False)
    for part in parts:
        name = f"{rng.getrandbits(40):010x}.{rng.choice(['csv', 'jsonl', 'parquet'])}"
        write_frame(folder / name, part.drop("_part"))


def events_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Typed events from python rows."""
    return pl.DataFrame(rows, schema=EVENT_SCHEMA)


def complaints_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Typed complaint records from python rows."""
    return pl.DataFrame(rows, schema=COMPLAINT_SCHEMA)


def item_keys(*ids: str) -> list[str]:
    """The exporter's keys of these item ids (their hashes, ``exporters.compact``), sorted."""
    return sorted(item_key(hash_ids(pl.Series(ids, dtype=pl.String))).to_list())
