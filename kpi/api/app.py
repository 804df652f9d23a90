"""The analyst API: ``create_app(settings)`` builds the FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import fastapi_offline
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kpi.api import signed_links
from kpi.api.audit import AuditMiddleware
from kpi.api.deps import authenticate
from kpi.api.duty_desk import DutyDesk
from kpi.api.errors import ApiError
from kpi.api.metrics import ApiMetrics, MetricsMiddleware
from kpi.api.routers import (
    admin,
    backlog,
    complaints,
    health,
    incidents,
    items,
    kpis,
    late_items,
    legs,
    links,
    query,
    runbooks,
)
from kpi.api.settings import Settings
from kpi.api.store import SETTLE_SECONDS, DataStore

if TYPE_CHECKING:
    from distributed import Client

    from kpi.lake_snapshot import LakeStart

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


#: Where the docs pages' scripts and styles are served from (no CDN: air-gapped networks).
DOCS_ASSETS: Final = "/docs-assets"
#: The docs pages may load from this API only: ReDoc's sidebar would otherwise fetch its
#: vendor's logo from the internet (inline scripts: the pages' own bootstrap code).
DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def _install_docs(app: FastAPI, settings: Settings) -> None:
    """Docs behind the API key when the settings say so (the default keeps them open)."""
    guard = [Depends(authenticate)]
    # Swagger UI and ReDoc ship inside the fastapi-offline wheel: the pages work on a
    # machine that reaches nothing but this API.
    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def swagger() -> HTMLResponse:
        return _offline(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title=f"{app.title} - docs",
                swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                # "Authorize" keeps the key across page reloads of this browser tab.
                swagger_ui_parameters={"persistAuthorization": True},
            )
        )

    async def redoc() -> HTMLResponse:
        return _offline(
            get_redoc_html(
                openapi_url="/openapi.json",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )

    deps = guard if settings.docs_require_key else []
    app.add_api_route("/openapi.json", openapi_json, include_in_schema=False, dependencies=deps)
    app.add_api_route("/docs", swagger, include_in_schema=False, dependencies=deps)
    app.add_api_route("/redoc", redoc, include_in_schema=False, dependencies=deps)


def _lifespan(
    store: DataStore,
    desk: DutyDesk,
    metrics: ApiMetrics,
    *,
    wait_for_data: bool,
    duty_in_background: bool,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up and shutdown: the first load, the duty desk's register."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The data loads in the background; the duty desk opens (importing SQLAlchemy,
        # and Alembic when it migrates) before the server listens, or once it is ready.
        task = store.start_load()
        if duty_in_background:
            # A folder's load may take many seconds: the desk then opens beside it.
            desk.open_in_background(metrics, after=lambda: store.settled(SETTLE_SECONDS))
        else:
            try:
                await desk.open(metrics)
            except BaseException:
                task.cancel()
                raise
        if wait_for_data:
            await task
        try:
            yield
        finally:
            await desk.close()

    return lifespan


def create_app(
    settings: Settings,
    *,
    wait_for_data: bool = False,
    cluster: Client | None = None,
    lake_start: Future[LakeStart] | None = None,
    duty_in_background: bool = False,
) -> FastAPI:
    """The API over ``settings.data_dir``; ``wait_for_data`` makes startup wait for the first
    load; ``cluster``: the KPI endpoints are computed on that Dask cluster (a lake's);
    ``lake_start``: the lake's read already begun (``kpi.lake_snapshot.start_reading``);
    ``duty_in_background``: the duty desk's database opens after the server listens (its
    routes answer 503 until then) instead of before, where a failure stops start-up."""
    # Without wait_for_data the load runs in the background: /readyz is 503 until it is
    # done and data requests wait for it up to the request timeout.
    metrics = ApiMetrics.create()
    store = DataStore(settings, metrics, cluster, lake_start)

    desk = DutyDesk(settings.database)
    lifespan = _lifespan(
        store, desk, metrics, wait_for_data=wait_for_data, duty_in_background=duty_in_background
    )

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
    app.state.duty_desk = desk
    app.state.metrics = metrics
    app.state.keys_by_hash = {k.sha256: k for k in settings.api_keys}
    _install_error_handlers(app)
    _install_docs(app, settings)
    for module in (
        kpis,
        query,
        items,
        backlog,
        late_items,
        legs,
        complaints,
        incidents,
        admin,
        links,
    ):
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
    app.add_middleware(AuditMiddleware, prefixes=(API_PREFIX,))
    return app
