"""The duty desk over HTTP: Alertmanager's webhook, the incident register, duty actions, the report.

Readers see incidents of their regions; keys with the ``duty`` (or ``admin``) role act
on them. Alertmanager authenticates with a bearer token of its own (``webhook_tokens``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import polars as pl
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kpi.api.deps import ListParam, PrincipalDep, SettingsDep, StoreDep, _bearer, split
from kpi.api.duty_desk import DutyDesk
from kpi.api.errors import ERROR_RESPONSES, ApiError, Problem, forbidden
from kpi.api.models import Instant
from kpi.api.store import DataStore, Generation
from kpi.duty.report import FORMATS, daily_report, day_window, render
from kpi.duty.terms import CAUSES, STATUSES, DutyError, Episode
from kpi.duty.webhook import WebhookAlert, WebhookPayload
from kpi.kpis.query import Snapshot

if TYPE_CHECKING:
    # SQLAlchemy and Alembic load with the duty desk (``kpi.api.app``), not with the routes.
    from kpi.duty.register import IncidentRegister

log = logging.getLogger("kpi.api.duty")
#: Seconds the webhook waits for the KPI values at opening before recording without them.
KPI_BUDGET_SECONDS: Final = 10.0
router = APIRouter(tags=["incidents"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {"model": Problem, "description": "The key may not see this region or act on incidents."},
    404: {"model": Problem, "description": "No such incident (or not in the key's regions)."},
    409: {"model": Problem, "description": "Already done: acknowledged or closed before."},
    503: {
        "model": Problem,
        "description": "The duty desk has no database configured, or it is still opening"
        " (with Retry-After), or it could not be opened.",
    },
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    # 400 (an unreadable body) and 422 (a malformed parameter) can answer any route.
    return {k: _ERRORS[k] for k in sorted({*codes, 400, 422})}


#: Incident ids are PostgreSQL INTEGERs; larger ones are a 422, not a database error.
IncidentId = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="incident id")]


# --- models (documentation and validation of answers) ------------------------------------


class TimelineEntry(BaseModel):
    """One thing that happened to an incident."""

    at: dt.datetime
    kind: str = Field(description="opened, resolved, acknowledged, note, handover or closed")
    by: str = Field(description="alertmanager, or the name of the key that acted")
    text: str | None = None


class Incident(BaseModel):
    """One alert episode on record."""

    id: int
    status: str = Field(description="open, acknowledged (open and seen), resolved or closed")
    fingerprint: str
    starts_at: dt.datetime
    previous_id: int | None = Field(description="the same alert's previous episode")
    alertname: str
    severity: str | None
    facility: str | None
    region: str | None = Field(description="the alert's region, else its destination label")
    product: str | None
    summary: str | None
    description: str | None
    runbook_url: str | None
    labels: dict[str, str]
    kpis: dict[str, Any] | None = Field(description="the engine's KPI values at starts_at")
    resolved_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    closed_at: dt.datetime | None
    closed_by: str | None
    cause: str | None
    recorded_at: dt.datetime


class IncidentDetail(Incident):
    """An incident with its timeline."""

    next_id: int | None = Field(description="the same alert's next episode")
    timeline: list[TimelineEntry]


class IncidentPage(BaseModel):
    """A page of incidents, newest first."""

    total: int
    limit: int
    offset: int
    rows: list[Incident]


class WebhookResult(BaseModel):
    """What one Alertmanager notification changed (re-sends change nothing)."""

    opened: list[int]
    resolved: list[int]
    unchanged: list[int]


class AckBody(BaseModel):
    """Acknowledge an incident."""

    note: str | None = Field(default=None, max_length=10_000)


class NoteBody(BaseModel):
    """A note for an incident's timeline."""

    text: str = Field(min_length=1, max_length=10_000)


class CloseBody(BaseModel):
    """Close an incident under a cause category."""

    cause: Literal[CAUSES] = Field(description="cause category")  # type: ignore[valid-type]
    note: str | None = Field(default=None, max_length=10_000)


