"""Turning a follower's updates into Server-Sent Events, for both stream routes."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from app.events.hub import EventHub, Follower, StreamEnd, TaskUpdate
from app.tasks.errors import TaskNotFound

log = logging.getLogger(__name__)

# What the mobile app expects in every payload (see docs/legacy-api.md).
LEGACY_EVENT_NAME = "status_updated"
RETRY_MILLISECONDS = 15000


# Event ids are the history's `seq`, a PostgreSQL integer: larger ids are refused (422).
MAX_EVENT_ID = 2**31 - 1


@dataclass
class OpenStream:
    """A follower placed in a task's history, with the updates it must see first."""

    follower: Follower
    backlog: list[TaskUpdate]


class NothingToResume(Exception):
    """The client resumes after the task's terminal event: it has seen the whole run."""


async def open_stream(
    hub: EventHub, task_id: uuid.UUID, user_id: uuid.UUID, *, after_seq: int | None
) -> OpenStream:
    """Follow first, then read, so no transition falls between the read and the follow.

    `after_seq` None starts at the current state; otherwise the stream replays what came
    after it, and an id the task never issued (past its last event) replays everything.
    Raises `TooManyFollowers` (the route answers 503), `TooManyFollowersForUser` (429),
    `TaskNotFound` (404) or `NothingToResume` (204).
    """
    follower = hub.follow(task_id, user_id)
    try:
        state = await hub.task_state(task_id)
        if state is None or state.user_id != user_id:
            raise TaskNotFound()
        if after_seq is None:
            backlog = [state.current]
        else:
            if after_seq > state.current.seq:
                after_seq = 0  # not an id of this task's: the client's view is unknown
            elif after_seq == state.current.seq and state.current.is_terminal:
                raise NothingToResume()
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


class TaskEventResponse(EventSourceResponse):
    """An SSE response that gives up on a client that stops reading.

    Once a client stops reading, its socket buffers fill and every send waits. A send that
    waits longer than `send_timeout` seconds ends the response: the generator is closed
    (its follower given back) and the server closes the connection. sse-starlette's own
    `send_timeout` bounds events and pings but not the closing message, which blocks the
    same way when a stream ends on a stalled client, so every message is bounded here.
    """

    def __init__(
        self, content: AsyncIterator[ServerSentEvent], *, send_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._send_deadline = send_timeout
        self._stalled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            with anyio.move_on_after(self._send_deadline) as deadline:
                await send(message)
            if deadline.cancelled_caught:
                self._stalled = True
                raise SendTimeoutError()

        try:
            await super().__call__(scope, receive, bounded_send)
        except Exception:
            if not self._stalled:
                raise
            # Returning with the response unfinished makes the server close the connection.
            log.info("closed a stream whose client read nothing for %.0fs", self._send_deadline)
