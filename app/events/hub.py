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
from collections import defaultdict

from app.events.follower import Follower
from app.events.frames import heartbeat_frame
from app.events.send_watch import SendWatch
from app.events.source import TransitionSource
from app.events.updates import TaskState, TaskUpdate
from app.retry import Backoff, retrying

log = logging.getLogger(__name__)

# The reader waits out a database fault before it reads the dirty tasks again.
READ_BACKOFF = Backoff(base=0.25, cap=5.0)
SHUTTING_DOWN = "the server is shutting down"


class TooManyFollowers(Exception):
    """This process already serves `MANAGER_SSE_MAX_FOLLOWERS` followers."""


class TooManyFollowersForUser(Exception):
    """This user already has `MANAGER_SSE_MAX_FOLLOWERS_PER_USER` streams open here."""


class EventHub:
    """Followers by task, fed from NOTIFY through one batched reader.

    Its clocks are shared by every stream: one heartbeat tick, and one watch over the
    streams' sends (`sends`). `end_all_streams` is the stop signal's way in.
    """

    def __init__(
        self,
        source: TransitionSource,
        *,
        max_followers: int,
        max_followers_per_user: int,
        heartbeat_seconds: float = 15.0,
        send_timeout_seconds: float = 30.0,
    ) -> None:
        self.source = source
        self.max_followers = max_followers
        self.max_followers_per_user = max_followers_per_user
        self.heartbeat_seconds = heartbeat_seconds
        self.sends = SendWatch(send_timeout_seconds)
        self._followers: dict[uuid.UUID, set[Follower]] = defaultdict(set)
        self._count = 0
        self._per_user: dict[uuid.UUID, int] = defaultdict(int)
        self._dirty: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._lane = asyncio.Lock()  # one streaming read at a time: one pooled connection
        self._loops: list[asyncio.Task[None]] = []
        self._read_errors = retrying(READ_BACKOFF, log=log, message="event hub read failed")
        self._stopping = False

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
            asyncio.create_task(self.sends.run(), name="event-hub-send-timeout"),
        ]

    def end_all_streams(self) -> None:
        """Shutdown: end every stream after what it holds, and every stream opened later."""
        self._stopping = True
        for followers in list(self._followers.values()):
            for follower in list(followers):
                follower.close(SHUTTING_DOWN)

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
        follower = Follower(task_id, user_id, release=self.unfollow)
        self._followers[task_id].add(follower)
        self._count += 1
        self._per_user[user_id] += 1
        if self._stopping:  # the stream sends its starting point, then ends
            follower.close(SHUTTING_DOWN)
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

    def place(self, follower: Follower, seq: int) -> None:
        """The follower has everything up to `seq`; updates after it are queued from now on."""
        follower.last_seq = seq
        self.mark_dirty(follower.task_id)  # whatever came since its read

    async def task_state(self, task_id: uuid.UUID) -> TaskState | None:
        """Owner and latest transition of a task (None: no such task)."""
        async with self._lane:
            return await self.source.task_state(task_id)

    async def history(self, task_id: uuid.UUID, *, after_seq: int) -> list[TaskUpdate]:
        """The task's transitions after `after_seq`, for a resuming follower."""
        async with self._lane:
            return await self.source.transitions(task_id, after_seq=after_seq)

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

    # ------------------------------------------------------------ heartbeat

    async def _heartbeat_loop(self) -> None:
        """One timer for every stream: a comment to each that got no event since the last.

        The frame is encoded once per tick; a stream busy with events needs no keep-alive.
        """
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            frame = heartbeat_frame()
            for followers in list(self._followers.values()):
                for follower in followers:
                    follower.heartbeat(frame)

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
        # One cursor per task: its least advanced placed follower; the others skip
        # what they have already.
        cursors: dict[uuid.UUID, int] = {}
        for task_id in dirty:
            placed = [
                f.last_seq for f in self._followers.get(task_id, ()) if f.last_seq is not None
            ]
            if placed:
                cursors[task_id] = min(placed)
        if not cursors:
            return
        async with self._lane, self.source.batch() as batch:
            updates = await batch.transitions_after(cursors)
            existing = {update.task_id for update in updates}
            if len(existing) < len(cursors):  # a task with nothing new may be gone
                existing = await batch.existing_tasks(list(cursors))
        for update in updates:
            for follower in list(self._followers.get(update.task_id, ())):
                follower.deliver(update)
        for task_id in cursors.keys() - existing:
            for follower in list(self._followers.get(task_id, ())):
                follower.close("the task was deleted")
