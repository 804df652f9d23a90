"""The duty desk's state in the API: off, starting (its database opening), ready or failed.

``kpi api`` opens the incident register after the server listens, so the KPI routes
(its main traffic) do not wait for SQLAlchemy and the database: until the register is
open the duty desk's routes answer 503 with ``Retry-After`` (Alertmanager retries a
webhook that got a 5xx), and ``/readyz`` names each component's state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from starlette.concurrency import run_in_threadpool

from kpi.api.errors import ApiError

if TYPE_CHECKING:
    from kpi.api.metrics import ApiMetrics
    from kpi.duty.register import IncidentRegister

log = logging.getLogger("kpi.api.duty")

DeskState = Literal["off", "starting", "ready", "failed"]
#: Seconds a client is told to wait while the register opens (a second or two, migrations aside).
RETRY_AFTER_SECONDS: Final = 2


def _open_register(url: str) -> IncidentRegister:
    """The duty desk's register at ``url``, migrated (SQLAlchemy and Alembic load here)."""
    from kpi.duty.register import open_register  # noqa: PLC0415

    return open_register(url)


@dataclass
class DutyDesk:
    """The incident register once open, and where its opening stands."""

    url: str | None
    state: DeskState = "off"
    register: IncidentRegister | None = None
    error: str | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def open(self, metrics: ApiMetrics) -> None:
        """Open the register (in a thread); a failure is kept in ``error`` and raised."""
        if self.url is None:
            return
        self.state = "starting"
        try:
            # Migrations first: the webhook must not answer before its tables exist.
            register = await run_in_threadpool(_open_register, self.url)
        except Exception as exc:
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        from kpi.duty.metrics import IncidentCollector  # noqa: PLC0415  (lazy: with the register)

        metrics.registry.register(IncidentCollector(register))
        self.register, self.state = register, "ready"

    def open_in_background(self, metrics: ApiMetrics, after: Callable[[], Awaitable[None]]) -> None:
        """Start opening the register once ``after()`` is done (the first readiness answer,
        or a few seconds); the routes answer 503 until it is open."""
        if self.url is None:
            return
        self.state = "starting"

        async def run() -> None:
            # Readiness first: importing SQLAlchemy holds the interpreter's lock for
            # ~0.5 s, which the load and the first /readyz answer would wait for.
            await after()
            try:
                await self.open(metrics)
            except Exception:
                log.exception("the duty desk could not open its database; its routes answer 503")

        self._task = asyncio.create_task(run(), name="duty-desk-open")

    async def close(self) -> None:
        """Stop a pending opening and release the register's connections."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.register is not None:
            self.register.engine.dispose()

    def require(self) -> IncidentRegister:
        """The open register, else the 503 that says why (off, starting, failed)."""
        if self.register is not None:
            return self.register
        if self.state == "starting":
            raise ApiError(
                503,
                "the duty desk is starting (opening its database): retry shortly",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        if self.state == "failed":
            raise ApiError(
                503,
                f"the duty desk could not open its database ({self.error}); fix --database"
                " and restart the API",
            )
        raise ApiError(
            503,
            "the duty desk is off: start the API with --database (sqlite:///FILE or postgresql://...)",
        )
