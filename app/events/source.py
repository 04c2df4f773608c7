"""Where the hub reads what its followers see: an interface, so the hub runs without a server.

`app.events.database_source` reads the task history; the hub's tests use one in memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from app.events.updates import TaskState, TaskUpdate


class TransitionBatch(Protocol):
    """The reads of one batch of notified tasks, on one connection."""

    async def transitions_after(self, cursors: Mapping[uuid.UUID, int]) -> list[TaskUpdate]:
        """The transitions of each task after its own sequence number, by task then seq."""
        ...

    async def existing_tasks(self, task_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of `task_ids` still exist."""
        ...


class TransitionSource(Protocol):
    """The status transitions of tasks, as followers see them."""

    async def task_state(self, task_id: uuid.UUID) -> TaskState | None:
        """Owner and latest transition of a task (None: no such task)."""
        ...

    async def transitions(self, task_id: uuid.UUID, *, after_seq: int) -> list[TaskUpdate]:
        """The task's transitions after `after_seq`, oldest first."""
        ...

    def batch(self) -> AbstractAsyncContextManager[TransitionBatch]:
        """A connection for the reads of one batch."""
        ...
