"""The hub's reads of the task history (`app/db/sql/events.sql`)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg

from app.db.engine import Database
from app.db.queries import queries
from app.events.updates import TaskState, TaskUpdate

_EVENTS = queries("events")


class DatabaseTransitions:
    """A `TransitionSource` on the service's database.

    A follower's opening reads go through a session, so a fault reaches the request as
    SQLAlchemy's error, which the API maps to a response. The hub's batch reads run on a
    pooled connection's asyncpg connection: one statement, one round trip, with no
    BEGIN/ROLLBACK nor ORM row handling per batch; their errors reach only the hub, which
    retries.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    async def task_state(self, task_id: uuid.UUID) -> TaskState | None:
        async with self.database.sessions() as session:
            result = await session.execute(_EVENTS.latest_transition.clause, {"task_id": task_id})
            row = result.one_or_none()
        if row is None:
            return None
        user_id, seq, status, created_at, accuracy, comment = row
        return TaskState(user_id, TaskUpdate(task_id, seq, status, created_at, accuracy, comment))

    async def transitions(self, task_id: uuid.UUID, *, after_seq: int) -> list[TaskUpdate]:
        async with self.database.sessions() as session:
            rows = await session.execute(
                _EVENTS.transitions_after_seq.clause,
                {"task_id": task_id, "after_seq": after_seq},
            )
            return [TaskUpdate(*row) for row in rows]

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[_DriverBatch]:
        async with self.database.driver() as driver:
            yield _DriverBatch(driver)


class _DriverBatch:
    def __init__(self, driver: asyncpg.Connection) -> None:
        self.driver = driver

    async def transitions_after(self, cursors: Mapping[uuid.UUID, int]) -> list[TaskUpdate]:
        task_ids = list(cursors)
        rows: list[Any] = await _EVENTS.transitions_after_cursors.fetch(
            self.driver, task_ids=task_ids, after_seqs=[cursors[t] for t in task_ids]
        )
        return [TaskUpdate(*row) for row in rows]

    async def existing_tasks(self, task_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        rows = await _EVENTS.existing_tasks.fetch(self.driver, task_ids=list(task_ids))
        return {row[0] for row in rows}
