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
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import history
from app.db.status import is_terminal
from app.retry import Backoff, retrying

log = logging.getLogger(__name__)

FOLLOWER_QUEUE_SIZE = 64
# The reader waits out a database fault before it reads the dirty tasks again.
READ_BACKOFF = Backoff(base=0.25, cap=5.0)


@dataclass(frozen=True)
class TaskUpdate:
    """A status transition as followers see it."""

    task_id: uuid.UUID
    seq: int
    status: str
    created_at: datetime
    accuracy: float | None
    comment: str | None

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)


@dataclass(frozen=True)
class TaskState:
    """A task's owner and current position, read when a follower arrives."""

    user_id: uuid.UUID
    current: TaskUpdate


class StreamEnd(Exception):
    """The stream cannot go on: the task was deleted, the follower fell behind, or shutdown."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooManyFollowers(Exception):
    """This process already serves `MANAGER_SSE_MAX_FOLLOWERS` followers."""


class TooManyFollowersForUser(Exception):
    """This user already has `MANAGER_SSE_MAX_FOLLOWERS_PER_USER` streams open here."""


class Follower:
    """One open stream's subscription: a bounded queue of updates after `last_seq`."""

    def __init__(self, hub: EventHub, task_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.hub = hub
        self.task_id = task_id
        self.user_id = user_id
        self.last_seq: int | None = None  # None until the follower has read its starting point
        # One slot more than the updates it may hold, so the end always fits behind them.
        self.queue: asyncio.Queue[TaskUpdate | StreamEnd] = asyncio.Queue(FOLLOWER_QUEUE_SIZE + 1)
        self._ended = False

    def offer(self, update: TaskUpdate | StreamEnd) -> None:
        if self._ended:
            return
        if isinstance(update, TaskUpdate):
            if self.last_seq is None or update.seq <= self.last_seq:
                return  # already replayed, or not yet placed
            if self.queue.qsize() >= FOLLOWER_QUEUE_SIZE:
                # A follower this far behind reconnects with Last-Event-ID and replays. It
                # keeps what it has and loses this update and later ones, never an earlier
                # one: a hole before the last id it saw would never be filled.
                self.hub.unfollow(self)
                update = StreamEnd("the follower fell behind")
            else:
                self.last_seq = update.seq
        if isinstance(update, StreamEnd):
            self._ended = True
        self.queue.put_nowait(update)

    def placed_at(self, seq: int) -> None:
        """The follower has everything up to `seq`; updates after it are queued from now on."""
        self.last_seq = seq
        self.hub.mark_dirty(self.task_id)

    async def next(self) -> TaskUpdate:
        item = await self.queue.get()
        if isinstance(item, StreamEnd):
            raise item
        return item


class EventHub:
    """Followers by task, fed from NOTIFY through one batched reader."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_followers: int,
        max_followers_per_user: int,
    ) -> None:
        self.sessions = sessions
        self.max_followers = max_followers
        self.max_followers_per_user = max_followers_per_user
        self._followers: dict[uuid.UUID, set[Follower]] = defaultdict(set)
        self._count = 0
        self._per_user: dict[uuid.UUID, int] = defaultdict(int)
        self._dirty: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._lane = asyncio.Lock()  # one streaming read at a time: one pooled connection
        self._reader: asyncio.Task[None] | None = None
        self._read_errors = retrying(READ_BACKOFF, log=log, message="event hub read failed")

    @property
    def follower_count(self) -> int:
        return self._count

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_loop(), name="event-hub-reader")

    async def stop(self) -> None:
        """End every stream (shutdown) and stop reading."""
        for followers in list(self._followers.values()):
            for follower in list(followers):
                self.unfollow(follower)
                follower.offer(StreamEnd("the server is shutting down"))
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

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
        async with self._lane, self.sessions() as session:
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
        async with self._lane, self.sessions() as session:
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
        async with self._lane, self.sessions() as session:
            rows = await history.transitions_after(session, cursors)
            updated = {row[0] for row in rows}
            existing = updated
            if len(updated) < len(task_ids):
                existing = await history.existing_tasks(session, task_ids)
        for row in rows:
            update = TaskUpdate(*row)
            for follower in list(self._followers.get(update.task_id, ())):
                follower.offer(update)
        for task_id in set(task_ids) - existing:
            for follower in list(self._followers.get(task_id, ())):
                self.unfollow(follower)
                follower.offer(StreamEnd("the task was deleted"))
