"""Liveness in the legacy shape (see docs/legacy-api.md)."""

from __future__ import annotations

import platform
import socket
from datetime import UTC, datetime

from fastapi import APIRouter

from app.api.schemas import HealthResponse, SystemInfo

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse, summary="Liveness")
async def health() -> HealthResponse:
    """The process is up; it does not touch the database (see readiness for that)."""
    return HealthResponse(
        status="healthy",
        system=SystemInfo(
            hostname=socket.gethostname(), os=platform.system(), os_version=platform.release()
        ),
        timestamp=datetime.now(UTC),
    )
