"""The per-process event hub: fan-out of task events to in-memory follower queues.

Followers never touch the database themselves. Every streaming read goes through one
lane (one pooled connection at a time): notifications mark tasks "dirty", and a single
reader loop fetches the new events of all dirty tasks in one query and hands them to
each follower of those tasks. With the LISTEN connection that makes two connections
for streaming, whatever the number of followers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from sse_starlette.sse import AppStatus

from app.db import history
from app.db.engine import Database
from app.events.frames import heartbeat_frame
from app.events.updates import TaskState, TaskUpdate
from app.retry import Backoff, retrying

log = logging.getLogger(__name__)

FOLLOWER_QUEUE_SIZE = 64
# The reader waits out a database fault before it reads the dirty tasks again.
READ_BACKOFF = Backoff(base=0.25, cap=5.0)
# How often the hub looks for the server's stop signal (as sse-starlette's watcher does).
SHUTDOWN_POLL_SECONDS = 0.5


class StreamEnd(Exception):
    """The stream cannot go on: the task was deleted, the follower fell behind, or shutdown."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooManyFollowers(Exception):
    """This process already serves `MANAGER_SSE_MAX_FOLLOWERS` followers."""


class TooManyFollowersForUser(Exception):
    """This user already has `MANAGER_SSE_MAX_FOLLOWERS_PER_USER` streams open here."""


# What a follower hands its stream: an update to write, the end, or a heartbeat to write.
FollowerItem = TaskUpdate | StreamEnd | bytes


