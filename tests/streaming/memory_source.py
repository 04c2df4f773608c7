"""A `TransitionSource` in memory, so the hub's logic is tested without a database."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime

from app.events.updates import TaskState, TaskUpdate


class MemoryTransitions:
    """Tasks with an owner and their transitions; records the reads of each batch."""

    def __init__(self) -> None:
        self.owners: dict[uuid.UUID, uuid.UUID] = {}
        self.history: dict[uuid.UUID, list[TaskUpdate]] = {}
        self.batch_cursors: list[dict[uuid.UUID, int]] = []  # one entry per batch read
        self.existence_checks: list[list[uuid.UUID]] = []
        self.failing_batches = 0  # the next this many batches fail, as a database fault would

    def create(self, user_id: uuid.UUID, *statuses: str) -> uuid.UUID:
        task_id = uuid.uuid4()
        self.owners[task_id] = user_id
        self.history[task_id] = []
        for status in statuses or ("created",):
            self.record(task_id, status)
        return task_id

    def record(self, task_id: uuid.UUID, status: str) -> TaskUpdate:
        events = self.history[task_id]
        update = TaskUpdate(task_id, len(events) + 1, status, datetime.now(UTC), None, None)
        events.append(update)
        return update

    def delete(self, task_id: uuid.UUID) -> None:
        del self.owners[task_id], self.history[task_id]

    async def task_state(self, task_id: uuid.UUID) -> TaskState | None:
        if task_id not in self.owners:
            return None
        return TaskState(self.owners[task_id], self.history[task_id][-1])

    async def transitions(self, task_id: uuid.UUID, *, after_seq: int) -> list[TaskUpdate]:
        return [u for u in self.history.get(task_id, []) if u.seq > after_seq]

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[MemoryTransitions]:
        if self.failing_batches:
            self.failing_batches -= 1
            raise ConnectionError("the database is away")
        yield self

    async def transitions_after(self, cursors: Mapping[uuid.UUID, int]) -> list[TaskUpdate]:
        self.batch_cursors.append(dict(cursors))
        return [
            update
            for task_id in sorted(cursors)
            for update in self.history.get(task_id, [])
            if update.seq > cursors[task_id]
        ]

    async def existing_tasks(self, task_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        self.existence_checks.append(list(task_ids))
        return {task_id for task_id in task_ids if task_id in self.owners}
