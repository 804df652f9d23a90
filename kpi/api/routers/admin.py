"""Admin-only operations (role ``admin``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from kpi.api.deps import AdminDep, GenerationDep, StoreDep
from kpi.api.errors import ERROR_RESPONSES, ApiError
from kpi.api.export import json_response
from kpi.api.models import ReloadResponse

router = APIRouter(tags=["admin"])


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={k: ERROR_RESPONSES[k] for k in (401, 403, 503)},
    summary="Re-check the data folder now and load it when it changed",
)
async def reload(_: AdminDep, store: StoreDep) -> Response:
    """Force the folder check (instead of waiting for the watch interval); waits for the load."""
    before = store.gen.version if store.gen else None
    gen = await store.reload()
    if gen is None:
        raise ApiError(503, store.error or "the data could not be loaded")
    return json_response(
        {
            "data_version": gen.version,
            "changed": gen.version != before,
            "items": gen.default.lifecycle.height,
        }
    )


@router.delete(
    "/admin/cache",
    response_model=ReloadResponse,
    responses={k: ERROR_RESPONSES[k] for k in (401, 403, 503)},
    summary="Drop cached answers and extra snapshots of the current data version",
)
async def clear_cache(_: AdminDep, gen: GenerationDep) -> Response:
    """Forget cached answers (e.g. before measuring cold latency); the data stays loaded."""
    gen.results.clear()
    gen.snapshots.clear()
    return json_response(
        {"data_version": gen.version, "changed": False, "items": gen.default.lifecycle.height}
    )
