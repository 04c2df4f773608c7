"""Opening a stream in a task's history, and the response that writes its frames.

Both stream routes use `TaskEventStream`, a lean ASGI response in place of
sse-starlette's `EventSourceResponse`, which spent most of a stream's CPU on each
message (a cancel scope and a timer per send, a lock, encoding per follower, four tasks
per stream). What that response did is kept, elsewhere where it is shared: frames are
encoded once per event (`app.events.frames`), the heartbeat, the send timeout and the
end at the server's stop signal are one loop each in the hub, and one small task per
stream watches for the client's disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.events.frames import FrameFormat
from app.events.hub import EventHub, Follower, StreamEnd
from app.events.updates import TaskUpdate
from app.tasks.errors import TaskNotFound

log = logging.getLogger(__name__)

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


END_OF_STREAM: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class TaskEventStream(Response):
    """`text/event-stream` of a follower's frames: backlog, live events, then the end.

    It ends after the terminal event, at the follower's end (deleted task, fallen
    behind, shutdown) and when the client disconnects; in every case the follower is
    given back. A client that reads nothing for the hub's send timeout (its socket
    buffers full, so a send waits) is dropped: the response returns unfinished, which
    makes the server close the connection.
    """

    def __init__(
        self,
        stream: OpenStream,
        frame: FrameFormat,
        *,
        headers: Mapping[str, str],
        status_code: int = 200,  # FastAPI's OpenAPI reads the default status from here
    ) -> None:
        self.stream = stream
        self.frame = frame
        self._sending: dict[Follower, float] = {}  # the hub's, from the first call on
        self._clock: Callable[[], float] = time.monotonic  # the loop's, from the first call
        self.status_code = status_code
        self.background = None
        # Set here, not on the class: FastAPI documents a route's error responses in its
        # response class's media type, and those are JSON.
        self.media_type = "text/event-stream"
        self.init_headers({**headers, "Connection": "keep-alive", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        follower = self.stream.follower
        follower.writer = asyncio.current_task()
        self._sending = follower.hub.sending
        self._clock = asyncio.get_running_loop().time
        watcher: asyncio.Task[None] | None = None
        try:
            start: Message = {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
            if scope.get("method") == "HEAD":  # headers only: an endless body never ends
                await self._send(send, start)
                await self._send(send, END_OF_STREAM)
                return
            watcher = asyncio.create_task(_end_at_disconnect(receive, follower))
            await self._send(send, start)
            await self._write_events(send)
            await self._send(send, END_OF_STREAM)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not follower.stalled or task is None or task.uncancel() > 0:
                raise
            log.info(
                "closed a stream whose client read nothing for %.0fs",
                follower.hub.send_timeout_seconds,
            )
        finally:
            if watcher is not None:
                watcher.cancel()
            follower.writer = None
            follower.hub.unfollow(follower)

    async def _write_events(self, send: Send) -> None:
        """Write until the terminal event or the follower's end, coalescing what is queued."""
        frame = self.frame
        follower = self.stream.follower
        chunks: list[bytes] = []
        for update in self.stream.backlog:
            chunks.append(frame(update))
            if update.is_terminal:
                await self._write(send, chunks)
                return
        if chunks:
            await self._write(send, chunks)
        queue = follower.queue
        while True:
            item = await follower.next_item()
            finished = False
            while True:
                if isinstance(item, TaskUpdate):
                    chunks.append(frame(item))
                    follower.wrote = True
                    finished = item.is_terminal
                elif isinstance(item, StreamEnd):
                    finished = True
                else:
                    chunks.append(item)  # a heartbeat, encoded once by the hub
                if finished or not queue:
                    break
                item = await follower.next_item()  # queued already: returns at once
            if chunks:
                await self._write(send, chunks)
            if finished:
                return

    async def _write(self, send: Send, chunks: list[bytes]) -> None:
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        await self._send(send, {"type": "http.response.body", "body": body, "more_body": True})

    async def _send(self, send: Send, message: Message) -> None:
        """One send, watched by the hub for the send timeout (no timer per send)."""
        follower = self.stream.follower
        self._sending[follower] = self._clock()
        try:
            await send(message)
        finally:
            del self._sending[follower]


async def _end_at_disconnect(receive: Receive, follower: Follower) -> None:
    """Wake the stream when the client goes away, however idle the task is."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            follower.hub.unfollow(follower)
            follower.offer(StreamEnd("the client disconnected"))
            return
