"""The task history (`task_events`): the one module that writes it, reads it and NOTIFYs.

Its statements are `app/db/sql/history.sql`. Every history row is numbered and NOTIFYed by
the database function `record_task_events` (migration 0006), which the statements that
move a task call in the same statement as the move.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import ARRAY, Select, Text, Update, cast, func, select, text
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task, TaskEvent
from app.db.queries import queries

# One channel for every task event; the payload is "<task id>:<sequence number>" so it
# stays far below PostgreSQL's 8000-byte limit and the data is read from the history.
# `record_task_events` and `history.sql` write the same name.
EVENTS_CHANNEL = "task_events"

_HISTORY = queries("history")


@dataclass(frozen=True)
class EventRecord:
    kind: str  # "status" (a transition) or "retry" (a transient failure that will be retried)
    status: str
    stage: str | None = None
    attempt: int | None = None
    detail: str | None = None


def recorded(move: Update) -> Select[tuple[int, Any]]:
    """`move` (an UPDATE of at most one task) with its `status` event, for SQLAlchemy
    statements not yet written out in `app/db/sql`.

    Returns the new sequence number, or no row when `move` updated nothing.
    """
    moved = (
        move.values(last_event_seq=Task.last_event_seq + 1, updated_at=func.now())
        .returning(Task.id, Task.status, Task.last_event_seq)
        .cte("moved")
    )
    return select(
        moved.c.last_event_seq,
        func.record_task_events(
            moved.c.id, moved.c.last_event_seq, cast(array([moved.c.status]), ARRAY(Text))
        ),
    )


def parse_notification(payload: str) -> tuple[uuid.UUID, int] | None:
    """Inverse of the payload `record_task_events` sends; None for anything malformed."""
    task_part, _, seq_part = payload.partition(":")
    try:
        return uuid.UUID(task_part), int(seq_part)
    except ValueError:
        return None


async def append_event(session: AsyncSession, task_id: uuid.UUID, event: EventRecord) -> int:
    """Number the event after the task's last one, store it and NOTIFY at commit."""
    seq = await session.scalar(
        _HISTORY.append_event.clause,
        {
            "task_id": task_id,
            "kind": event.kind,
            "status": str(event.status),
            "stage": event.stage,
            "attempt": event.attempt,
            "detail": event.detail,
        },
    )
    if seq is None:
        raise LookupError(f"task {task_id} does not exist")
    return int(seq)


async def notify_deleted(session: AsyncSession, task_id: uuid.UUID) -> None:
    """Tell followers (sequence number 0) that the task is gone; sent at commit."""
    await session.execute(_HISTORY.notify_deleted.clause, {"task_id": task_id})


async def list_events(
    session: AsyncSession, task_id: uuid.UUID, *, after_seq: int = 0
) -> list[TaskEvent]:
    """The task's history after `after_seq`, oldest first."""
    rows = await session.scalars(
        select(TaskEvent).from_statement(_HISTORY.list_events.clause),
        {"task_id": task_id, "after_seq": after_seq},
    )
    return list(rows)


# ---------------------------------------------------------------- followers' reads
#
# A follower sees status transitions only, each with the task's current accuracy and
# comment: (task_id, seq, status, created_at, accuracy, comment).

_LATEST_TRANSITION = text(
    """
    SELECT t.user_id, e.seq, e.status, e.created_at, t.accuracy, t.comment
    FROM tasks t
    JOIN task_events e ON e.task_id = t.id
    WHERE t.id = :task_id AND e.kind = 'status'
    ORDER BY e.seq DESC
    LIMIT 1
    """
)
_TRANSITIONS = text(
    """
    SELECT e.task_id, e.seq, e.status, e.created_at, t.accuracy, t.comment
    FROM task_events e JOIN tasks t ON t.id = e.task_id
    WHERE e.task_id = :task_id AND e.seq > :after AND e.kind = 'status'
    ORDER BY e.seq
    """
)


async def latest_transition(session: AsyncSession, task_id: uuid.UUID) -> tuple[Any, ...] | None:
    """(user_id, seq, status, created_at, accuracy, comment) of the last transition."""
    row = (await session.execute(_LATEST_TRANSITION, {"task_id": task_id})).one_or_none()
    return None if row is None else tuple(row)


async def transitions(
    session: AsyncSession, task_id: uuid.UUID, *, after_seq: int
) -> list[tuple[Any, ...]]:
    """The task's transitions after `after_seq`, oldest first."""
    rows = await session.execute(_TRANSITIONS, {"task_id": task_id, "after": after_seq})
    return [tuple(row) for row in rows]


# The event hub's reads, one per batch of notifications, run on a pooled connection's
# asyncpg connection itself (`Database.driver()`): one statement, one round trip. Through
# a session each would also cost a BEGIN, a ROLLBACK when the connection goes back to the
# pool, and the ORM's row handling; a single SELECT sees one consistent snapshot without
# a transaction. Their errors reach only the hub, which retries: no request maps them to
# a response.

_TRANSITIONS_AFTER = """
    SELECT e.task_id, e.seq, e.status, e.created_at, t.accuracy, t.comment
    FROM unnest($1::uuid[], $2::integer[]) AS cursor (task_id, after_seq)
    JOIN task_events e ON e.task_id = cursor.task_id AND e.seq > cursor.after_seq
    JOIN tasks t ON t.id = e.task_id
    WHERE e.kind = 'status'
    ORDER BY e.task_id, e.seq
"""
_EXISTING = "SELECT id FROM tasks WHERE id = ANY($1::uuid[])"


async def transitions_after(
    driver: asyncpg.Connection, cursors: dict[uuid.UUID, int]
) -> list[tuple[Any, ...]]:
    """The transitions of several tasks, each after its own sequence number, in one query."""
    task_ids = list(cursors)
    rows = await driver.fetch(_TRANSITIONS_AFTER, task_ids, [cursors[t] for t in task_ids])
    return [tuple(row) for row in rows]


async def existing_tasks(
    driver: asyncpg.Connection, task_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of `task_ids` still exist."""
    return {row[0] for row in await driver.fetch(_EXISTING, list(task_ids))}
