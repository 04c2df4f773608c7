"""The append-only status history and its notification, written in the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import TaskEvent

# One channel for every task event; the payload is "<task id>:<sequence number>" so it
# stays far below PostgreSQL's 8000-byte limit and the data is read from the history.
EVENTS_CHANNEL = "task_events"

# Bumping tasks.last_event_seq row-locks the task, so concurrent writers of one task
# serialise and sequence numbers never collide or skip. One round trip: number, store,
# notify (delivered by PostgreSQL only when the transaction commits).
_APPEND_EVENT = text(
    """
    WITH numbered AS (
        UPDATE tasks SET last_event_seq = last_event_seq + 1, updated_at = now()
        WHERE id = :task_id
        RETURNING id, last_event_seq
    ), stored AS (
        INSERT INTO task_events (task_id, seq, kind, status, stage, attempt, detail)
        SELECT id, last_event_seq, :kind, :status, :stage, :attempt, :detail FROM numbered
        RETURNING task_id, seq
    )
    SELECT seq, pg_notify(:channel, task_id::text || ':' || seq) FROM stored
    """
)


@dataclass(frozen=True)
class EventRecord:
    kind: str  # "status" (a transition) or "retry" (a transient failure that will be retried)
    status: str
    stage: str | None = None
    attempt: int | None = None
    detail: str | None = None


def parse_notification(payload: str) -> tuple[uuid.UUID, int] | None:
    """Inverse of the payload built by `_APPEND_EVENT`; None for anything malformed."""
    task_part, _, seq_part = payload.partition(":")
    try:
        return uuid.UUID(task_part), int(seq_part)
    except ValueError:
        return None


async def append_event(session: AsyncSession, task_id: uuid.UUID, event: EventRecord) -> int:
    """Number the event after the task's last one, store it and NOTIFY at commit."""
    seq = await session.scalar(
        _APPEND_EVENT,
        {
            "task_id": task_id,
            "kind": event.kind,
            "status": event.status,
            "stage": event.stage,
            "attempt": event.attempt,
            "detail": event.detail,
            "channel": EVENTS_CHANNEL,
        },
    )
    if seq is None:
        raise LookupError(f"task {task_id} does not exist")
    return int(seq)


async def notify_deleted(session: AsyncSession, task_id: uuid.UUID) -> None:
    """Tell followers (sequence number 0) that the task is gone; sent at commit."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": EVENTS_CHANNEL, "payload": f"{task_id}:0"},
    )


async def list_events(
    session: AsyncSession, task_id: uuid.UUID, *, after_seq: int = 0
) -> list[TaskEvent]:
    """The task's history after `after_seq`, oldest first."""
    rows = await session.scalars(
        select(TaskEvent)
        .where(TaskEvent.task_id == task_id, TaskEvent.seq > after_seq)
        .order_by(TaskEvent.seq)
    )
    return list(rows)
