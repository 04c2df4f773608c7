"""The refusals an upload can meet after its headers passed: FastAPI's own shapes."""

from __future__ import annotations

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError


def field_error(field: str, message: str, value: object) -> RequestValidationError:
    """A 422 in FastAPI's own shape, so every validation error reads the same."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}]
    )


def upload_too_large(limit_mb: float) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"The upload is larger than the limit of {limit_mb:g} MB.",
    )
