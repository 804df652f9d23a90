"""Request and response models: what the OpenAPI schema documents, with examples."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from kpi.contract import COMPLAINT_CATEGORIES
from kpi.kpis.catalog import ALL_DIMS, KPIS

Format = Literal["json", "csv", "parquet", "arrow"]
Granularity = Literal["hour", "day", "week", "month"]
Category = Literal[COMPLAINT_CATEGORIES]  # type: ignore[valid-type]
MAX_OFFSET: Final = 1_000_000_000
MAX_LIMIT_SCHEMA: Final = 1_000_000  # the configured max_page_rows is checked on top
_SPACE_OFFSET: Final = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.,]+) (\d\d(?::?\d\d)?)$")
EXAMPLE_TS: Final = "2026-02-10T00:00:00+08:00"


def _parse_instant(value: Any) -> Any:
    """Parse an ISO 8601 timestamp that must carry a UTC offset; never guess a zone."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        # A '+' in a query string arrives as a space ("...T00:00:00 08:00").
        text = _SPACE_OFFSET.sub(r"\1+\2", value.strip())
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 timestamp; use e.g. {EXAMPLE_TS} or 2026-02-10T00:00:00Z"
            ) from None
    else:
        return value
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(
            f"timestamp {value!s} has no UTC offset; add one (e.g. +08:00 or Z): "
            "the API does not guess a time zone"
        )
    if not 1900 <= parsed.astimezone(dt.UTC).year <= 2200:
        raise ValueError(f"timestamp {value!s} is outside the years 1900-2200")
    return parsed


#: A timestamp with a UTC offset (ISO 8601); offset-less ones are rejected.
Instant = Annotated[AwareDatetime, BeforeValidator(_parse_instant)]


class FilterBody(BaseModel):
    """Keep rows whose dimension value is (op equals/in) or is not (op not_in) in ``values``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"dimension": "region", "op": "in", "values": ["CN-GD"]}]},
    )
    dimension: str = Field(description=f"one of {list(ALL_DIMS)}")
    op: Literal["equals", "in", "not_in"] = "in"
    values: list[str] = Field(min_length=1, max_length=1000)


class OrderBody(BaseModel):
    """Sort by one column of the answer (dimension, period or measure); nulls last."""

    model_config = ConfigDict(extra="forbid", strict=True)
    by: str
    desc: bool = False


class TimeDimension(BaseModel):
    """Bucket window KPIs into periods of a granularity, in a time zone."""

    model_config = ConfigDict(extra="forbid", strict=True)
    granularity: Granularity
    tz: str = Field(default="UTC", description="IANA time zone of the period boundaries")


class QueryBody(BaseModel):
    """A KPI question: named measures, dimensions, time buckets, filters, order, paging."""

    # Strict: `"offset": false` or `"limit": "10"` are mistakes to report, not to coerce.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "measures": ["on_time_ratio", "delivered_items"],
                    "dimensions": ["destination"],
                    "time_dimension": {"granularity": "day", "tz": "Asia/Shanghai"},
                    "from": "2026-02-01T00:00:00+08:00",
                    "to": "2026-03-01T00:00:00+08:00",
                    "filters": [{"dimension": "product", "op": "equals", "values": ["express"]}],
                    "order": [{"by": "on_time_ratio", "desc": False}],
                    "limit": 100,
                    "offset": 0,
                }
            ]
        },
    )
    measures: list[str] = Field(
        default_factory=list,
        max_length=len(KPIS),
        description="KPI names from GET /kpis; empty = every KPI that supports the dimensions",
    )
    dimensions: list[str] = Field(
        default_factory=list,
        max_length=len(ALL_DIMS),
        description=f"group by, from {list(ALL_DIMS)}",
    )
    time_dimension: TimeDimension | None = None
    from_: Instant | None = Field(
        default=None, alias="from", description="window start, inclusive (default: first event)"
    )
    to: Instant | None = Field(
        default=None, description="window end, exclusive (default: after as_of)"
    )
    as_of: Instant | None = Field(default=None, description="snapshot instant (default: the API's)")
    filters: list[FilterBody] = Field(default_factory=list, max_length=20)
    order: list[OrderBody] = Field(default_factory=list, max_length=10)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT_SCHEMA)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    format: Format | None = Field(default=None, description="overrides the Accept header")


Scalar = str | int | float | bool | None


class Column(BaseModel):
    """One column of a tabular answer."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "datetime"]
    unit: str | None = None
    role: Literal["dimension", "time", "measure", "attribute"]


