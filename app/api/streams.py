"""The two ways to follow a task's transitions as they are committed: the EventSource-ready
GET and the legacy POST."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Response, status

from app.api.deps import FollowerIdDep, RuntimeDep
from app.api.legacy import JSON_BODY, UNTRUSTED
from app.api.schemas import ErrorResponse, LegacyUserRequest
from app.api.upload import LegacyRoute
from app.events.frames import legacy_frame, resource_frame
from app.events.hub import TooManyFollowers, TooManyFollowersForUser
from app.events.opening import MAX_EVENT_ID, NothingToResume, OpenStream, open_stream
from app.events.response import TaskEventStream

router = APIRouter()

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_AFTER_SECONDS = 5
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of task status events.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    401: {"model": ErrorResponse, "description": "No caller identity (GET stream only)."},
    403: {
        "model": ErrorResponse,
        "description": "X-User-Id or user_id from outside MANAGER_TRUSTED_CLIENTS, or a "
        "user_id naming another user than the header or token (GET); a caller outside "
        "MANAGER_TRUSTED_CLIENTS (POST).",
    },
    404: {"model": ErrorResponse, "description": "No such task for this user."},
    429: {
        "model": ErrorResponse,
        "description": "This user has `MANAGER_SSE_MAX_FOLLOWERS_PER_USER` streams open; "
        "close one or retry after `Retry-After` seconds.",
    },
    503: {"model": ErrorResponse, "description": "Too many followers; retry later."},
}
RESUME_RESPONSES: dict[int | str, dict[str, Any]] = {
    **STREAM_RESPONSES,
    400: {"model": ErrorResponse, "description": "X-User-Id sent more than once."},
    204: {
        "description": "Resumed after the task's terminal event: nothing more will come. "
        "EventSource stops reconnecting on 204."
    },
    422: {"description": "`Last-Event-ID` is not an integer from 0 to 2147483647."},
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
    except TooManyFollowersForUser:
        # The caller's own doing, unlike the process-wide cap: 429, not 503.
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="Too many streams open for this user; close one or try again shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None


@router.get(
    "/tasks/{task_id}/events",
    tags=["tasks"],
    summary="Follow a task live (Server-Sent Events, works with EventSource)",
    response_class=TaskEventStream,
    responses=RESUME_RESPONSES,
)
async def task_events(
    runtime: RuntimeDep,
    task_id: uuid.UUID,
    caller: FollowerIdDep,
    last_event_id: Annotated[
        int | None,
        Query(ge=0, le=MAX_EVENT_ID, description="Resume after this event id."),
    ] = None,
    last_event_id_header: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, le=MAX_EVENT_ID, description="Set by EventSource."),
    ] = None,
) -> Response:
    """The first event is the current state; then every transition until the terminal one.

    With `Last-Event-ID` (or `last_event_id`) the stream replays the transitions after
    that id instead, so a reconnecting client misses nothing and sees nothing twice. An
    id past the task's last event replays the whole history; resuming after the terminal
    event answers `204`, which tells EventSource to stop reconnecting.
    """
    after = last_event_id_header if last_event_id_header is not None else last_event_id
    try:
        stream = await _open(runtime, task_id, caller, after)
    except NothingToResume:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return TaskEventStream(stream, resource_frame, sends=runtime.hub.sends, headers=STREAM_HEADERS)


async def legacy_stream(
    runtime: RuntimeDep, task_id: uuid.UUID, body: Annotated[LegacyUserRequest, Body()]
) -> TaskEventStream:
    """`data:` lines of JSON `{"event", "task_id", "status", "retry"}`, one per status."""
    stream = await _open(runtime, task_id, body.user_id, None)
    return TaskEventStream(stream, legacy_frame, sends=runtime.hub.sends, headers=STREAM_HEADERS)


# A legacy route: the caller is judged on its address before the body is read.
router.add_api_route(
    "/{task_id}/stream",
    legacy_stream,
    methods=["POST"],
    route_class_override=LegacyRoute,
    tags=["legacy"],
    summary="Follow a task live (legacy)",
    response_class=TaskEventStream,
    responses={**STREAM_RESPONSES, **UNTRUSTED, **JSON_BODY},
)
