"""HTTP pieces shared by the three sandbox services."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, UploadFile, status


def require_upload(upload: UploadFile, *, suffix: str, content_type: str) -> None:
    """Reject, with 400, an upload whose filename or content type the contract forbids."""
    filename = upload.filename or ""
    if not filename.lower().endswith(suffix):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"Expected a {suffix} file, got the filename {filename!r}.",
        )
    # Parameters such as "; charset=..." do not change what the bytes are.
    received = (upload.content_type or "").split(";", 1)[0].strip().lower()
    if received != content_type:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"Expected the content type {content_type}, got {upload.content_type!r}.",
        )


def add_health_route(
    app: FastAPI, service: str, details: Callable[[], dict[str, Any]] | None = None
) -> None:
    """Serve ``GET /health``: 200 with ``status`` "healthy" while the process is up."""

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, Any]:
        return {
            "status": "healthy",
            "service": service,
            "sandbox": True,
            **(details() if details else {}),
            "timestamp": datetime.now(UTC).isoformat(),
        }