class Page(BaseModel):
    """A page of a tabular answer; ``total`` counts every row, not just this page."""

    data: list[dict[str, Scalar]]
    columns: list[Column]
    total: int
    limit: int
    offset: int
    as_of: dt.datetime
    data_version: str


class QueryResponse(Page):
    """A KPI answer: dimension columns, ``period`` (time buckets), then one column per measure."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [
                        {
                            "destination": "CN-GD",
                            "period": "2026-02-10T00:00:00+08:00",
                            "on_time_ratio": 0.934,
                            "delivered_items": 1520,
                        }
                    ],
                    "columns": [
                        {
                            "name": "destination",
                            "type": "string",
                            "unit": None,
                            "role": "dimension",
                        },
                        {"name": "period", "type": "datetime", "unit": None, "role": "time"},
                        {
                            "name": "on_time_ratio",
                            "type": "number",
                            "unit": "ratio",
                            "role": "measure",
                        },
                        {
                            "name": "delivered_items",
                            "type": "integer",
                            "unit": "items",
                            "role": "measure",
                        },
                    ],
                    "total": 1,
                    "limit": 1000,
                    "offset": 0,
                    "as_of": "2026-02-20T23:59:00+00:00",
                    "data_version": "3f2a9c0d1e7b4a55",
                }
            ]
        }
    )


class BacklogRow(BaseModel):
    """An item waiting at a facility (last scan ``arrived`` or ``delivery_failed``)."""

    item_id: str
    facility: str | None
    facility_type: str | None
    region: str | None = Field(description="the facility's region")
    product: str | None
    destination: str | None
    last_event: str | None
    last_event_at: dt.datetime | None
    age_hours: float | None
    age_band: str | None
    promised_by: dt.datetime | None
    overdue: bool | None


class BacklogPage(Page):
    """Waiting items, oldest first."""

    data: list[BacklogRow]  # type: ignore[assignment]


class LateItemRow(BaseModel):
    """A delivered-late or overdue item."""

    item_id: str
    kind: Literal["delivered_late", "overdue"]
    product: str | None
    origin: str | None
    destination: str | None
    accepted_at: dt.datetime | None
    promised_by: dt.datetime | None
    delivered_at: dt.datetime | None
    late_hours: float = Field(description="delivered_at (or as_of when overdue) - promised_by")
    last_event: str | None
    last_event_at: dt.datetime | None
    last_facility: str | None


class LateItemsPage(Page):
    """Late items, the latest first."""

    data: list[LateItemRow]  # type: ignore[assignment]


class ComplaintRow(BaseModel):
    """The latest version of a complaint, with its state at as_of."""

    complaint_id: str
    opened_at: dt.datetime
    category: str
    item_id: str | None
    region: str
    product: str | None
    valid: bool | None
    resolved_at: dt.datetime | None
    updated_at: dt.datetime | None
    open: bool = Field(description="not resolved at as_of")
    overdue: bool = Field(description="open and opened more than 7 days before as_of")


class ComplaintsPage(Page):
    """Complaints, the most recently opened first."""

    data: list[ComplaintRow]  # type: ignore[assignment]


class ItemEvent(BaseModel):
    """One scan of an item."""

    event_id: str
    event: str
    ts: dt.datetime
    facility: str
    facility_region: str | None
    reason: str | None


class ItemResponse(BaseModel):
    """An item's lifecycle at as_of and its timeline."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "EE123456785CN",
                    "product": "express",
                    "origin": "CN-BJ",
                    "destination": "CN-GD",
                    "accepted_at": "2026-02-10T09:00:00+00:00",
                    "promised_by": "2026-02-12T15:59:59.999999+00:00",
                    "first_attempt_at": "2026-02-12T03:00:00+00:00",
                    "first_attempt_outcome": "delivered",
                    "delivered_at": "2026-02-12T03:00:00+00:00",
                    "returned_at": None,
                    "status": "delivered",
                    "late": False,
                    "late_hours": None,
                    "overdue": False,
                    "last_event": "delivered",
                    "last_event_at": "2026-02-12T03:00:00+00:00",
                    "last_facility": "GZ-D01",
                    "events": [],
                    "as_of": "2026-02-20T00:00:00+00:00",
                    "data_version": "3f2a9c0d1e7b4a55",
                }
            ]
        }
    )
    item_id: str
    product: str | None
    origin: str | None
    destination: str | None
    accepted_at: dt.datetime | None
    promised_by: dt.datetime | None
    first_attempt_at: dt.datetime | None
    first_attempt_outcome: str | None
    delivered_at: dt.datetime | None
    returned_at: dt.datetime | None
    status: Literal["in_network", "delivered", "returned"]
    late: bool | None = Field(description="delivered after promised_by; null when not judged")
    late_hours: float | None
    overdue: bool = Field(description="not finished and promised_by before as_of")
    last_event: str | None
    last_event_at: dt.datetime | None
    last_facility: str | None
    events: list[ItemEvent]
    as_of: dt.datetime
    data_version: str


