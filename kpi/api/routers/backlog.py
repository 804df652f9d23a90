"""``GET /backlog``: the items waiting at facilities now, oldest first."""

from __future__ import annotations

from typing import Annotated

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
from kpi.api.drill import backlog_table, drill_answer, scope_filter, values_filter
from kpi.api.errors import forbidden
from kpi.api.models import BacklogPage, Instant
from kpi.kpis.query import Snapshot

router = APIRouter(tags=["drill-down"])


@router.get(
    "/backlog",
    response_model=BacklogPage,
    responses=TABULAR_RESPONSES,
    summary="Items waiting at facilities, oldest first",
    description=(
        "Unfinished items whose last scan is `arrived` or `delivery_failed`, with their age "
        "at as_of. `region` is the facility's region. The total equals the `backlog_items` "
        "KPI for the same filters."
    ),
)
async def get_backlog(
    store: StoreDep,
    gen: GenerationDep,
    principal: PrincipalDep,
    page: PagingDep,
    fmt: FormatDep,
    facility: ListParam = None,
    region: ListParam = None,
    product: ListParam = None,
    min_age_hours: Annotated[float | None, Query(ge=0, le=1e6)] = None,
    as_of: Annotated[Instant | None, Query(description="snapshot instant")] = None,
) -> Response:
    """Waiting items, filtered and paged."""
    facilities, regions, products = split(facility), split(region), split(product)
    if principal.regions is not None:
        outside = [f for f in facilities if gen.facility_region.get(f) not in principal.regions]
        if outside:
            raise forbidden(
                f"your key is limited to regions {sorted(principal.regions)}; facility "
                f"{outside} is not in them"
            )

    async def base() -> tuple[Snapshot, pl.DataFrame]:
        snap = await store.snapshot(gen, as_of)
        return snap, backlog_table(await store.waiting(gen, snap), snap.as_of)

    def select(frame: pl.DataFrame) -> pl.DataFrame:
        frame = scope_filter(frame, principal, "region", "region", regions)
        frame = values_filter(frame, "facility", "facility", facilities, gen.known)
        frame = values_filter(frame, "region", "region", regions, gen.known)
        frame = values_filter(frame, "product", "product", products, gen.known)
        if min_age_hours is not None:
            frame = frame.filter(pl.col("age_hours") >= min_age_hours)
        return frame

    key = (
        "backlog",
        as_of,
        facilities,
        regions,
        products,
        min_age_hours,
        principal.regions,
        page,
        fmt,
    )
    return await drill_answer(store, gen, key, base, select, page, fmt, "backlog")
