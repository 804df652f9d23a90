"""``POST /query``: a KPI question as a JSON body (measures, dimensions, filters, order)."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Response

from kpi.api.deps import (
    FormatDep,
    GenerationDep,
    Principal,
    PrincipalDep,
    SettingsDep,
    StoreDep,
    check_paging,
)
from kpi.api.errors import ERROR_RESPONSES
from kpi.api.export import TABULAR_CONTENT, Rendered, columns_meta, negotiate, render_page
from kpi.api.models import QueryBody, QueryResponse
from kpi.api.service import Filter, OrderBy, QuerySpec, answer, plan
from kpi.api.settings import Settings
from kpi.api.store import DataStore, Generation
from kpi.kpis.exprs import PERIOD

router = APIRouter(tags=["kpis"])

TABULAR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {"content": TABULAR_CONTENT, "description": "The answer (JSON, CSV, Parquet or Arrow)"},
}


async def kpi_answer(
    store: DataStore,
    gen: Generation,
    settings: Settings,
    principal: Principal,
    spec: QuerySpec,
    limit: int | None,
    offset: int,
    fmt: str,
    name: str = "kpis",
) -> Response:
    """Check, compute (or take from the cache), page and render a KPI question."""
    page = check_paging(settings, limit, offset)
    scope = principal.regions
    # Rendered pages are cached too: a repeated question costs a lookup, not a serialisation.
    page_key = ("page", name, spec, scope, page.limit, page.offset, fmt)
    hit = store.cached(gen, page_key)
    if hit is not None:
        return cast(Rendered, hit).response()
    snap = await store.snapshot(gen, spec.as_of)
    checked = plan(spec, snap, settings.limits, gen.known, gen.facility_region, scope)
    frame, _ = await store.compute(
        gen,
        gen.results,
        ("query", spec, scope),
        lambda: answer(snap, checked, settings.limits),
        "the KPI query",
    )
    roles: dict[str, Any] = {d: "dimension" for d in spec.dimensions} | {PERIOD: "time"}
    roles |= {k.name: "measure" for k in checked.kpis}
    units = {k.name: k.unit for k in checked.kpis}

    def build() -> Rendered:
        return render_page(
            frame.slice(page.offset, page.limit),
            fmt,
            columns=columns_meta(frame, roles, units),
            total=frame.height,
            limit=page.limit,
            offset=page.offset,
            as_of=snap.as_of,
            data_version=gen.version,
            name=name,
        )

    rendered, _ = await store.compute(gen, gen.results, page_key, build, "rendering", count=True)
    return rendered.response()


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


__all__ = ["TABULAR_RESPONSES", "kpi_answer", "router"]
