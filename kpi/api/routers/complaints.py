"""``GET /complaints``: complaint records (latest version of each), filtered and paged."""

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
from kpi.api.drill import (
    complaints_table,
    drill_answer,
    scope_filter,
    values_filter,
    window_filter,
)
from kpi.api.models import Category, ComplaintsPage, Instant
from kpi.kpis.query import Snapshot

router = APIRouter(tags=["drill-down"])


@router.get(
    "/complaints",
    response_model=ComplaintsPage,
    responses=TABULAR_RESPONSES,
    summary="Complaints, the most recently opened first",
    description=(
        "The latest version of every complaint opened at or before as_of. `open`: not "
        "resolved at as_of (the open_complaints KPI); `from`/`to` select by opening time."
    ),
)
async def get_complaints(
    store: StoreDep,
    gen: GenerationDep,
    principal: PrincipalDep,
    page: PagingDep,
    fmt: FormatDep,
    region: ListParam = None,
    category: Annotated[list[Category] | None, Query()] = None,
    product: ListParam = None,
    open: Annotated[bool | None, Query(description="only open (true) or closed (false)")] = None,
    valid: Annotated[bool | None, Query(description="operator responsibility established")] = None,
    start: Annotated[Instant | None, Query(alias="from", description="opened at or after")] = None,
    end: Annotated[Instant | None, Query(alias="to", description="opened before")] = None,
    as_of: Annotated[Instant | None, Query(description="snapshot instant")] = None,
) -> Response:
    """Complaints for a region, category, product and period."""
    regions, products = split(region), split(product)
    categories = tuple(category or ())

    async def base() -> tuple[Snapshot, pl.DataFrame]:
        snap = await store.snapshot(gen, as_of)
        table, _ = await store.compute(
            gen,
            gen.results,
            ("complaints", snap.as_of),
            lambda: complaints_table(snap),
            "the complaints table",
        )
        return snap, table

    def select(frame: pl.DataFrame) -> pl.DataFrame:
        frame = scope_filter(frame, principal, "region", "region", regions)
        frame = values_filter(frame, "region", "region", regions, gen.known)
        frame = values_filter(frame, "product", "product", products, gen.known)
        if categories:
            frame = frame.filter(pl.col("category").is_in(list(categories)))
        if open is not None:
            frame = frame.filter(pl.col("open") == open)
        if valid is not None:
            frame = frame.filter(pl.col("valid") == valid)
        return window_filter(frame, "opened_at", start, end)

    key = (
        "complaints",
        as_of,
        regions,
        products,
        categories,
        open,
        valid,
        start,
        end,
        principal.regions,
        page,
        fmt,
    )
    return await drill_answer(store, gen, key, base, select, page, fmt, "complaints")
