"""Errors the API answers with: a status and a message that says what to change."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="what went wrong and what to change")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="per-field validation errors, when the request was malformed"
    )


class ApiError(Exception):
    """An error with an HTTP status; raised anywhere, rendered as a ``Problem``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def bad_request(detail: str) -> ApiError:
    """400: the question cannot be answered as asked."""
    return ApiError(400, detail)


def forbidden(detail: str) -> ApiError:
    """403: the key may not see this."""
    return ApiError(403, detail)


def not_found(detail: str) -> ApiError:
    """404: no such resource."""
    return ApiError(404, detail)


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


#: Error responses every data endpoint documents.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("The question cannot be answered as asked; the message says what to change."),
    401: _problem("No API key, or an unknown one (only when keys are configured)."),
    403: _problem("The key may not see this region, item or resource."),
    422: _problem("A parameter is malformed (wrong type, out of range, timestamp without offset)."),
    503: _problem("The data is not loaded yet."),
    504: _problem("The computation took longer than the request timeout."),
}
