"""``/healthz`` (alive), ``/readyz`` (data loaded) and ``/metrics`` (the API's own metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kpi.api.deps import StoreDep
from kpi.api.duty_desk import DutyDesk
from kpi.api.export import json_response
from kpi.api.metrics import ApiMetrics
from kpi.api.models import Health, Readiness
from kpi.sources.folder import unreadable_paths

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness (no key needed)")
async def healthz() -> Response:
    """The process answers."""
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Data not loaded (yet)"}},
    summary="Readiness: data loaded (no key needed)",
)
async def readyz(request: Request, store: StoreDep) -> Response:
    """200 once a data version is loaded; 503 while loading or after a failed first load.

    Readiness follows the data alone (the KPI routes, the API's main traffic, can
    answer); ``components`` also gives the duty desk's state, which opens after the
    server listens (``starting`` until its database is open: its routes answer 503).

    ``unreadable`` lists the files and folders that cannot be read (permissions): their
    rows are missing from every answer.
    """
    gen = store.gen
    unreadable = [f"{rel}: {why}" for rel, why in unreadable_paths(store.settings.data_dir)]
    desk: DutyDesk = request.app.state.duty_desk
    duty = {"status": desk.state, "detail": desk.error}
    if gen is None:
        status = "failed" if store.error else "loading"
        if store.error is None:
            store.start_load()
        components = {"data": {"status": status, "detail": store.error}, "duty_desk": duty}
        return json_response(
            {
                "status": status,
                "detail": store.error,
                "unreadable": unreadable,
                "components": components,
            },
            503,
        )
    store.ready_served = True
    return json_response(
        {
            "status": "ready",
            "data_version": gen.version,
            "as_of": gen.default.as_of,
            "loaded_at": gen.loaded_at,
            "items": gen.default.lifecycle.height,
            "detail": store.error,
            "unreadable": unreadable,
            "components": {"data": {"status": "ready", "detail": store.error}, "duty_desk": duty},
        }
    )


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition of the API's own registry."""
    metrics: ApiMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
