"""Answer formats: JSON envelope, CSV, Parquet and Arrow IPC stream, chosen by param or Accept."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import orjson
import polars as pl
from fastapi import Response

from kpi.api.models import Format
from kpi.output import to_bytes

MEDIA_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
_BY_MEDIA: Final = {v: k for k, v in MEDIA_TYPES.items()}
FORMATS: Final[tuple[str, ...]] = get_args(Format)
Role = Literal["dimension", "time", "measure", "attribute"]

#: OpenAPI ``content`` of a tabular 200 answer: JSON (schema from the model) or a file.
TABULAR_CONTENT: Final[dict[str, Any]] = {
    "text/csv": {"schema": {"type": "string"}},
    "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
    "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
}


def negotiate(fmt: str | None, accept: str | None) -> str:
    """The answer format: the ``format`` parameter, else the best supported Accept type, else JSON."""
    if fmt:
        return fmt
    if not accept:
        return "json"
    best, best_q = "json", -1.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        name = _BY_MEDIA.get(media.lower())
        if name is not None and q > best_q:
            best, best_q = name, q
    return best


def _type_of(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "number"
    if dtype == pl.Boolean:
        return "boolean"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    return "string"


def columns_meta(
    frame: pl.DataFrame, roles: Mapping[str, Role], units: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Name, type, unit and role of every column (role ``attribute`` unless given)."""
    units = units or {}
    return [
        {
            "name": name,
            "type": _type_of(dtype),
            "unit": units.get(name),
            "role": roles.get(name, "attribute"),
        }
        for name, dtype in frame.schema.items()
    ]


def _json_default(value: object) -> object:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot serialise {type(value).__name__}")


@dataclass(frozen=True)
class Rendered:
    """A serialised answer: body, media type and headers (what the page cache keeps)."""

    body: bytes
    media_type: str
    headers: dict[str, str]

    def response(self) -> Response:
        """The HTTP response."""
        return Response(self.body, media_type=self.media_type, headers=self.headers)


def render_page(
    page: pl.DataFrame,
    fmt: str,
    *,
    columns: list[dict[str, Any]],
    total: int,
    limit: int,
    offset: int,
    as_of: dt.datetime,
    data_version: str,
    name: str,
) -> Rendered:
    """One page of a tabular answer in the chosen format (the envelope rides in headers for files)."""
    headers = {
        "X-Total-Count": str(total),
        "X-Data-Version": data_version,
        "X-As-Of": as_of.isoformat(),
    }
    if fmt == "json":
        body = {
            "data": page.to_dicts(),
            "columns": columns,
            "total": total,
            "limit": limit,
            "offset": offset,
            "as_of": as_of,
            "data_version": data_version,
        }
        content = orjson.dumps(body, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)
        return Rendered(content, MEDIA_TYPES["json"], headers)
    suffix = {"csv": "csv", "parquet": "parquet", "arrow": "arrows"}[fmt]
    headers["Content-Disposition"] = f'attachment; filename="{name}.{suffix}"'
    return Rendered(to_bytes(page, fmt), MEDIA_TYPES[fmt], headers)  # type: ignore[arg-type]


def json_response(body: Mapping[str, Any], status: int = 200) -> Response:
    """A JSON response serialised with orjson (timestamps keep their offsets)."""
    return Response(
        orjson.dumps(body, default=_json_default),
        status_code=status,
        media_type=MEDIA_TYPES["json"],
    )
