"""The two ways to follow a task live: the EventSource-ready GET and the legacy POST."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.deps import FollowerIdDep, RuntimeDep, trusted_client
from app.api.schemas import ErrorResponse, LegacyUserRequest
from app.events.hub import TooManyFollowers
from app.events.streams import OpenStream, legacy_events, open_stream, resource_events
from app.runtime import Runtime

router = APIRouter()

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_AFTER_SECONDS = 5
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of task status events.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    401: {"model": ErrorResponse, "description": "No caller identity (GET stream only)."},
    404: {"model": ErrorResponse, "description": "No such task for this user."},
    503: {"model": ErrorResponse, "description": "Too many followers; retry later."},
}


async def _open(
    runtime: RuntimeDep, task_id: uuid.UUID, user_id: uuid.UUID, after_seq: int | None
) -> OpenStream:
    try:
        return await open_stream(runtime.hub, task_id, user_id, after_seq=after_seq)
    except TooManyFollowers:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="This server follows as many tasks as it can; try again shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None


def _respond(runtime: Runtime, events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    return EventSourceResponse(
        events, headers=STREAM_HEADERS, ping=runtime.settings.sse_heartbeat_seconds
    )


@router.get(
    "/tasks/{task_id}/events",
    tags=["tasks"],
    summary="Follow a task live (Server-Sent Events, works with EventSource)",
    response_class=EventSourceResponse,
    responses=STREAM_RESPONSES,
)
async def task_events(
    runtime: RuntimeDep,
    task_id: uuid.UUID,
    caller: FollowerIdDep,
    last_event_id: Annotated[
        int | None, Query(ge=0, description="Resume after this event id.")
    ] = None,
    last_event_id_header: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, description="Set by EventSource.")
    ] = None,
) -> EventSourceResponse:
    """The first event is the current state; then every transition until the terminal one.

    With `Last-Event-ID` (or `last_event_id`) the stream replays the transitions after
    that id instead, so a reconnecting client misses nothing and sees nothing twice.
    """
    after = last_event_id_header if last_event_id_header is not None else last_event_id
    stream = await _open(runtime, task_id, caller, after)
    return _respond(runtime, resource_events(stream))


@router.post(
    "/{task_id}/stream",
    tags=["legacy"],
    dependencies=[Depends(trusted_client)],
    summary="Follow a task live (legacy)",
    response_class=EventSourceResponse,
    responses=STREAM_RESPONSES,
)
async def legacy_stream(
    runtime: RuntimeDep, task_id: uuid.UUID, body: Annotated[LegacyUserRequest, Body()]
) -> EventSourceResponse:
    """`data:` lines of JSON `{"event", "task_id", "status", "retry"}`, one per status."""
    stream = await _open(runtime, task_id, body.user_id, None)
    return _respond(runtime, legacy_events(stream))
