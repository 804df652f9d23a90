"""The analyst API: ``create_app(settings)`` builds the FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from kpi.api import signed_links
from kpi.api.deps import authenticate
from kpi.api.errors import ApiError
from kpi.api.metrics import ApiMetrics, MetricsMiddleware
from kpi.api.routers import (
    admin,
    backlog,
    complaints,
    health,
    items,
    kpis,
    late_items,
    links,
    query,
    runbooks,
)
from kpi.api.settings import Settings
from kpi.api.store import DataStore

API_PREFIX = "/api/v1"
DESCRIPTION = """\
Exact service-quality KPIs of a postal/express network, the same numbers as
`kpi report`: named measures, dimensions, time buckets in any time zone, filters,
order, paging with a total, and CSV / Parquet / Arrow export; plus drill-downs to
the backlog, late items, complaints and single items.

Authentication: `X-API-Key: <key>` or `Authorization: Bearer <key>` when keys are
configured. A key limited to regions sees only those regions' rows and items.
Timestamps are ISO 8601 with a UTC offset (`Z` or `+08:00`); offset-less ones are
rejected. Every answer carries `data_version` (changes when new data is loaded)
and `as_of`.
"""


def _problem(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _problem(exc.status, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        return _problem(422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def _install_docs(app: FastAPI, settings: Settings) -> None:
    """Docs behind the API key when the settings say so (the default keeps them open)."""
    guard = [Depends(authenticate)]

    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    deps = guard if settings.docs_require_key else []
    app.add_api_route("/openapi.json", openapi_json, include_in_schema=False, dependencies=deps)
    app.add_api_route("/docs", swagger, include_in_schema=False, dependencies=deps)
    app.add_api_route("/redoc", redoc, include_in_schema=False, dependencies=deps)


def create_app(settings: Settings, *, wait_for_data: bool = False) -> FastAPI:
    """The API over ``settings.data_dir``; ``wait_for_data`` makes startup wait for the first load."""
    # Without wait_for_data the load runs in the background: /readyz is 503 until it is
    # done and data requests wait for it up to the request timeout.
    metrics = ApiMetrics.create()
    store = DataStore(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = store.start_load()
        if wait_for_data:
            await task
        yield

    app = FastAPI(
        title="Postal service-quality KPI API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.keys_by_hash = {k.sha256: k for k in settings.api_keys}
    _install_error_handlers(app)
    _install_docs(app, settings)
    for module in (kpis, query, items, backlog, late_items, complaints, admin, links):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(signed_links.router)
    app.include_router(
        runbooks.router,
        dependencies=[Depends(authenticate)] if settings.docs_require_key else [],
    )
    app.include_router(health.router)
    app.include_router(health.router, prefix=API_PREFIX, include_in_schema=False)
    app.add_api_route(
        "/metrics",
        health.metrics_endpoint,
        include_in_schema=False,
        dependencies=[Depends(authenticate)] if settings.metrics_require_key else [],
        response_class=Response,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, prefixes=(API_PREFIX,))
    return app
