"""``GET /items/{item_id}``: one item's lifecycle and its timeline of scans."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Path, Query, Response

from kpi.api.deps import GenerationDep, PrincipalDep, StoreDep
from kpi.api.errors import ERROR_RESPONSES, forbidden, not_found
from kpi.api.export import json_response
from kpi.api.models import Instant, ItemResponse
from kpi.kpis.exprs import US_PER_HOUR

router = APIRouter(tags=["drill-down"])


def _status(row: dict[str, Any]) -> str:
    if row["delivered_at"] is not None:
        return "delivered"
    if row["returned_at"] is not None:
        return "returned"
    return "in_network"


@router.get(
    "/items/{item_id}",
    response_model=ItemResponse,
    responses={**ERROR_RESPONSES, 404: ERROR_RESPONSES[400] | {"description": "Unknown item"}},
    summary="An item's lifecycle and timeline",
)
async def get_item(
    item_id: Annotated[str, Path(min_length=1, max_length=64, examples=["EE123456785CN"])],
    store: StoreDep,
    gen: GenerationDep,
    principal: PrincipalDep,
    as_of: Annotated[Instant | None, Query(description="state at this instant")] = None,
) -> Response:
    """Scans in order (with each facility's region) and the lifecycle fields at as_of."""
    snap = await store.snapshot(gen, as_of)
    events = gen.item_events(item_id, snap.as_of)
    rows = snap.lifecycle.filter(pl.col("item_id") == item_id)
    if rows.is_empty() or events.is_empty():
        raise not_found(f"no item {item_id!r} with scans at or before {snap.as_of.isoformat()}")
    item = rows.row(0, named=True)
    if not principal.sees_region(item["destination"]):
        raise forbidden(
            f"item {item_id!r} is bound for a region outside your key's regions "
            f"{sorted(principal.regions or ())}"
        )
    promised, delivered = item["promised_by"], item["delivered_at"]
    judged = item["accepted_at"] is not None and promised is not None and delivered is not None
    overdue = not item["finished"] and promised is not None and promised < snap.as_of
    late_hours = None
    if judged:
        late_hours = _hours(delivered - promised)
    elif overdue:
        late_hours = _hours(snap.as_of - promised)
    timeline = events.select(
        "event_id",
        pl.col("event").cast(pl.String),
        "ts",
        "facility",
        pl.col("facility")
        .replace_strict(gen.facility_region, default=None, return_dtype=pl.String)
        .alias("facility_region"),
        "reason",
    )
    body = {
        "item_id": item_id,
        **{k: item[k] for k in ("product", "origin", "destination", "accepted_at", "promised_by")},
        "first_attempt_at": item["first_attempt_at"],
        "first_attempt_outcome": _str(item["first_attempt_outcome"]),
        "delivered_at": delivered,
        "returned_at": item["returned_at"],
        "status": _status(item),
        "late": (delivered > promised) if judged else None,
        "late_hours": late_hours,
        "overdue": overdue,
        "last_event": _str(item["last_event"]),
        "last_event_at": item["last_event_at"],
        "last_facility": item["last_facility"],
        "events": timeline.to_dicts(),
        "as_of": snap.as_of,
        "data_version": gen.version,
    }
    return json_response(body)


def _hours(delta: dt.timedelta) -> float:
    # Same arithmetic as the KPI functions (microseconds / 3.6e9), so thresholds agree.
    return (delta // dt.timedelta(microseconds=1)) / US_PER_HOUR


def _str(value: object) -> str | None:
    return None if value is None else str(value)
