"""API settings: data folder, limits, API keys and docs access, loadable from YAML or JSON."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from kpi.api.signed_links import BrowserAuth


class Role(StrEnum):
    """What a key may do: read KPIs and records, or also administer the service."""

    READER = "reader"
    DUTY = "duty"
    ADMIN = "admin"

    @property
    def acts_on_duty(self) -> bool:
        """Whether the key may acknowledge, annotate, hand over and close incidents."""
        return self in (Role.DUTY, Role.ADMIN)


class Limits(BaseModel):
    """Guards against questions too large to answer quickly; every one is a 4xx, never a 500."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_range_days: Annotated[float, Field(gt=0)] = Field(
        default=400.0, description="widest window [from, to) a windowed KPI question may cover"
    )
    max_page_rows: Annotated[int, Field(ge=1)] = Field(
        default=10_000, description="largest `limit` a page may ask for"
    )
    default_page_rows: Annotated[int, Field(ge=1)] = Field(
        default=1_000, description="page size when `limit` is not given"
    )
    max_groups: Annotated[int, Field(ge=1)] = Field(
        default=100_000, description="most rows (groups x periods) one KPI answer may have"
    )
    request_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="a computation still running after this answers 504"
    )
    snapshot_cache: Annotated[int, Field(ge=1)] = Field(
        default=4, description="snapshots kept for as_of instants other than the default"
    )
    result_cache: Annotated[int, Field(ge=0)] = Field(
        default=512, description="query answers kept per data version (0 disables the cache)"
    )


class ApiKey(BaseModel):
    """One API key, stored as the SHA-256 hex digest of the secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, description="who holds the key (logged, never the secret)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex digest of the key")
    role: Role = Role.READER
    regions: tuple[str, ...] | None = Field(
        default=None, description="when set, the key sees only these regions' rows and items"
    )

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class WebhookToken(BaseModel):
    """A bearer token Alertmanager sends to the incidents webhook, stored as its SHA-256 digest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, description="which Alertmanager (logged, never the token)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex digest of the token")

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class ClusterSettings(BaseModel):
    """Where the KPI endpoints are computed: in the API's process, or on a Dask cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    engine: Literal["polars", "dask"] = Field(
        default="polars",
        description="polars: in the API's process; dask: on a cluster (the data is a lake)",
    )
    scheduler: str | None = Field(
        default=None,
        description="dask: an existing cluster (tcp://HOST:8786); none: a local cluster",
    )
    workers: Annotated[int, Field(ge=1)] = Field(
        default=2, description="dask without a scheduler: worker processes of the local cluster"
    )
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="dask: seconds to reach the scheduler and see a worker"
    )
    run_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=600.0,
        description="dask: seconds one question's run may take on the cluster, else a 503",
    )


class Settings(BaseModel):
    """Everything the API needs to start; unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    data_dir: Path = Field(description="the data folder (events/, complaints/, facilities.csv)")
    as_of: AwareDatetime | None = Field(
        default=None, description="default as-of instant; the latest event when unset"
    )
    limits: Limits = Limits()
    api_keys: tuple[ApiKey, ...] = Field(
        default=(), description="no keys: authentication is off (demo mode)"
    )
    docs_require_key: bool = Field(
        default=False, description="whether /docs, /redoc and /openapi.json need a key"
    )
    metrics_require_key: bool = Field(
        default=False, description="whether /metrics needs a key (Prometheus scrapes it)"
    )
    database: str | None = Field(
        default=None,
        description="incident register: sqlite:///FILE or postgresql://...; none: duty desk off",
    )
    webhook_tokens: tuple[WebhookToken, ...] = Field(
        default=(), description="bearer tokens Alertmanager authenticates the webhook with"
    )
    browser: BrowserAuth = Field(
        default=BrowserAuth(), description="read-only browser sessions and signed links"
    )
    watch_interval_seconds: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="how often, at most, the data folder is checked for changes"
    )
    cluster: ClusterSettings = Field(
        default=ClusterSettings(), description="the engine of the KPI endpoints"
    )

    @property
    def auth_enabled(self) -> bool:
        """Authentication is on as soon as one key is configured."""
        return bool(self.api_keys)

    @property
    def webhook_auth_enabled(self) -> bool:
        """The webhook needs a token as soon as any key or token is configured."""
        return bool(self.api_keys or self.webhook_tokens)


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest stored in the config for an API key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def load_settings(
    config: Path | None = None,
    *,
    data_dir: Path | None = None,
    as_of: dt.datetime | None = None,
    database: str | None = None,
    cluster: dict[str, Any] | None = None,
) -> Settings:
    """Settings from a YAML/JSON file (optional), with the command line's values winning."""
    raw: dict[str, Any] = {}
    if config is not None:
        text = config.read_text()
        loaded = json.loads(text) if config.suffix == ".json" else yaml.safe_load(text)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{config}: expected a mapping at the top level")
        raw = dict(loaded or {})
    if data_dir is not None:
        raw["data_dir"] = data_dir
    if as_of is not None:
        raw["as_of"] = as_of
    if database is not None:
        raw["database"] = database
    if cluster:
        given = raw.get("cluster")
        raw["cluster"] = {**(given if isinstance(given, dict) else {}), **cluster}
    return Settings.model_validate(raw)


class StartupError(ValueError):
    """The API must not start as configured; the message names the entry and the fix."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(host: str, settings: Settings, *, insecure_no_auth: bool) -> str | None:
    """Refuse an open API on a network address; a warning to log when the operator insisted."""
    if settings.auth_enabled or is_loopback(host):
        return None
    if not insecure_no_auth:
        raise StartupError(
            f"refusing to serve every region's data without authentication on {host}, which "
            "is reachable from other machines: configure API keys (api_keys in --config; "
            "see docs/api.md), listen on 127.0.0.1, or pass --insecure-no-auth to confirm "
            "that anyone on the network may read and act"
        )
    return (
        f"--insecure-no-auth: the API on {host} answers anyone on the network, "
        "with every region's data and every duty action"
    )


def check_keys(settings: Settings, known_regions: frozenset[str] | None) -> None:
    """Key configuration errors that would otherwise pass silently, each naming the entry."""
    seen: dict[str, str] = {}
    entries = [(f"api_keys[{i}] ({k.name})", k.sha256) for i, k in enumerate(settings.api_keys)]
    entries += [
        (f"webhook_tokens[{i}] ({t.name})", t.sha256) for i, t in enumerate(settings.webhook_tokens)
    ]
    for label, digest in entries:
        if digest in seen:
            raise StartupError(
                f"{label} has the same sha256 as {seen[digest]}: one secret would be two "
                "callers; give each its own key"
            )
        seen[digest] = label
    if known_regions is None:
        return
    for i, key in enumerate(settings.api_keys):
        unknown = sorted(set(key.regions or ()) - known_regions)
        if unknown:
            raise StartupError(
                f"api_keys[{i}] ({key.name}) is scoped to region {unknown}, which appears "
                f"nowhere in {settings.data_dir}/facilities.csv (its regions: "
                f"{', '.join(sorted(known_regions)) or 'none'}): the key would see nothing"
            )
