"""The bytes on the wire: each task event as an SSE frame, in the two stream formats.

A frame is encoded at most once per event and format, then written to every follower
of the task as is (`TaskUpdate.frames` holds it). The encoding itself is sse-starlette's
`ServerSentEvent`, so the frames are byte for byte what its own response writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sse_starlette import ServerSentEvent

from app.events.updates import TaskUpdate

# What the mobile app expects in every payload (see docs/legacy-api.md).
LEGACY_EVENT_NAME = "status_updated"
RETRY_MILLISECONDS = 15000


def legacy_payload(update: TaskUpdate) -> dict[str, Any]:
    return {
        "event": LEGACY_EVENT_NAME,
        "task_id": str(update.task_id),
        "status": update.status,
        "retry": RETRY_MILLISECONDS,
    }


def resource_event(update: TaskUpdate) -> ServerSentEvent:
    """`event:` the status, `id:` the history sequence number, JSON `data:`."""
    payload = {
        **legacy_payload(update),
        "seq": update.seq,
        "time": update.created_at.isoformat(),
    }
    if update.status == "completed":
        payload["accuracy"] = update.accuracy
    if update.status == "failed":
        payload["comment"] = update.comment
    return ServerSentEvent(
        data=json.dumps(payload, ensure_ascii=False),
        event=update.status,
        id=str(update.seq),
        retry=RETRY_MILLISECONDS,
    )


def legacy_event(update: TaskUpdate) -> ServerSentEvent:
    """Only a `data:` line, as the gateway forwards it (now valid JSON, not a Python repr)."""
    return ServerSentEvent(data=json.dumps(legacy_payload(update)))


FrameFormat = Callable[[TaskUpdate], bytes]


def _cached(name: str, event: Callable[[TaskUpdate], ServerSentEvent]) -> FrameFormat:
    def frame(update: TaskUpdate) -> bytes:
        encoded = update.frames.get(name)
        if encoded is None:
            encoded = update.frames[name] = event(update).encode()
        return encoded

    frame.__name__ = f"{name}_frame"
    frame.__doc__ = f"The {name} stream's frame of `update`, encoded once per event."
    return frame


resource_frame = _cached("resource", resource_event)
legacy_frame = _cached("legacy", legacy_event)


def heartbeat_frame() -> bytes:
    """A comment line that keeps idle connections (and proxies) open; clients ignore it."""
    return ServerSentEvent(comment=f"ping - {datetime.now(UTC)}").encode()
