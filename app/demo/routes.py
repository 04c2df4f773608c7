"""Serving the demo page and the catalogue of texts it offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from app.api.deps import RuntimeDep

STATIC = Path(__file__).parent / "static"

router = APIRouter(prefix="/demo", tags=["demo"], include_in_schema=False)


@router.get("")
async def demo_page() -> FileResponse:
    return FileResponse(STATIC / "demo.html", media_type="text/html")


@router.get("/demo.js")
async def demo_script() -> FileResponse:
    return FileResponse(STATIC / "demo.js", media_type="text/javascript")


@router.get("/texts")
async def texts(runtime: RuntimeDep) -> list[dict[str, Any]]:
    """The feedback service's catalogue (the sandbox has one; a production service may not)."""
    try:
        answer = await runtime.clients.feedback.http.get("texts", timeout=5)
    except httpx.HTTPError as error:
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY, detail=f"The feedback service is unreachable: {error}"
        ) from None
    if not answer.is_success:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail="The feedback service lists no texts."
        )
    listing: list[dict[str, Any]] = answer.json()
    return listing
