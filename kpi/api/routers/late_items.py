"""``GET /late-items``: items delivered late in a window, and items overdue at as-of."""

from __future__ import annotations

from typing import Annotated, Literal

import polars as pl
from fastapi import APIRouter, Query, Response

from kpi.api.answer import TABULAR_RESPONSES
from kpi.api.deps import (
    FormatDep,
    GenerationDep,
    ListParam,
    PagingDep,
    PrincipalDep,
    StoreDep,
    split,
)
from kpi.api.drill import drill_answer, late_table, scope_filter, values_filter, window_filter
from kpi.api.models import Instant, LateItemsPage
from kpi.kpis.query import Snapshot

router = APIRouter(tags=["drill-down"])


@router.get(
    "/late-items",
    response_model=LateItemsPage,
    responses=TABULAR_RESPONSES,
    summary="Delivered-late and overdue items, the latest first",
    description=(
        "`delivered_late`: delivered in [from, to) after `promised_by` (acceptance and "
        "promise known - the rule of the late_*_items KPIs). `overdue`: unfinished at "
        "as_of with `promised_by` before it (the overdue_items KPI); `from`/`to` do not "
        "apply to them. `region` is the destination region. Sorted by `late_hours`, "
        "largest first."
    ),
)
async def get_late_items(
    store: StoreDep,
    gen: GenerationDep,
    principal: PrincipalDep,
    page: PagingDep,
    fmt: FormatDep,
    kind: Annotated[Literal["delivered_late", "overdue", "all"], Query()] = "all",
    start: Annotated[
        Instant | None, Query(alias="from", description="delivered at or after")
    ] = None,
    end: Annotated[Instant | None, Query(alias="to", description="delivered before")] = None,
    as_of: Annotated[Instant | None, Query(description="snapshot instant")] = None,
    product: ListParam = None,
    origin: ListParam = None,
    destination: ListParam = None,
    region: ListParam = None,
) -> Response:
    """Late items for a period and slice, paged."""
    products, origins = split(product), split(origin)
    destinations, regions = split(destination), split(region)

    async def base() -> tuple[Snapshot, pl.DataFrame]:
        snap = await store.snapshot(gen, as_of)
        table, _ = await store.compute(
            gen, gen.results, ("late", snap.as_of), lambda: late_table(snap), "the late items"
        )
        return snap, table

    def select(frame: pl.DataFrame) -> pl.DataFrame:
        frame = scope_filter(frame, principal, "destination", "destination", destinations + regions)
        if kind != "all":
            frame = frame.filter(pl.col("kind") == kind)
        frame = window_filter(frame, "delivered_at", start, end, keep=pl.col("kind") == "overdue")
        frame = values_filter(frame, "product", "product", products, gen.known)
        frame = values_filter(frame, "origin", "origin", origins, gen.known)
        frame = values_filter(frame, "destination", "destination", destinations, gen.known)
        return values_filter(frame, "region", "destination", regions, gen.known)

    key = (
        "late",
        as_of,
        kind,
        start,
        end,
        products,
        origins,
        destinations,
        regions,
        principal.regions,
        page,
        fmt,
    )
    return await drill_answer(store, gen, key, base, select, page, fmt, "late-items")
