"""``POST /query``: a KPI question as a JSON body (measures, dimensions, filters, order)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from kpi.api.answer import TABULAR_RESPONSES, kpi_answer
from kpi.api.deps import (
    FormatDep,
    GenerationDep,
    PrincipalDep,
    SettingsDep,
    StoreDep,
)
from kpi.api.export import negotiate
from kpi.api.models import QueryBody, QueryResponse
from kpi.api.service import OrderBy, QuerySpec
from kpi.kpis.filters import Filter

router = APIRouter(tags=["kpis"])


@router.post(
    "/query",
    response_model=QueryResponse,
    responses=TABULAR_RESPONSES,
    summary="Ask a KPI question",
    description=(
        "Named measures grouped by dimensions, optionally bucketed in time, filtered, "
        "ordered and paged. Numbers are exactly those of `kpi report` for the same "
        "arguments; a filter `d = x` gives the rows `d = x` of the question also grouped "
        "by `d`. The answer format is `format` or the Accept header (JSON by default)."
    ),
)
async def post_query(
    body: Annotated[QueryBody, Body()],
    store: StoreDep,
    gen: GenerationDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    accept_fmt: FormatDep,
) -> Response:
    """Answer a KPI question given as a JSON body."""
    td = body.time_dimension
    spec = QuerySpec(
        measures=tuple(body.measures) or None,
        dimensions=tuple(body.dimensions),
        granularity=td.granularity if td else None,
        tz=td.tz if td else "UTC",
        start=body.from_,
        end=body.to,
        as_of=body.as_of,
        filters=tuple(Filter(f.dimension, f.op, tuple(f.values)) for f in body.filters),
        order=tuple(OrderBy(o.by, o.desc) for o in body.order),
    )
    fmt = negotiate(body.format, None) if body.format else accept_fmt
    return await kpi_answer(store, gen, settings, principal, spec, body.limit, body.offset, fmt)


__all__ = ["router"]