class KpiInfo(BaseModel):
    """One KPI of the catalog."""

    name: str
    unit: str
    type: Literal["integer", "number"]
    family: str
    kind: Literal["window", "snapshot"] = Field(
        description="window: measured over [from, to), can have time buckets; snapshot: at as_of"
    )
    description: str
    dimensions: list[str]
    granularities: list[str]


class DimensionInfo(BaseModel):
    """A dimension and what it means."""

    name: str
    description: str


class Catalog(BaseModel):
    """Every KPI, dimension, granularity and export format the API knows."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kpis": [
                        {
                            "name": "on_time_ratio",
                            "unit": "ratio",
                            "type": "number",
                            "family": "flow",
                            "kind": "window",
                            "description": "on_time_items / delivered items ...",
                            "dimensions": ["product", "origin", "destination", "region"],
                            "granularities": ["hour", "day", "week", "month"],
                        }
                    ],
                    "dimensions": [{"name": "region", "description": "..."}],
                    "granularities": ["hour", "day", "week", "month"],
                    "formats": ["json", "csv", "parquet", "arrow"],
                }
            ]
        }
    )
    kpis: list[KpiInfo]
    dimensions: list[DimensionInfo]
    granularities: list[str]
    formats: list[str]


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class Component(BaseModel):
    """One part of the service and where it stands."""

    status: Literal["ready", "loading", "starting", "failed", "off"]
    detail: str | None = None


class Readiness(BaseModel):
    """Readiness: ready once a data version is loaded (the KPI routes can answer)."""

    status: Literal["ready", "loading", "failed"]
    data_version: str | None = None
    as_of: dt.datetime | None = None
    loaded_at: dt.datetime | None = None
    items: int | None = None
    detail: str | None = None
    #: Files or folders of the data folder that cannot be read (left out of every answer).
    unreadable: list[str] = []
    #: Each component's state: ``data`` (what ``status`` follows) and ``duty_desk`` (the
    #: incident register, opened after the server listens: its routes answer 503 until then).
    components: dict[str, Component] = {}


class ReloadResponse(BaseModel):
    """The data version after an admin-triggered reload."""

    data_version: str
    changed: bool
    items: int


class LegRow(BaseModel):
    """One transport leg of an item (an arrival and the latest earlier departure elsewhere)."""

    item_id: str
    from_facility: str
    to_facility: str
    from_region: str | None
    to_region: str | None
    departed_at: dt.datetime
    arrived_at: dt.datetime
    hours: float = Field(description="arrived_at - departed_at, in hours")


class LegsPage(Page):
    """Legs, the slowest first."""

    data: list[LegRow]  # type: ignore[assignment]
