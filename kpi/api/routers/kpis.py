"""``GET /kpis`` (the catalog) and ``GET /kpis/{name}`` (one KPI, query parameters)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Path, Query, Response

from kpi.api.answer import TABULAR_RESPONSES, kpi_answer
from kpi.api.deps import (
    FormatDep,
    GenerationDep,
    ListParam,
    PrincipalDep,
    SettingsDep,
    StoreDep,
    split,
)
from kpi.api.errors import ERROR_RESPONSES, bad_request, not_found
from kpi.api.export import FORMATS, json_response
from kpi.api.models import (
    MAX_LIMIT_SCHEMA,
    MAX_OFFSET,
    Catalog,
    Granularity,
    Instant,
    QueryResponse,
)
from kpi.api.service import OrderBy, QuerySpec
from kpi.kpis.catalog import ALL_DIMS, GRANULARITIES, KPI_BY_NAME, KPIS
from kpi.kpis.filters import Filter

router = APIRouter(tags=["kpis"])

DIMENSION_DOCS: Final = {
    "facility": "facility code (backlog: where the item waits; dwell: the facility departed"
    " from; last mile: the delivering office)",
    "facility_type": "collection, processing or delivery (from facilities.csv)",
    "product": "the item's (or complaint's) product, e.g. express, standard, economy",
    "origin": "the item's origin region",
    "destination": "the item's destination region",
    "region": "item KPIs: destination region; complaints: the complaint's region; "
    "backlog: the facility's region",
    "category": "complaint category",
    "from_facility": "leg KPIs: the facility the leg departed from",
    "to_facility": "leg KPIs: the facility the leg arrived at",
    "from_region": "leg KPIs: the region of the departure facility",
    "to_region": "leg KPIs: the region of the arrival facility",
}


def parse_order(values: list[str] | None) -> tuple[OrderBy, ...]:
    """``col``, ``col:asc``, ``col:desc`` or ``-col``, repeated or comma-separated."""
    out: list[OrderBy] = []
    for item in split(values):
        name, _, direction = item.partition(":")
        desc = name.startswith("-")
        name = name.removeprefix("-")
        if direction not in ("", "asc", "desc"):
            raise bad_request(
                f"order {item!r}: direction must be asc or desc, e.g. on_time_ratio:desc"
            )
        out.append(OrderBy(name, desc or direction == "desc"))
    return tuple(out)


@router.get(
    "/kpis",
    response_model=Catalog,
    responses={k: v for k, v in ERROR_RESPONSES.items() if k in (401, 403)},
    summary="The KPI catalog",
)
async def list_kpis(_: PrincipalDep) -> Response:
    """Every KPI with its unit, definition, dimensions and whether it is windowed."""
    body = {
        "kpis": [
            {
                "name": k.name,
                "unit": k.unit,
                "type": "number" if k.dtype == "float" else "integer",
                "family": k.family.value,
                "kind": "window" if k.windowed else "snapshot",
                "description": k.description,
                "dimensions": list(k.dimensions),
                "granularities": list(GRANULARITIES) if k.windowed else [],
            }
            for k in KPIS
        ],
        "dimensions": [{"name": d, "description": DIMENSION_DOCS[d]} for d in ALL_DIMS],
        "granularities": list(GRANULARITIES),
        "formats": list(FORMATS),
    }
    return json_response(body)


@router.get(
    "/kpis/{name}",
    response_model=QueryResponse,
    responses={**TABULAR_RESPONSES, 404: ERROR_RESPONSES[400] | {"description": "Unknown KPI"}},
    summary="One KPI, grouped, bucketed and filtered by query parameters",
    description=(
        "Same answer as `POST /query` with `measures=[name]`. Dimension parameters "
        "(`region=CN-GD,CN-BJ`, repeatable) keep rows whose value is one of those given; "
        "`order=on_time_ratio:desc`; timestamps need an offset (`+08:00` - encode `+` as "
        "`%2B` - or `Z`)."
    ),
)
async def get_kpi(
    name: Annotated[str, Path(examples=["on_time_ratio"])],
    store: StoreDep,
    gen: GenerationDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    fmt: FormatDep,
    by: Annotated[
        list[str] | None,
        Query(description="dimensions, repeated or comma-separated", examples=["destination"]),
    ] = None,
    granularity: Annotated[Granularity | None, Query(description="time buckets")] = None,
    tz: Annotated[str, Query(description="IANA time zone of the buckets", max_length=64)] = "UTC",
    start: Annotated[
        Instant | None, Query(alias="from", description="window start (inclusive)")
    ] = None,
    end: Annotated[Instant | None, Query(alias="to", description="window end (exclusive)")] = None,
    as_of: Annotated[Instant | None, Query(description="snapshot instant")] = None,
    facility: ListParam = None,
    facility_type: ListParam = None,
    product: ListParam = None,
    origin: ListParam = None,
    destination: ListParam = None,
    region: ListParam = None,
    category: ListParam = None,
    from_facility: ListParam = None,
    to_facility: ListParam = None,
    from_region: ListParam = None,
    to_region: ListParam = None,
    order: Annotated[
        list[str] | None, Query(description="col, col:desc or -col; repeated or comma-separated")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT_SCHEMA)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """One KPI for the given window, dimensions and filters."""
    if name not in KPI_BY_NAME:
        raise not_found(f"unknown KPI {name!r}; GET /api/v1/kpis lists the catalog")
    given = {
        "facility": facility,
        "facility_type": facility_type,
        "product": product,
        "origin": origin,
        "destination": destination,
        "region": region,
        "category": category,
        "from_facility": from_facility,
        "to_facility": to_facility,
        "from_region": from_region,
        "to_region": to_region,
    }
    filters = tuple(Filter(d, "in", split(v)) for d, v in given.items() if v is not None)
    spec = QuerySpec(
        measures=(name,),
        dimensions=split(by),
        granularity=granularity,
        tz=tz,
        start=start,
        end=end,
        as_of=as_of,
        filters=filters,
        order=parse_order(order),
    )
    return await kpi_answer(store, gen, settings, principal, spec, limit, offset, fmt, name)