class HandoverBody(BaseModel):
    """The outgoing shift's note."""

    note: str = Field(min_length=1, max_length=20_000)


class Handover(BaseModel):
    """A shift handover with the incidents open at that moment."""

    id: int
    at: dt.datetime
    by: str
    note: str
    open: list[Incident]


class ReportRow(BaseModel):
    """One region and severity of the daily duty report (``all``/``all``: the day's total)."""

    date: str
    region: str
    severity: str
    opened: int
    resolved: int
    acknowledged: int
    mean_minutes_to_acknowledge: float | None
    max_minutes_to_acknowledge: float | None
    mean_minutes_to_resolve: float | None
    max_minutes_to_resolve: float | None
    open_at_end_of_day: int
    unacknowledged_at_end_of_day: int


class DutyReport(BaseModel):
    """The daily duty report."""

    date: str
    tz: str
    start: dt.datetime
    end: dt.datetime
    rows: list[ReportRow]


# --- dependencies --------------------------------------------------------------------------


async def get_register(request: Request) -> IncidentRegister:
    """The app's incident register (503 while it opens, when it failed, or without a database)."""
    desk: DutyDesk = request.app.state.duty_desk
    return desk.require()


if TYPE_CHECKING:
    RegisterDep = Annotated[IncidentRegister, Depends(get_register)]
else:  # FastAPI needs no class of a dependency's value, and the register's is not imported
    RegisterDep = Annotated[Any, Depends(get_register)]


async def require_duty(principal: PrincipalDep) -> Any:
    """403 unless the key may act on incidents (role ``duty`` or ``admin``)."""
    if not principal.role.acts_on_duty:
        raise forbidden(
            f"key {principal.name!r} has role {principal.role.value}; acting on incidents "
            "needs the duty role"
        )
    return principal


DutyDep = Annotated[Any, Depends(require_duty)]


