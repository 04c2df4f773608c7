"""The append-only status history and its notification, written in the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task, TaskEvent

# One channel for every task event; the payload is "<task id>:<sequence number>" so it
# stays far below PostgreSQL's 8000-byte limit and the data is read from the history.
EVENTS_CHANNEL = "task_events"


@dataclass(frozen=True)
class EventRecord:
    kind: str
    status: str
    stage: str | None = None
    attempt: int | None = None
    detail: str | None = None


def notification_payload(task_id: uuid.UUID, seq: int) -> str:
    return f"{task_id}:{seq}"


def parse_notification(payload: str) -> tuple[uuid.UUID, int] | None:
    """Inverse of `notification_payload`; None for anything malformed."""
    task_part, _, seq_part = payload.partition(":")
    try:
        return uuid.UUID(task_part), int(seq_part)
    except ValueError:
        return None


async def append_event(session: AsyncSession, task_id: uuid.UUID, event: EventRecord) -> int:
    """Number the event after the task's last one, store it and NOTIFY at commit.

    Bumping `tasks.last_event_seq` row-locks the task, so concurrent writers of one task
    serialise and sequence numbers never collide or skip.
    """
    seq = await session.scalar(
        update(Task)
        .where(Task.id == task_id)
        .values(last_event_seq=Task.last_event_seq + 1, updated_at=func.now())
        .returning(Task.last_event_seq)
        # Callers that hold the Task object do not need it refreshed (now() is the
        # transaction's time, so updated_at matches what they already have).
        .execution_options(synchronize_session=False)
    )
    if seq is None:
        raise LookupError(f"task {task_id} does not exist")
    session.add(
        TaskEvent(
            task_id=task_id,
            seq=seq,
            kind=event.kind,
            status=event.status,
            stage=event.stage,
            attempt=event.attempt,
            detail=event.detail,
        )
    )
    await session.flush()
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": EVENTS_CHANNEL, "payload": notification_payload(task_id, seq)},
    )
    return seq


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
