"""Sending a task's webhook again, on an operator's request.

A redelivery is recorded in the task's history as a `retry` of the stage `webhook`, its
detail naming the operator and the reason (followers see status transitions only).

A redelivery is a new outbox row with the same event, callback and payload: a new
`webhook-id`, so a receiver that dropped or deduplicated the first one takes it, and a new
age, so the delivery age limit counts from the request, not from the task's end. The new
row and its history entry are written in the caller's transaction: both or neither.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.history import EventRecord, append_event
from app.db.queries import queries

WEBHOOK_STAGE = "webhook"


async def redeliver(
    session: AsyncSession, delivery_id: uuid.UUID, *, detail: str
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(new delivery id, task id) queued for sending; None when there is no such delivery."""
    row = (
        await session.execute(queries("webhooks").redeliver.clause, {"delivery_id": delivery_id})
    ).one_or_none()
    if row is None:
        return None
    await append_event(
        session,
        row.task_id,
        EventRecord(kind="retry", status=row.status, stage=WEBHOOK_STAGE, detail=detail),
    )
    return row.id, row.task_id
