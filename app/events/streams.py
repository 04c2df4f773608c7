"""Turning a follower's updates into Server-Sent Events, for both stream routes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

from app.events.hub import EventHub, Follower, StreamEnd, TaskUpdate
from app.tasks.errors import TaskNotFound

# What the mobile app expects in every payload (see docs/legacy-api.md).
LEGACY_EVENT_NAME = "status_updated"
RETRY_MILLISECONDS = 15000


@dataclass
class OpenStream:
    """A follower placed in a task's history, with the updates it must see first."""

    follower: Follower
    backlog: list[TaskUpdate]


async def open_stream(
    hub: EventHub, task_id: uuid.UUID, user_id: uuid.UUID, *, after_seq: int | None
) -> OpenStream:
    """Follow first, then read, so no transition falls between the read and the follow.

    Raises `TooManyFollowers` (the route answers 503) or `TaskNotFound` (404).
    """
    follower = hub.follow(task_id)
    try:
        state = await hub.task_state(task_id)
        if state is None or state.user_id != user_id:
            raise TaskNotFound()
        if after_seq is None:
            backlog = [state.current]
        else:
            backlog = await hub.history(task_id, after_seq=after_seq)
    except BaseException:
        hub.unfollow(follower)
        raise
    follower.placed_at(backlog[-1].seq if backlog else (after_seq or 0))
    return OpenStream(follower=follower, backlog=backlog)


async def updates(stream: OpenStream) -> AsyncIterator[TaskUpdate]:
    """The backlog, then live updates, ending after the terminal one; unfollows on exit."""
    hub = stream.follower.hub
    try:
        for update in stream.backlog:
            yield update
            if update.is_terminal:
                return
        while True:
            try:
                update = await stream.follower.next()
            except StreamEnd:
                return
            yield update
            if update.is_terminal:
                return
    finally:
        hub.unfollow(stream.follower)


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


async def resource_events(stream: OpenStream) -> AsyncIterator[ServerSentEvent]:
    async for update in updates(stream):
        yield resource_event(update)


async def legacy_events(stream: OpenStream) -> AsyncIterator[ServerSentEvent]:
    async for update in updates(stream):
        yield legacy_event(update)
