"""``GET /legs``: the items behind a route's leg times, the slowest first."""

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
from kpi.api.drill import drill_answer, values_filter, window_filter
from kpi.api.models import Instant, LegsPage
from kpi.kpis.query import Snapshot
from kpi.kpis.stages import slow_legs

router = APIRouter(tags=["drill-down"])


@router.get(
    "/legs",
    response_model=LegsPage,
    responses=TABULAR_RESPONSES,
    summary="Transport legs and their items, the slowest first",
    description=(
        "Every leg (an `arrived` scan and the item's latest earlier `departed` scan at "
        "another facility - the rule of the leg_* KPIs) arriving in [from, to), optionally "
        "on one route (`from_facility`, `to_facility`) or region pair, and at least "
        "`min_hours` long. A key limited to regions sees the legs that start or end in them."
    ),
)
async def get_legs(
    store: StoreDep,
    gen: GenerationDep,
    principal: PrincipalDep,
    page: PagingDep,
    fmt: FormatDep,
    from_facility: ListParam = None,
    to_facility: ListParam = None,
    from_region: ListParam = None,
    to_region: ListParam = None,
    min_hours: Annotated[float | None, Query(ge=0, description="legs at least this long")] = None,
    start: Annotated[Instant | None, Query(alias="from", description="arrived at or after")] = None,
    end: Annotated[Instant | None, Query(alias="to", description="arrived before")] = None,
    as_of: Annotated[Instant | None, Query(description="snapshot instant")] = None,
) -> Response:
    """Legs of a route or region pair, paged, the slowest first."""
    froms, tos = split(from_facility), split(to_facility)
    from_regions, to_regions = split(from_region), split(to_region)
    if principal.regions is not None:
        principal.check_regions("from_region", list(from_regions))
        principal.check_regions("to_region", list(to_regions))

    async def base() -> tuple[Snapshot, pl.DataFrame]:
        snap = await store.snapshot(gen, as_of)
        table, _ = await store.compute(
            gen,
            gen.results,
            ("legs", snap.as_of),
            lambda: slow_legs(snap.stages, snap.facilities),
            "the legs",
        )
        return snap, table

    def select(frame: pl.DataFrame) -> pl.DataFrame:
        if principal.regions is not None:
            scope = sorted(principal.regions)
            frame = frame.filter(
                pl.col("from_region").is_in(scope) | pl.col("to_region").is_in(scope)
            )
        frame = window_filter(frame, "arrived_at", start, end)
        if min_hours is not None:
            frame = frame.filter(pl.col("hours") >= min_hours)
        frame = values_filter(frame, "from_facility", "from_facility", froms, gen.known)
        frame = values_filter(frame, "to_facility", "to_facility", tos, gen.known)
        frame = values_filter(frame, "from_region", "from_region", from_regions, gen.known)
        return values_filter(frame, "to_region", "to_region", to_regions, gen.known)

    key = (
        "legs",
        as_of,
        froms,
        tos,
        from_regions,
        to_regions,
        min_hours,
        start,
        end,
        principal.regions,
        page,
        fmt,
    )
    return await drill_answer(store, gen, key, base, select, page, fmt, "legs")
