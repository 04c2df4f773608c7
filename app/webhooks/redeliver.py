"""Sending a task's webhook again, on an operator's request.

A redelivery is a new outbox row with the same event, callback and payload: a new
`webhook-id`, so a receiver that dropped or deduplicated the first one takes it, and a new
age, so the delivery age limit counts from the request, not from the task's end.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

_REDELIVER = text(
    """
    INSERT INTO webhook_deliveries (task_id, event_type, callback_url, payload)
    SELECT task_id, event_type, callback_url, payload
    FROM webhook_deliveries WHERE id = :delivery_id
    RETURNING id, task_id
    """
)


async def redeliver(
    connection: AsyncConnection | AsyncSession, delivery_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(new delivery id, task id) queued for sending; None when there is no such delivery."""
    row = (await connection.execute(_REDELIVER, {"delivery_id": delivery_id})).one_or_none()
    return None if row is None else (row.id, row.task_id)
