"""The audit log: every data and duty request with the caller's key name (never the key)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("kpi.api.audit")


class AuditMiddleware:
    """One ``kpi.api.audit`` line per request under ``prefixes``: key name, method, path, status."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then log who asked what and the answer's status."""
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The authentication dependency puts the key's name in the request state; a
            # request refused before that (no key, unknown key) logs as "-", and every
            # request to an API without keys as "anonymous".
            state = scope.get("state") or {}
            settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
            open_api = settings is not None and not settings.auth_enabled
            who = state.get("principal_name") or ("anonymous" if open_api else "-")
            client = scope.get("client") or ("-", 0)
            # The query string is logged: it holds filters, never secrets (keys go in headers).
            query = scope.get("query_string", b"").decode("latin-1")
            log.info(
                "key=%s client=%s %s %s%s status=%d %.1fms",
                who,
                client[0],
                scope.get("method", ""),
                path,
                f"?{query}" if query else "",
                status,
                (time.perf_counter() - start) * 1000,
            )
