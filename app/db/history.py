"""The task history (`task_events`): the one module that writes it, reads it and NOTIFYs.

Every history row is appended by a statement built by `recorded`: the task's own change
(an UPDATE of one task row), the numbered history row and its NOTIFY in one statement.
The service runs it inside its unit of work; the pipeline's queue runs it on an
autocommit connection, where being one statement makes the move all-or-nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Select,
    Text,
    Update,
    bindparam,
    cast,
    func,
    literal,
    null,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Task, TaskEvent

# One channel for every task event; the payload is "<task id>:<sequence number>" so it
# stays far below PostgreSQL's 8000-byte limit and the data is read from the history.
EVENTS_CHANNEL = "task_events"


@dataclass(frozen=True)
class EventRecord:
    kind: str  # "status" (a transition) or "retry" (a transient failure that will be retried)
    status: str
    stage: str | None = None
    attempt: int | None = None
    detail: str | None = None


def recorded(
    move: Update,
    *,
    kind: str | ColumnElement[Any] = "status",
    status: ColumnElement[Any] | None = None,
    stage: ColumnElement[Any] | None = None,
    attempt: ColumnElement[Any] | None = None,
    detail: ColumnElement[Any] | None = None,
    alongside: Callable[[CTE], CTE] | None = None,
) -> Select[tuple[int, Any]]:
    """`move` (an UPDATE of at most one task) with its history row and NOTIFY.

    The statement returns the new sequence number, or no row when `move` updated nothing.
    Bumping `tasks.last_event_seq` row-locks the task, so concurrent writers of one task
    serialise and sequence numbers never collide or skip. The event's status is the task's
    status after `move` unless `status` says otherwise. `alongside` adds a further write
    that depends on the move (given the `moved` CTE: id, status, last_event_seq).

    Rendered, it reads::

        WITH moved AS (UPDATE tasks SET ..., last_event_seq = last_event_seq + 1,
                       updated_at = now() WHERE ... RETURNING id, status, last_event_seq),
        recorded AS (INSERT INTO task_events (task_id, seq, kind, status, stage, attempt,
                     detail) SELECT id, last_event_seq, ... FROM moved RETURNING task_id, seq)
        SELECT seq, pg_notify('task_events', task_id::text || ':' || seq) FROM recorded
    """
    moved = (
        move.values(last_event_seq=Task.last_event_seq + 1, updated_at=func.now())
        .returning(Task.id, Task.status, Task.last_event_seq)
        .cte("moved")
    )
    event = (
        insert(TaskEvent)
        .from_select(
            ["task_id", "seq", "kind", "status", "stage", "attempt", "detail"],
            select(
                moved.c.id,
                moved.c.last_event_seq,
                literal(kind) if isinstance(kind, str) else kind,
                moved.c.status if status is None else status,
                null() if stage is None else stage,
                null() if attempt is None else attempt,
                null() if detail is None else detail,
            ),
        )
        .returning(TaskEvent.task_id, TaskEvent.seq)
        .cte("recorded")
    )
    payload = cast(event.c.task_id, Text) + ":" + cast(event.c.seq, Text)
    statement = select(event.c.seq, func.pg_notify(EVENTS_CHANNEL, payload))
    if alongside is not None:
        # An unreferenced data-modifying CTE still runs: PostgreSQL executes every one.
        statement = statement.add_cte(alongside(moved))
    return statement


def recorded_transitions_sql(source: str) -> str:
    """Two CTEs, as SQL text, that record the status transitions of a statement written out.

    For statements run as text (the pipeline's claim), where one move may pass through
    several statuses. `source` names an earlier CTE of the statement that returns, per
    task it moved, `id`, `last_event_seq` (already bumped by the number of steps) and
    `steps` (a `text[]` of the statuses entered, in order; empty: nothing to record). The
    rows are numbered like `recorded` numbers them and each gets its NOTIFY; the statement
    must read `notified` (e.g. `(SELECT count(*) FROM notified)`), or PostgreSQL skips it.
    """
    return f"""
    recorded AS (
        INSERT INTO task_events (task_id, seq, kind, status)
        SELECT moved.id, moved.last_event_seq - cardinality(moved.steps) + step.number,
               'status', step.status
        FROM {source} moved
        CROSS JOIN LATERAL unnest(moved.steps) WITH ORDINALITY AS step (status, number)
        RETURNING task_id, seq
    ),
    notified AS (
        SELECT pg_notify('{EVENTS_CHANNEL}', task_id::text || ':' || seq) FROM recorded
    )"""


# The event's values are named `event_*`: an UPDATE takes parameters named like a column
# as that column's new value.
_APPEND_EVENT = recorded(
    update(Task).where(Task.id == bindparam("task_id")),
    kind=bindparam("event_kind", type_=TaskEvent.kind.type),
    status=bindparam("event_status", type_=TaskEvent.status.type),
    stage=bindparam("event_stage", type_=TaskEvent.stage.type),
    attempt=bindparam("event_attempt", type_=TaskEvent.attempt.type),
    detail=bindparam("event_detail", type_=TaskEvent.detail.type),
)


def parse_notification(payload: str) -> tuple[uuid.UUID, int] | None:
    """Inverse of the payload built by `recorded`; None for anything malformed."""
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
            "event_kind": event.kind,
            "event_status": event.status,
            "event_stage": event.stage,
            "event_attempt": event.attempt,
            "event_detail": event.detail,
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