async def authenticate_alertmanager(
    request: Request,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The sender's name: a webhook token, or a duty/admin API key; anyone when no keys exist."""
    if not settings.webhook_auth_enabled:
        request.state.principal_name = "anonymous"
        return "anonymous"
    challenge = {"WWW-Authenticate": 'Bearer realm="postal-kpi"'}
    if bearer is None or not bearer.credentials:
        raise ApiError(
            401,
            "the webhook needs Authorization: Bearer <token> (Alertmanager: "
            "http_config.authorization.credentials_file)",
            challenge,
        )
    digest = hashlib.sha256(bearer.credentials.encode()).hexdigest()
    name = next((t.name for t in settings.webhook_tokens if t.sha256 == digest), None)
    if name is None:
        key = request.app.state.keys_by_hash.get(digest)
        if key is not None and key.role.acts_on_duty:
            name = key.name
    if name is None:
        raise ApiError(401, "unknown webhook token", challenge)
    request.state.principal_name = name
    return name


def _duty_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except DutyError as exc:
        raise ApiError(exc.status, exc.detail) from None


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking register call in the thread pool, its DutyError as an API error."""
    return await run_in_threadpool(_duty_call, fn, *args, **kwargs)


# --- KPI values at opening -------------------------------------------------------------------


async def opening_kpis(store: DataStore, alert: WebhookAlert) -> dict[str, Any]:
    """The engine's backlog figures for the alert's facility (or region) at ``startsAt``."""
    # Never a reason to lose the incident: a failure is recorded in place of the values.
    facility = alert.labels.get("facility")
    region = alert.labels.get("region")
    out: dict[str, Any] = {"as_of": alert.startsAt.astimezone(dt.UTC).isoformat()}
    if not facility and not region:
        return out

    async def compute() -> tuple[Generation, Snapshot, pl.DataFrame]:
        gen = await store.current()
        snap = await store.snapshot(gen, alert.startsAt)
        return gen, snap, await store.waiting(gen, snap)

    try:
        # Alertmanager gives up on a slow webhook and sends again: past the budget the
        # incident is recorded without the values (the computation goes on and is cached).
        gen, snap, waiting = await asyncio.wait_for(compute(), KPI_BUDGET_SECONDS)
    except TimeoutError:
        out["error"] = f"KPI values not computed within {KPI_BUDGET_SECONDS:g} s"
        return out
    except ApiError as exc:
        out["error"] = exc.detail
        return out
    except Exception as exc:  # the register must not depend on the engine answering
        log.exception("KPI values at opening failed")
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    out["data_version"] = gen.version
    if facility:
        here = waiting.filter(pl.col("last_facility") == facility)
        fac = gen.dataset.facilities.filter(pl.col("facility") == facility)
        threshold = fac["backlog_threshold"][0] if fac.height else None
        out.update(facility=facility, backlog_threshold=threshold)
    else:
        here = waiting.filter(pl.col("facility_region") == region)
        out["region"] = region
    out["backlog_items"] = here.height
    out["backlog_oldest_hours"] = (
        round(float(here["age_hours"].max()), 3) if here.height else None  # type: ignore[arg-type]
    )
    out["backlog_overdue_items"] = (
        int(here.filter(pl.col("promised_by") < snap.as_of).height) if here.height else 0
    )
    return out


# --- routes ---------------------------------------------------------------------------------


@router.post(
    "/incidents/alertmanager",
    response_model=WebhookResult,
    responses=_responses(401, 422, 503),
    summary="Alertmanager webhook (payload version 4): one incident per alert episode",
    description=(
        "Point an Alertmanager `webhook_configs` receiver here, with `send_resolved: true` "
        "and `http_config.authorization` carrying a token from `webhook_tokens`. Each alert "
        "fingerprint and `startsAt` is one incident: re-sends are idempotent, the resolved "
        "notification sets `resolved_at` to `endsAt`, a re-fired alert opens a new incident "
        "linked to the previous one. A malformed payload is rejected whole (422) and changes "
        "nothing."
    ),
)
async def alertmanager_webhook(
    payload: WebhookPayload,
    sender: Annotated[str, Depends(authenticate_alertmanager)],
    register: RegisterDep,
    store: StoreDep,
) -> WebhookResult:
    """Record the notification's alerts."""
    new = await _run(register.unknown_episodes, payload)
    kpis: dict[Episode, dict[str, Any]] = {}
    for alert in new:
        kpis[(alert.fingerprint, alert.startsAt)] = await opening_kpis(store, alert)
    done = await _run(register.record, payload, kpis)
    if done.opened or done.resolved:
        log.info(
            "webhook from %s (%s): opened %s resolved %s",
            sender,
            payload.receiver,
            done.opened,
            done.resolved,
        )
    return WebhookResult(opened=done.opened, resolved=done.resolved, unchanged=done.unchanged)


@router.get(
    "/incidents",
    response_model=IncidentPage,
    responses=_responses(400, 401, 403, 422, 503),
    summary="Incidents open at some time in [from, to), newest first",
)
async def list_incidents(
    principal: PrincipalDep,
    register: RegisterDep,
    status: Annotated[str | None, Query(description=f"one of {', '.join(STATUSES)}")] = None,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Annotated[Instant | None, Query()] = None,
    region: ListParam = None,
    facility: ListParam = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> IncidentPage:
    """Filter by status, window, region and facility (a region-scoped key sees its regions)."""
    regions = split(region)
    principal.check_regions("region", list(regions))
    rows, total = await _run(
        register.search,
        status=status,
        start=from_,
        end=to,
        region=regions,
        facility=split(facility),
        regions=principal.regions,
        limit=limit,
        offset=offset,
    )
    return IncidentPage(
        total=total, limit=limit, offset=offset, rows=[Incident.model_validate(r) for r in rows]
    )


@router.get(
    "/incidents/report",
    response_model=DutyReport,
    responses={
        **_responses(400, 401, 422, 503),
        200: {"content": {"text/csv": {}, "text/markdown": {}}},
    },
    summary="Daily duty report: opened, resolved, time to acknowledge and resolve, open at end",
)
async def duty_report(
    principal: PrincipalDep,
    register: RegisterDep,
    date: Annotated[str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="the day (YYYY-MM-DD)")],
    tz: Annotated[str, Query(description="time zone the day is counted in")] = "UTC",
    format: Annotated[Literal["json", "csv", "md"], Query()] = "json",
) -> Any:
    """The day's report by region and severity (a region-scoped key: its regions only)."""
    try:
        day = dt.date.fromisoformat(date)
    except ValueError as exc:
        raise ApiError(422, f"query.date: not a day: {date!r}") from exc
    try:
        start, end = day_window(day, tz)
    except (KeyError, ValueError) as exc:
        raise ApiError(400, f"unknown time zone {tz!r}") from exc
    incidents = await _run(register.overlapping, start, end, principal.regions)
    rows = daily_report(incidents, day, tz)
    if format != "json":
        assert format in FORMATS
        media = "text/csv" if format == "csv" else "text/markdown"
        return Response(render(rows, format), media_type=f"{media}; charset=utf-8")
    return DutyReport(
        date=day.isoformat(),
        tz=tz,
        start=start,
        end=end,
        rows=[ReportRow.model_validate(r) for r in rows],
    )


@router.post(
    "/incidents/handover",
    response_model=Handover,
    responses=_responses(401, 403, 422, 503),
    summary="Hand the shift over: a note listing every open incident",
)
async def handover(principal: DutyDep, register: RegisterDep, body: HandoverBody) -> Handover:
    """Record the handover; it lands on each open incident's timeline."""
    out = await _run(register.handover, principal.name, body.note, principal.regions)
    return Handover.model_validate(out)


@router.get(
    "/incidents/{incident_id:int}",
    response_model=IncidentDetail,
    responses=_responses(401, 404, 503),
    summary="One incident with its timeline",
)
async def get_incident(
    incident_id: IncidentId, principal: PrincipalDep, register: RegisterDep
) -> IncidentDetail:
    """The incident, its timeline and the neighbouring episodes."""
    return IncidentDetail.model_validate(await _run(register.get, incident_id, principal.regions))


@router.post(
    "/incidents/{incident_id:int}/acknowledge",
    response_model=IncidentDetail,
    responses=_responses(401, 403, 404, 409, 503),
    summary="Acknowledge an incident (who: the key's name; when: now)",
)
async def acknowledge(
    incident_id: IncidentId, principal: DutyDep, register: RegisterDep, body: AckBody | None = None
) -> IncidentDetail:
    """409 when someone already acknowledged it."""
    note = body.note if body else None
    out = await _run(register.acknowledge, incident_id, principal.name, note, principal.regions)
    return IncidentDetail.model_validate(out)


@router.post(
    "/incidents/{incident_id:int}/notes",
    response_model=IncidentDetail,
    responses=_responses(401, 403, 404, 422, 503),
    summary="Add a note to an incident's timeline",
)
async def add_note(
    incident_id: IncidentId, principal: DutyDep, register: RegisterDep, body: NoteBody
) -> IncidentDetail:
    """The note is kept with the key's name and the time."""
    out = await _run(register.note, incident_id, principal.name, body.text, principal.regions)
    return IncidentDetail.model_validate(out)


@router.post(
    "/incidents/{incident_id:int}/close",
    response_model=IncidentDetail,
    responses=_responses(401, 403, 404, 409, 422, 503),
    summary="Close an incident under a cause category",
)
async def close(
    incident_id: IncidentId, principal: DutyDep, register: RegisterDep, body: CloseBody
) -> IncidentDetail:
    """409 when it is already closed."""
    out = await _run(
        register.close, incident_id, principal.name, body.cause, body.note, principal.regions
    )
    return IncidentDetail.model_validate(out)
