"""Erasing a user: the gateway's call when a learner's account goes."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Response, status

from app.api.deps import SessionDep
from app.api.schemas import ErrorResponse
from app.api.upload import LegacyRoute
from app.tasks import service

log = logging.getLogger(__name__)

UNTRUSTED: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "The caller is not in MANAGER_TRUSTED_CLIENTS."}
}
# The user id is in the path, so only the gateway may call this, judged like the legacy
# routes before anything else.
router = APIRouter(tags=["operations"], route_class=LegacyRoute, responses=UNTRUSTED)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Erase everything stored for a user",
)
async def erase_user(session: SessionDep, user_id: uuid.UUID) -> Response:
    """Delete the user's tasks with their audio, history and webhook deliveries, in one
    transaction; the user's open streams end. 204 also when nothing was stored (a repeat)."""
    erased = await service.erase_user(session, user_id)
    log.info("erased a user's data: %d task(s)", erased)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
