"""Browser access without keys in URLs: a read-only session cookie and short-lived signed links.

The API takes keys in headers only, which a link clicked in Grafana cannot send. Two ways in,
both read-only (GET/HEAD, reader role whatever the key's role) and both tied to a configured
key by name, so removing the key ends them:

- **session**: ``GET /session`` shows a form, ``POST /session`` takes the key in the form
  body and sets an HttpOnly, SameSite=Lax cookie holding ``name.expiry.hmac`` (no key);
  Grafana's drill-down links, opened as top-level navigations, then carry it. A browser
  without one that asks for HTML is sent to the form and back.
- **signed link**: ``POST /api/v1/links`` (any authenticated caller) returns a URL for one
  GET path and query that works without a key until it expires (at most
  ``link_max_ttl_seconds``): for a chat message, an incident report or a notification.

Signatures are HMAC-SHA256 under ``browser.secret`` (random per process when unset, so
sessions and links end with a restart; set it when several API processes serve one site).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import time
from typing import Annotated, Final
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from kpi.api.errors import ApiError

COOKIE: Final = "postal_session"
#: Query parameters of a signed link (left out of what is signed).
BY, EXPIRES, SIG = "link_by", "link_expires", "link_sig"
LINK_PREFIX: Final = "/api/v1/"
READ_METHODS: Final = frozenset({"GET", "HEAD"})


class BrowserAuth(BaseModel):
    """Settings of browser sessions and signed links."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret (>= 32 characters); unset: a random one per process",
        min_length=32,
    )
    session_ttl_seconds: Annotated[int, Field(gt=0, le=7 * 86400)] = Field(
        default=12 * 3600, description="how long a browser session lasts (a duty shift)"
    )
    link_max_ttl_seconds: Annotated[int, Field(gt=0, le=30 * 86400)] = Field(
        default=86400, description="longest lifetime a signed link may ask for"
    )
    cookie_secure: bool = Field(
        default=False, description="mark the session cookie Secure (set it behind HTTPS)"
    )


_PROCESS_SECRET: Final = secrets.token_bytes(32)


def _secret(auth: BrowserAuth) -> bytes:
    return auth.secret.get_secret_value().encode() if auth.secret else _PROCESS_SECRET


