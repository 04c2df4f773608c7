"""The response that writes a follower's frames as `text/event-stream`.

Both stream routes use `TaskEventStream`, a lean ASGI response in place of
sse-starlette's `EventSourceResponse`: what that response did per stream is shared
here. Frames are encoded once per event (`app.events.frames`), the heartbeat and the
send timeout are one loop each (the hub's), the stop signal ends every follower at once
(`EventHub.end_all_streams`), and one small task per stream watches for the client's
disconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.events.follower import Follower, StreamEnd
from app.events.frames import FrameFormat
from app.events.opening import OpenStream
from app.events.send_watch import SendWatch
from app.events.updates import TaskUpdate

log = logging.getLogger(__name__)

END_OF_STREAM: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class TaskEventStream(Response):
    """`text/event-stream` of a follower's frames: its backlog, each transition as it is
    committed, then the end.

    It ends after the terminal event, at the follower's end (deleted task, fallen
    behind, shutdown) and when the client disconnects; in every case the follower is
    given back. A client that reads nothing for the send timeout (its socket buffers
    full, so a send waits) is dropped: the response returns unfinished, which makes the
    server close the connection.
    """

    def __init__(
        self,
        stream: OpenStream,
        frame: FrameFormat,
        *,
        sends: SendWatch,
        headers: Mapping[str, str],
        status_code: int = 200,  # FastAPI's OpenAPI reads the default status from here
    ) -> None:
        self.stream = stream
        self.frame = frame
        self.sends = sends
        self.status_code = status_code
        self.background = None
        # Set here, not on the class: FastAPI documents a route's error responses in its
        # response class's media type, and those are JSON.
        self.media_type = "text/event-stream"
        self.init_headers({**headers, "Connection": "keep-alive", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        follower = self.stream.follower
        # Expired by the send watch when a send waits too long; no deadline otherwise.
        deadline = asyncio.timeout(None)
        watcher: asyncio.Task[None] | None = None
        try:
            async with deadline:
                start: Message = {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
                if scope.get("method") == "HEAD":  # headers only: an endless body never ends
                    await self.sends.send(deadline, send, start)
                    await self.sends.send(deadline, send, END_OF_STREAM)
                    return
                watcher = asyncio.create_task(_end_at_disconnect(receive, follower))
                await self.sends.send(deadline, send, start)
                await self._write_events(deadline, send)
                await self.sends.send(deadline, send, END_OF_STREAM)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.info(
                "closed a stream whose client read nothing for %.0fs", self.sends.timeout_seconds
            )
        finally:
            if watcher is not None:
                watcher.cancel()
            follower.close("the stream ended")

    async def _write_events(self, deadline: asyncio.Timeout, send: Send) -> None:
        """Write until the terminal event or the follower's end, coalescing what is queued."""
        frame = self.frame
        follower = self.stream.follower
        chunks: list[bytes] = []
        for update in self.stream.backlog:
            chunks.append(frame(update))
            if update.is_terminal:
                await self._write(deadline, send, chunks)
                return
        if chunks:
            await self._write(deadline, send, chunks)
        queue = follower.queue
        while True:
            item = await follower.next_item()
            finished = False
            while True:
                if isinstance(item, TaskUpdate):
                    chunks.append(frame(item))
                    finished = item.is_terminal
                elif isinstance(item, StreamEnd):
                    finished = True
                else:
                    chunks.append(item)  # a heartbeat, encoded once by the hub
                if finished or not queue:
                    break
                item = await follower.next_item()  # queued already: returns at once
            if chunks:
                await self._write(deadline, send, chunks)
            if finished:
                return

    async def _write(self, deadline: asyncio.Timeout, send: Send, chunks: list[bytes]) -> None:
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        message: Message = {"type": "http.response.body", "body": body, "more_body": True}
        await self.sends.send(deadline, send, message)


async def _end_at_disconnect(receive: Receive, follower: Follower) -> None:
    """Wake the stream when the client goes away, however idle the task is."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            follower.close("the client disconnected")
            return
