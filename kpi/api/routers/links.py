"""``POST /links``: short-lived signed links to a GET of the API (see kpi.api.signed_links)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from kpi.api.deps import PrincipalDep
from kpi.api.errors import ERROR_RESPONSES, bad_request
from kpi.api.signed_links import LINK_PREFIX, AuthDep, sign_link

router = APIRouter(tags=["browser access"])


class LinkRequest(BaseModel):
    """A path and query of the API to share as a link that needs no key."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        pattern=r"^/api/v1/[A-Za-z0-9_./-]*(\?[^#\s]*)?$",
        max_length=4000,
        description="path and query under /api/v1/, e.g. /api/v1/backlog?facility=HUB-GD-01",
        examples=["/api/v1/backlog?facility=HUB-GD-01"],
    )
    ttl_seconds: int = Field(
        default=3600, gt=0, description="lifetime of the link, cut to the configured maximum"
    )


class SignedLink(BaseModel):
    """A link that reads ``url`` without a key until ``expires`` (Unix seconds)."""

    url: str
    expires: int
    signed_for: str


@router.post(
    "/links",
    response_model=SignedLink,
    responses={k: ERROR_RESPONSES[k] for k in (400, 401, 422)},
    summary="A short-lived link to a GET of the API that needs no key",
    description=(
        "Signs one path and query (HMAC-SHA256 under the server's secret) for the calling "
        "key, read-only, for `ttl_seconds` (at most the configured maximum). Removing the "
        "key invalidates its links. Needs a key in a header (a browser session cannot sign). "
        "`expires` says when it ends."
    ),
)
async def create_link(
    body: LinkRequest, request: Request, auth: AuthDep, principal: PrincipalDep
) -> SignedLink:
    """Sign one API path and query for the caller."""
    parts = urlsplit(body.url)
    if parts.scheme or parts.netloc or not parts.path.startswith(LINK_PREFIX):
        raise bad_request(f"url must be a path under {LINK_PREFIX}, e.g. /api/v1/backlog")
    expires = int(time.time()) + min(body.ttl_seconds, auth.link_max_ttl_seconds)
    base = str(request.base_url).rstrip("/")
    return SignedLink(
        url=base + sign_link(auth, principal.name, parts.path, parts.query, expires),
        expires=expires,
        signed_for=principal.name,
    )
