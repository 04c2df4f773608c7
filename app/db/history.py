"""The task history (`task_events`): the one module that writes it, reads it and NOTIFYs.

Its statements are `app/db/sql/history.sql`. Every history row is numbered and NOTIFYed by
the database function `record_task_events` (migration 0006), which the statements that
move a task call in the same statement as the move.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import TaskEvent
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
