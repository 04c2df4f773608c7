"""What the API, the console and the metrics read about deliveries.

Read through the caller's SQLAlchemy connection (a request's session, the console's), so
a database outage is answered like any other of the request's statements.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.queries import queries
from app.webhooks.outbox import PENDING, AttemptRecord


@dataclass(frozen=True)
class DeliveryReport:
    id: uuid.UUID
    event_type: str
    callback_url: str
    state: str
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    attempts: list[AttemptRecord]


async def pending_summary(connection: AsyncConnection) -> tuple[int, float]:
    """Deliveries still to be made, and how long the oldest has waited (0: none)."""
    row = (await connection.execute(queries("webhooks").pending_summary.clause)).one()
    return int(row.pending), float(row.oldest)


async def task_deliveries(connection: AsyncConnection, task_id: uuid.UUID) -> list[DeliveryReport]:
    """A task's deliveries, oldest first, each with its attempts in order."""
    webhooks = queries("webhooks")
    deliveries = (
        await connection.execute(webhooks.task_deliveries.clause, {"task_id": task_id})
    ).all()
    if not deliveries:
        return []
    attempts: dict[uuid.UUID, list[AttemptRecord]] = {row.id: [] for row in deliveries}
    rows = await connection.execute(webhooks.delivery_attempts.clause, {"ids": list(attempts)})
    for row in rows:
        attempts[row.delivery_id].append(
            AttemptRecord(
                attempt=row.attempt,
                started_at=row.started_at,
                duration_seconds=row.duration_seconds,
                status_code=row.status_code,
                outcome=row.outcome,
                detail=row.detail,
            )
        )
    return [
        DeliveryReport(
            id=row.id,
            event_type=row.event_type,
            callback_url=row.callback_url,
            state=row.state,
            created_at=row.created_at,
            # Only a pending delivery has a next attempt.
            next_attempt_at=row.next_attempt_at if row.state == PENDING else None,
            finished_at=row.finished_at,
            attempts=attempts[row.id],
        )
        for row in deliveries
    ]
