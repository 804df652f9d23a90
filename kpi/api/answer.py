"""A KPI answer as an HTTP response, shared by the routes that answer KPI questions.

Checked, computed (or taken from the cache), paged and rendered; plus the OpenAPI
responses of such a route.
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import Response

from kpi.api.deps import Principal, check_paging
from kpi.api.errors import ERROR_RESPONSES
from kpi.api.export import TABULAR_CONTENT, Rendered, columns_meta, render_page
from kpi.api.service import QuerySpec, answer, plan
from kpi.api.settings import Settings
from kpi.api.store import DataStore, Generation
from kpi.kpis.exprs import PERIOD

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
    snap = await store.kpi_snapshot(gen, spec.as_of)
    checked = plan(spec, snap, settings.limits, gen.known, gen.facility_region, scope)
    frame, _ = await store.compute(
        gen,
        gen.results,
        ("query", spec, scope),
        lambda: answer(snap, checked, settings.limits, store.engine(gen, snap)),
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
