"""One open stream's subscription to a task: the bounded buffer the hub fills."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable

from app.events.updates import TaskUpdate

FOLLOWER_QUEUE_SIZE = 64


class StreamEnd(Exception):
    """The stream cannot go on: the task was deleted, the follower fell behind, or shutdown."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# What a follower hands its stream: an update to write, the end, or a heartbeat to write.
FollowerItem = TaskUpdate | StreamEnd | bytes


class Follower:
    """The updates of one task after `last_seq`, for one stream, in order.

    The hub calls `deliver`, `heartbeat` and `close`; the stream takes `next_item`. A
    plain deque and one future the stream waits on, rather than an `asyncio.Queue`: the
    hub hands each event to every follower of a task in one synchronous pass, and this
    is the cheapest way to hand it over and wake the stream.
    """

    def __init__(
        self, task_id: uuid.UUID, user_id: uuid.UUID, *, release: Callable[[Follower], None]
    ) -> None:
        self.task_id = task_id
        self.user_id = user_id
        self.last_seq: int | None = None  # None until the follower has read its starting point
        self.queue: deque[FollowerItem] = deque()
        self._release = release  # gives the follower's place in the hub back
        self._updates = 0  # updates in `queue` (heartbeats and the end do not count)
        self._delivered = False  # an update was queued since the last heartbeat tick
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def deliver(self, update: TaskUpdate) -> None:
        """Queue `update` unless the follower has it already or is not placed yet."""
        if self._ended or self.last_seq is None or update.seq <= self.last_seq:
            return
        if self._updates >= FOLLOWER_QUEUE_SIZE:
            # A follower this far behind reconnects with Last-Event-ID and replays. It
            # keeps what it has and loses this update and later ones, never an earlier
            # one: a hole before the last id it saw would never be filled.
            self.close("the follower fell behind")
            return
        self.last_seq = update.seq
        self._updates += 1
        self._delivered = True
        self._put(update)

    def close(self, reason: str) -> None:
        """Leave the hub; the stream sees the end after what it holds."""
        self._release(self)
        if not self._ended:
            self._ended = True
            self._put(StreamEnd(reason))

    def heartbeat(self, frame: bytes) -> None:
        """Queue a keep-alive comment, unless the stream has something to write anyway.

        An update delivered since the last tick is traffic enough: the tick is skipped.
        """
        if self._delivered:
            self._delivered = False
        elif not self._ended and not self.queue:
            self._put(frame)

    def _put(self, item: FollowerItem) -> None:
        self.queue.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_item(self) -> FollowerItem:
        """The next update, heartbeat or end, in order (waits while there is none)."""
        while not self.queue:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self.queue.popleft()
        if isinstance(item, TaskUpdate):
            self._updates -= 1
        return item

    async def next(self) -> TaskUpdate:
        """The next update; raises the end. Heartbeats are skipped."""
        while True:
            item = await self.next_item()
            if isinstance(item, StreamEnd):
                raise item
            if isinstance(item, TaskUpdate):
                return item
