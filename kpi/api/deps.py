"""Request dependencies (``Annotated``): settings, store, the caller's key, paging, format."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from kpi.api.errors import ApiError, bad_request, forbidden
from kpi.api.export import negotiate
from kpi.api.models import MAX_LIMIT_SCHEMA, MAX_OFFSET, Format
from kpi.api.settings import ApiKey, Role, Settings
from kpi.api.store import DataStore, Generation

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (or use Authorization: Bearer)"
)
_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")


@dataclass(frozen=True)
class Principal:
    """Who is asking: the key's name, role and region scope (None = all regions)."""

    name: str
    role: Role
    regions: frozenset[str] | None

    def sees_region(self, region: str | None) -> bool:
        """Whether a row of ``region`` is visible to this caller."""
        return self.regions is None or (region is not None and region in self.regions)

    def check_regions(self, what: str, values: list[str] | None) -> None:
        """403 when the caller asks for a region outside its scope."""
        if self.regions is None or not values:
            return
        outside = sorted(set(values) - self.regions)
        if outside:
            raise forbidden(
                f"your key is limited to regions {sorted(self.regions)}; {what} {outside} "
                "is outside them"
            )


ANONYMOUS = Principal("anonymous", Role.ADMIN, None)


async def get_settings(request: Request) -> Settings:
    """The app's settings (async: FastAPI would run a plain def in its thread pool)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> DataStore:
    """The app's data store."""
    store: DataStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[DataStore, Depends(get_store)]


def _keys_by_hash(request: Request) -> dict[str, ApiKey]:
    keys: dict[str, ApiKey] = request.app.state.keys_by_hash
    return keys


async def authenticate(
    request: Request,
    settings: SettingsDep,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller, from ``X-API-Key`` or ``Authorization: Bearer``; everyone when no keys exist."""
    if not settings.auth_enabled:
        return ANONYMOUS
    secret = api_key or (bearer.credentials if bearer is not None else None)
    challenge = {"WWW-Authenticate": 'Bearer realm="postal-kpi"'}
    if not secret:
        raise ApiError(
            401, "an API key is required: send it as X-API-Key or Authorization: Bearer", challenge
        )
    # Only digests are stored; looking the digest up leaks nothing about other keys.
    key = _keys_by_hash(request).get(hashlib.sha256(secret.encode()).hexdigest())
    if key is None:
        raise ApiError(401, "unknown API key; check the key or ask an admin for one", challenge)
    request.state.principal_name = key.name
    return Principal(
        key.name, key.role, frozenset(key.regions) if key.regions is not None else None
    )


PrincipalDep = Annotated[Principal, Depends(authenticate)]


async def require_admin(principal: PrincipalDep) -> Principal:
    """403 unless the key has the admin role."""
    if principal.role is not Role.ADMIN:
        raise forbidden(f"key {principal.name!r} has role {principal.role.value}; this needs admin")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


async def current_generation(store: StoreDep) -> Generation:
    """The loaded data (503 while the first load is still running or failed)."""
    return await store.current()


GenerationDep = Annotated[Generation, Depends(current_generation)]


@dataclass(frozen=True)
class Paging:
    """Which rows of an answer to return."""

    limit: int
    offset: int


async def paging(
    settings: SettingsDep,
    limit: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_LIMIT_SCHEMA, description="rows per page (default and maximum: settings)"
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")] = 0,
) -> Paging:
    """Page parameters checked against the configured maximum."""
    return check_paging(settings, limit, offset)


def check_paging(settings: Settings, limit: int | None, offset: int) -> Paging:
    """``limit`` defaulted and capped by the settings (400 beyond the maximum)."""
    lim = settings.limits
    if limit is None:
        limit = min(lim.default_page_rows, lim.max_page_rows)
    if limit > lim.max_page_rows:
        raise bad_request(
            f"limit {limit} is larger than the maximum page of {lim.max_page_rows} rows; "
            "ask for less and page with offset, or export in several pages"
        )
    return Paging(limit, offset)


PagingDep = Annotated[Paging, Depends(paging)]


async def answer_format(
    format: Annotated[
        Format | None, Query(description="answer format; overrides the Accept header")
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """The negotiated answer format (json, csv, parquet or arrow)."""
    return negotiate(format, accept)


FormatDep = Annotated[str, Depends(answer_format)]


#: A repeatable query parameter whose values may also be comma-separated.
ListParam = Annotated[list[str] | None, Query()]


def split(values: list[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated values, flattened ("a,b" & "c" -> a, b, c)."""
    return tuple(v.strip() for raw in values or () for v in raw.split(",") if v.strip())
