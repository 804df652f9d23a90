"""API settings: data folder, limits, API keys and docs access, loadable from YAML or JSON."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from kpi.api.signed_links import BrowserAuth


class Role(StrEnum):
    """What a key may do: read KPIs and records, or also administer the service."""

    READER = "reader"
    ADMIN = "admin"


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
    browser: BrowserAuth = Field(
        default=BrowserAuth(), description="read-only browser sessions and signed links"
    )
    watch_interval_seconds: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="how often, at most, the data folder is checked for changes"
    )

    @property
    def auth_enabled(self) -> bool:
        """Authentication is on as soon as one key is configured."""
        return bool(self.api_keys)


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest stored in the config for an API key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def load_settings(
    config: Path | None = None,
    *,
    data_dir: Path | None = None,
    as_of: dt.datetime | None = None,
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
    return Settings.model_validate(raw)