def _mac(auth: BrowserAuth, *parts: str) -> str:
    return hmac.new(_secret(auth), "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


# --- sessions ------------------------------------------------------------------------------


def session_token(auth: BrowserAuth, name: str, now: float | None = None) -> str:
    """A session cookie value for key ``name``: ``name.expiry.signature``."""
    expires = int(now if now is not None else time.time()) + auth.session_ttl_seconds
    return f"{_b64(name)}.{expires}.{_mac(auth, 'session', name, str(expires))}"


def session_name(auth: BrowserAuth, token: str, now: float | None = None) -> str | None:
    """The key name of a valid, unexpired session token, else None."""
    try:
        encoded, expires, sig = token.split(".")
        name = _unb64(encoded)
        if int(expires) < (now if now is not None else time.time()):
            return None
    except ValueError:
        return None
    return name if hmac.compare_digest(sig, _mac(auth, "session", name, expires)) else None


# --- signed links ----------------------------------------------------------------------------


def _canonical(query: list[tuple[str, str]]) -> str:
    return urlencode(sorted((k, v) for k, v in query if k not in (BY, EXPIRES, SIG)))


def sign_link(auth: BrowserAuth, name: str, path: str, query: str, expires: int) -> str:
    """``path?query`` plus the parameters that let it be opened without a key until ``expires``."""
    pairs = parse_qsl(query, keep_blank_values=True)
    sig = _mac(auth, "link", name, path, _canonical(pairs), str(expires))
    extra = urlencode({BY: name, EXPIRES: expires, SIG: sig})
    return f"{path}?{query}&{extra}" if query else f"{path}?{extra}"


def link_name(auth: BrowserAuth, path: str, query: str, now: float | None = None) -> str | None:
    """The key name of a valid, unexpired signed link, else None."""
    pairs = parse_qsl(query, keep_blank_values=True)
    given = dict(pairs)
    name, expires, sig = given.get(BY), given.get(EXPIRES), given.get(SIG)
    if not (name and expires and sig and expires.isdigit()):
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    expected = _mac(auth, "link", name, path, _canonical(pairs), expires)
    return name if hmac.compare_digest(sig, expected) else None


# --- the hook in deps.authenticate --------------------------------------------------------


def browser_key_name(request: Request, auth: BrowserAuth) -> str | None:
    """The key name a read request carries as a signed link or a session cookie, if any."""
    if request.method not in READ_METHODS:
        return None
    if SIG in request.query_params:
        name = link_name(auth, request.url.path, request.url.query)
        if name is not None:
            request.state.auth_via = "signed-link"
            return name
    token = request.cookies.get(COOKIE)
    if token:
        name = session_name(auth, token)
        if name is not None:
            request.state.auth_via = "session"
            return name
    return None


def sign_in_redirect(request: Request) -> ApiError | None:
    """For a browser asking for a page without credentials: a redirect to the sign-in form."""
    if request.method not in READ_METHODS or "text/html" not in request.headers.get("accept", ""):
        return None
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return ApiError(
        303, "sign in first: /session", {"Location": f"/session?{urlencode({'next': target})}"}
    )


# --- routes --------------------------------------------------------------------------------

router = APIRouter(tags=["browser access"])


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect would turn the form into a phishing aid.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/session"
    return target


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>postal-kpi: sign in</title>"
        "</head><body style='font-family:sans-serif;max-width:36em;margin:3em auto'>"
        f"{body}</body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def _form(next_: str, message: str = "") -> str:
    note = f"<p style='color:#b00'>{html.escape(message)}</p>" if message else ""
    return (
        "<h1>Sign in to the postal KPI API</h1>"
        "<p>For drill-down links from Grafana: enter your API key once; the browser then "
        "keeps a read-only session (a cookie without the key) for the length of a shift.</p>"
        f"{note}<form method='post' action='/session'>"
        f"<input type='hidden' name='next' value='{html.escape(next_, quote=True)}'>"
        "<label>API key <input type='password' name='key' autocomplete='off' required "
        "autofocus></label> <button type='submit'>Sign in</button></form>"
    )


def _auth(request: Request) -> BrowserAuth:
    auth: BrowserAuth = request.app.state.settings.browser
    return auth


AuthDep = Annotated[BrowserAuth, Depends(_auth)]


@router.get("/session", include_in_schema=False)
async def session_form(request: Request, auth: AuthDep, next: str | None = None) -> Response:
    """The sign-in form, or who is signed in."""
    token = request.cookies.get(COOKIE)
    name = session_name(auth, token) if token else None
    if name is not None and next:
        return RedirectResponse(_safe_next(next), status_code=303)
    if name is not None:
        return _page(
            f"<p>Signed in as <b>{html.escape(name)}</b> (read-only).</p>"
            "<form method='post' action='/session/logout'><button>Sign out</button></form>"
        )
    return _page(_form(_safe_next(next)))


@router.post("/session", include_in_schema=False)
async def session_create(request: Request, auth: AuthDep) -> Response:
    """Check the key from the form body; set the session cookie and go back to ``next``."""
    form = dict(parse_qsl((await request.body()).decode(errors="replace")))
    next_ = _safe_next(form.get("next"))
    keys = request.app.state.keys_by_hash
    key = keys.get(hashlib.sha256(form.get("key", "").encode()).hexdigest())
    if key is None:
        return _page(_form(next_, "Unknown API key."), status=401)
    request.state.principal_name = key.name
    response = RedirectResponse(next_, status_code=303)
    response.set_cookie(
        COOKIE,
        session_token(auth, key.name),
        max_age=auth.session_ttl_seconds,
        httponly=True,
        samesite="lax",
        secure=auth.cookie_secure,
        path="/",
    )
    return response


@router.post("/session/logout", include_in_schema=False)
async def session_delete() -> Response:
    """Forget the session cookie."""
    response = RedirectResponse("/session", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
