"""Drill-down tables (backlog, late items, complaints): built once per snapshot, then filtered."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Hashable
from typing import cast

import polars as pl
from fastapi import Response

from kpi.api.deps import Paging, Principal
from kpi.api.errors import bad_request
from kpi.api.export import Rendered, columns_meta, render_page
from kpi.api.service import check_filter_values
from kpi.api.store import DataStore, Generation
from kpi.kpis.exprs import hours_between
from kpi.kpis.filters import Filter
from kpi.kpis.query import Snapshot

_COMPLAINT_DEADLINE = dt.timedelta(days=7)


def backlog_table(waiting: pl.DataFrame, as_of: dt.datetime) -> pl.DataFrame:
    """Waiting items in the API's column names (input is already oldest first)."""
    return waiting.select(
        "item_id",
        pl.col("last_facility").alias("facility"),
        "facility_type",
        pl.col("facility_region").alias("region"),
        "product",
        "destination",
        pl.col("last_event").cast(pl.String),
        "last_event_at",
        "age_hours",
        "age_band",
        "promised_by",
        (pl.col("promised_by") < as_of).alias("overdue"),
    )


def late_table(snap: Snapshot) -> pl.DataFrame:
    """Items delivered after their promise and unfinished items past it, latest first."""
    # The KPIs' rules (acceptance and promise known, delivered_at > promised_by), so the
    # counts match late_1d + late_2d + late_3d_plus and overdue_items.
    lc = snap.lifecycle.lazy()
    common = (
        "item_id",
        "product",
        "origin",
        "destination",
        "accepted_at",
        "promised_by",
        "delivered_at",
    )
    tail = (
        pl.col("last_event").cast(pl.String),
        "last_event_at",
        "last_facility",
    )
    delivered = lc.filter(
        pl.col("delivered_at").is_not_null()
        & (pl.col("delivered_at") <= snap.as_of)
        & pl.col("accepted_at").is_not_null()
        & pl.col("promised_by").is_not_null()
        & (hours_between("delivered_at", "promised_by") > 0)
    ).select(
        "item_id",
        pl.lit("delivered_late").alias("kind"),
        *common[1:],
        hours_between("delivered_at", "promised_by").alias("late_hours"),
        *tail,
    )
    overdue = lc.filter(~pl.col("finished") & (pl.col("promised_by") < snap.as_of)).select(
        "item_id",
        pl.lit("overdue").alias("kind"),
        *common[1:],
        hours_between(pl.lit(snap.as_of), "promised_by").alias("late_hours"),
        *tail,
    )
    return (
        pl.concat([delivered, overdue], how="vertical")
        .sort(["late_hours", "item_id"], descending=[True, False])
        .collect()
    )


def complaints_table(snap: Snapshot) -> pl.DataFrame:
    """Latest complaint versions opened at or before as-of, with their state then; newest first."""
    is_open = pl.col("resolved_at").is_null() | (pl.col("resolved_at") > snap.as_of)
    return (
        snap.complaints.with_columns(pl.col("category").cast(pl.String))
        .with_columns(is_open.alias("open"))
        .with_columns(
            (pl.col("open") & (pl.col("opened_at") < snap.as_of - _COMPLAINT_DEADLINE)).alias(
                "overdue"
            )
        )
        .sort(["opened_at", "complaint_id"], descending=[True, False])
    )


def values_filter(
    frame: pl.DataFrame,
    dimension: str,
    column: str,
    values: tuple[str, ...],
    known: dict[str, frozenset[str]],
) -> pl.DataFrame:
    """Rows whose ``column`` is one of ``values`` (400 for values no data has)."""
    if not values:
        return frame
    check_filter_values(Filter(dimension, "in", values), known)
    return frame.filter(pl.col(column).is_in(list(values)))


def scope_filter(
    frame: pl.DataFrame, principal: Principal, column: str, what: str, asked: tuple[str, ...]
) -> pl.DataFrame:
    """403 when ``asked`` leaves the key's regions; otherwise keep only the key's regions."""
    if principal.regions is None:
        return frame
    principal.check_regions(what, list(asked))
    return frame.filter(pl.col(column).is_in(sorted(principal.regions)))


def window_filter(
    frame: pl.DataFrame,
    column: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
    keep: pl.Expr | None = None,
) -> pl.DataFrame:
    """Rows with ``column`` in [start, end) (rows where ``keep`` holds are exempt)."""
    if start is not None and end is not None and end <= start:
        raise bad_request(f"`from` ({start.isoformat()}) must be before `to` ({end.isoformat()})")
    cond = pl.lit(True)
    if start is not None:
        cond &= pl.col(column) >= start
    if end is not None:
        cond &= pl.col(column) < end
    if keep is not None:
        cond = cond | keep
    return frame.filter(cond) if start is not None or end is not None else frame


async def drill_answer(
    store: DataStore,
    gen: Generation,
    key: Hashable,
    base: Callable[[], Awaitable[tuple[Snapshot, pl.DataFrame]]],
    select: Callable[[pl.DataFrame], pl.DataFrame],
    paging: Paging,
    fmt: str,
    name: str,
) -> Response:
    """A page of a drill-down: from the page cache, else filtered and rendered in a worker thread."""
    hit = store.cached(gen, key)
    if hit is not None:
        return cast(Rendered, hit).response()
    snap, table = await base()

    def build() -> Rendered:
        frame = select(table)
        return render_page(
            frame.slice(paging.offset, paging.limit),
            fmt,
            columns=columns_meta(frame, {}),
            total=frame.height,
            limit=paging.limit,
            offset=paging.offset,
            as_of=snap.as_of,
            data_version=gen.version,
            name=name,
        )

    rendered, _ = await store.compute(gen, gen.results, key, build, f"the {name} page", count=True)
    return rendered.response()