class Follower:
    """One open stream's subscription: a bounded buffer of updates after `last_seq`.

    A plain deque and one future the stream waits on, rather than an `asyncio.Queue`:
    the hub offers each event to every follower of a task in one synchronous pass, and
    this is the cheapest way to hand it over and wake the stream.
    """

    def __init__(self, hub: EventHub, task_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.hub = hub
        self.task_id = task_id
        self.user_id = user_id
        self.last_seq: int | None = None  # None until the follower has read its starting point
        self.queue: deque[FollowerItem] = deque()
        self._updates = 0  # updates in `queue` (heartbeats and the end do not count)
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        # Kept by the stream that writes this follower's events (see `EventHub._watch_sends`).
        self.writer: asyncio.Task[Any] | None = None
        self.stalled = False
        self.wrote = False  # something was written since the last heartbeat tick

    @property
    def ended(self) -> bool:
        return self._ended

    def offer(self, update: TaskUpdate | StreamEnd) -> None:
        if self._ended:
            return
        if isinstance(update, TaskUpdate):
            if self.last_seq is None or update.seq <= self.last_seq:
                return  # already replayed, or not yet placed
            if self._updates >= FOLLOWER_QUEUE_SIZE:
                # A follower this far behind reconnects with Last-Event-ID and replays. It
                # keeps what it has and loses this update and later ones, never an earlier
                # one: a hole before the last id it saw would never be filled.
                self.hub.unfollow(self)
                update = StreamEnd("the follower fell behind")
            else:
                self.last_seq = update.seq
                self._updates += 1
        if isinstance(update, StreamEnd):
            self._ended = True
        self._put(update)

    def heartbeat(self, frame: bytes) -> None:
        """Queue a keep-alive comment, unless something else is about to be written."""
        if not self._ended and not self.queue:
            self._put(frame)

    def _put(self, item: FollowerItem) -> None:
        self.queue.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def placed_at(self, seq: int) -> None:
        """The follower has everything up to `seq`; updates after it are queued from now on."""
        self.last_seq = seq
        self.hub.mark_dirty(self.task_id)

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


class EventHub:
    """Followers by task, fed from NOTIFY through one batched reader."""

    def __init__(
        self,
        database: Database,
        *,
        max_followers: int,
        max_followers_per_user: int,
        heartbeat_seconds: float = 15.0,
        send_timeout_seconds: float = 30.0,
        stop_requested: Callable[[], bool] = lambda: AppStatus.should_exit,
    ) -> None:
        self.database = database
        self.max_followers = max_followers
        self.max_followers_per_user = max_followers_per_user
        self.heartbeat_seconds = heartbeat_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self._stop_requested = stop_requested
        self._followers: dict[uuid.UUID, set[Follower]] = defaultdict(set)
        self._count = 0
        self._per_user: dict[uuid.UUID, int] = defaultdict(int)
        self._dirty: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._lane = asyncio.Lock()  # one streaming read at a time: one pooled connection
        self._loops: list[asyncio.Task[None]] = []
        self._read_errors = retrying(READ_BACKOFF, log=log, message="event hub read failed")
        self._stopping = False
        # Followers whose stream is inside a send, and since when (the loop's clock).
        self.sending: dict[Follower, float] = {}

    @property
    def follower_count(self) -> int:
        return self._count

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._read_loop(), name="event-hub-reader"),
            asyncio.create_task(self._heartbeat_loop(), name="event-hub-heartbeat"),
            asyncio.create_task(self._watch_sends(), name="event-hub-send-timeout"),
            asyncio.create_task(self._watch_stop_signal(), name="event-hub-shutdown"),
        ]

    def end_all_streams(self) -> None:
        """Shutdown: end every stream after what it holds, and every stream opened later."""
        self._stopping = True
        for followers in list(self._followers.values()):
            for follower in list(followers):
                self.unfollow(follower)
                follower.offer(StreamEnd("the server is shutting down"))

    async def stop(self) -> None:
        """End every stream (shutdown) and stop the hub's loops."""
        self.end_all_streams()
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    # ---------------------------------------------------------- followers

    def follow(self, task_id: uuid.UUID, user_id: uuid.UUID) -> Follower:
        """Subscribe `user_id` (the caller, checked against the owner later) to a task."""
        if self._count >= self.max_followers:
            raise TooManyFollowers()
        if self._per_user[user_id] >= self.max_followers_per_user:
            raise TooManyFollowersForUser()
        follower = Follower(self, task_id, user_id)
        self._followers[task_id].add(follower)
        self._count += 1
        self._per_user[user_id] += 1
        if self._stopping:  # the stream sends its starting point, then ends
            self.unfollow(follower)
            follower.offer(StreamEnd("the server is shutting down"))
        return follower

    def unfollow(self, follower: Follower) -> None:
        followers = self._followers.get(follower.task_id)
        if followers is None or follower not in followers:
            return
        followers.discard(follower)
        self._count -= 1
        self._per_user[follower.user_id] -= 1
        if not self._per_user[follower.user_id]:
            del self._per_user[follower.user_id]
        if not followers:
            del self._followers[follower.task_id]

    async def task_state(self, task_id: uuid.UUID) -> TaskState | None:
        """Owner and latest transition of a task (None: no such task)."""
        async with self._lane, self.database.sessions() as session:
            row = await history.latest_transition(session, task_id)
        if row is None:
            return None
        user_id, seq, status, created_at, accuracy, comment = row
        return TaskState(
            user_id=user_id,
            current=TaskUpdate(task_id, seq, status, created_at, accuracy, comment),
        )

    async def history(self, task_id: uuid.UUID, *, after_seq: int) -> list[TaskUpdate]:
        """The task's transitions after `after_seq`, for a resuming follower."""
        async with self._lane, self.database.sessions() as session:
            rows = await history.transitions(session, task_id, after_seq=after_seq)
        return [TaskUpdate(*row) for row in rows]

    # -------------------------------------------------------- notifications

    def on_task_event(self, task_id: uuid.UUID, _seq: int) -> None:
        """Listener hook: a transition (or deletion) of `task_id` was committed."""
        if task_id in self._followers:
            self.mark_dirty(task_id)

    def on_reconnect(self) -> None:
        """Notifications may have been lost while the listener was away: re-read everything."""
        for task_id in list(self._followers):
            self.mark_dirty(task_id)

    def mark_dirty(self, task_id: uuid.UUID) -> None:
        self._dirty.add(task_id)
        self._wake.set()

    # ------------------------------------------------------------ the hub's clocks

    async def _heartbeat_loop(self) -> None:
        """One timer for every stream: a comment to each that wrote no event since the last.

        The frame is encoded once per tick; a stream busy with events needs no keep-alive.
        """
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            frame = heartbeat_frame()
            for followers in list(self._followers.values()):
                for follower in followers:
                    if follower.wrote:
                        follower.wrote = False
                    else:
                        follower.heartbeat(frame)

    async def _watch_sends(self) -> None:
        """End the streams whose client read nothing for `send_timeout_seconds`.

        A send waits only while the client's socket buffers are full. Rather than arm a
        timer around every send, streams note when a send began, and this one loop
        cancels those that have waited too long: between 1 and 1.25 times the timeout.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.send_timeout_seconds / 4)
            too_old = loop.time() - self.send_timeout_seconds
            for follower, since in list(self.sending.items()):
                if since <= too_old and not follower.stalled and follower.writer is not None:
                    follower.stalled = True
                    follower.writer.cancel()

    async def _watch_stop_signal(self) -> None:
        """End every stream at the server's stop signal, not after its drain period."""
        # Polled, as sse-starlette's own watcher does: its patch of uvicorn's exit handler
        # sets the flag at SIGTERM/SIGINT, and no event can be awaited instead.
        while True:
            if self._stop_requested():
                self.end_all_streams()
                return
            await asyncio.sleep(SHUTDOWN_POLL_SECONDS)

    # ------------------------------------------------------------ reading events

    async def _read_loop(self) -> None:
        while True:
            await self._wake.wait()
            await self._read_errors(self._deliver_dirty)

    async def _deliver_dirty(self) -> None:
        self._wake.clear()
        dirty, self._dirty = self._dirty, set()
        try:
            await self._fetch_and_deliver(dirty)
        except Exception:
            self._dirty |= dirty  # read again on the next attempt, with whatever came since
            raise

    async def _fetch_and_deliver(self, dirty: set[uuid.UUID]) -> None:
        cursors: dict[uuid.UUID, int] = {}
        for task_id in dirty:
            placed = [
                f.last_seq for f in self._followers.get(task_id, ()) if f.last_seq is not None
            ]
            if placed:
                cursors[task_id] = min(placed)
        if not cursors:
            return
        task_ids = list(cursors)
        async with self._lane, self.database.driver() as driver:
            rows = await history.transitions_after(driver, cursors)
            updated = {row[0] for row in rows}
            existing = updated
            if len(updated) < len(task_ids):
                existing = await history.existing_tasks(driver, task_ids)
        for row in rows:
            update = TaskUpdate(*row)
            for follower in list(self._followers.get(update.task_id, ())):
                follower.offer(update)
        for task_id in set(task_ids) - existing:
            for follower in list(self._followers.get(task_id, ())):
                self.unfollow(follower)
                follower.offer(StreamEnd("the task was deleted"))
