"""The delivery worker's statements: claim, store the body, record an attempt, release, sweep.

They run on a pooled connection's asyncpg connection (`Database.driver()`), as named
statements of app/db/sql/webhooks.sql: each is one statement in autocommit, prepared once
per connection. A claim leases its deliveries and counts the attempt; the result is
written fenced by the lease, so a worker whose lease ran out changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.db.queries import queries

PENDING = "pending"


@dataclass(frozen=True)
class ClaimedDelivery:
    id: uuid.UUID
    task_id: uuid.UUID
    user_id: uuid.UUID
    event_type: str
    callback_url: str
    receiver_host: str  # host[:port] of the callback, lower case
    payload: bytes | None
    attempt: int  # this attempt's number, 1 for the first
    created_at: datetime
    age_seconds: float  # since the task ended, by the database's clock


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    started_at: datetime
    duration_seconds: float
    status_code: int | None
    outcome: str
    detail: str | None


async def claim(
    connection: asyncpg.Connection,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    per_host: int,
    rooms: dict[str, int] | None = None,
) -> list[ClaimedDelivery]:
    """Up to `limit` due deliveries, leased to `owner`, each with its attempt counted,
    at most `per_host` (or the host's entry in `rooms`) to one receiver host."""
    rooms = rooms or {}
    rows = await queries("webhooks").claim_deliveries.fetch(
        connection,
        owner=owner,
        limit=limit,
        lease_seconds=lease_seconds,
        per_host=per_host,
        hosts=list(rooms),
        rooms=list(rooms.values()),
    )
    return [
        ClaimedDelivery(
            id=row["id"],
            task_id=row["task_id"],
            user_id=row["user_id"],
            event_type=row["event_type"],
            callback_url=row["callback_url"],
            receiver_host=row["receiver_host"],
            payload=row["payload"],
            attempt=row["attempts"],
            created_at=row["created_at"],
            age_seconds=float(row["age"]),
        )
        for row in rows
    ]


async def store_payload(
    connection: asyncpg.Connection, delivery_id: uuid.UUID, body: bytes
) -> bytes:
    """Keep the first body ever stored: every attempt sends exactly those bytes."""
    stored = await queries("webhooks").store_payload.fetchval(connection, id=delivery_id, body=body)
    return bytes(stored) if stored is not None else body


async def record_attempt(
    connection: asyncpg.Connection,
    delivery: ClaimedDelivery,
    *,
    owner: str,
    state: str,
    retry_in: float,
    record: AttemptRecord,
) -> bool:
    """Write the attempt and the delivery's next state; False if the lease was lost."""
    written = await queries("webhooks").record_attempt.fetchval(
        connection,
        id=delivery.id,
        owner=owner,
        attempt=delivery.attempt,
        state=state,
        retry_in=retry_in,
        started_at=record.started_at,
        duration=record.duration_seconds,
        status_code=record.status_code,
        outcome=record.outcome,
        detail=record.detail,
    )
    return written is not None


async def release(connection: asyncpg.Connection, ids: list[uuid.UUID], *, owner: str) -> int:
    """Hand back deliveries this process claimed but did not finish (shutdown)."""
    if not ids:
        return 0
    status = await queries("webhooks").release_deliveries.execute(connection, ids=ids, owner=owner)
    return _rows_affected(status)


async def seconds_until_next_due(
    connection: asyncpg.Connection, *, blocked: list[str] | None = None
) -> float | None:
    """When the next pending delivery can be claimed (in flight now is not "due now").
    Deliveries to the `blocked` hosts (no room now) are left out: their being due is no
    reason to wake."""
    value = await queries("webhooks").seconds_until_next_due.fetchval(
        connection, blocked=blocked or []
    )
    return None if value is None else float(value)


async def store_limits(connection: asyncpg.Connection, *, max_pending_per_user: int) -> None:
    """The limits the outbox trigger applies (0: no cap on a user's pending deliveries)."""
    await queries("webhooks").store_limits.execute(connection, cap=max_pending_per_user or None)


async def report_dropped(
    connection: asyncpg.Connection, *, limit: int = 1000
) -> dict[uuid.UUID, int]:
    """Deliveries the per-user cap dropped that no process has reported yet, by user;
    marked finished, so each is reported once."""
    dropped: dict[uuid.UUID, int] = {}
    for row in await queries("webhooks").report_dropped.fetch(connection, limit=limit):
        dropped[row["user_id"]] = dropped.get(row["user_id"], 0) + 1
    return dropped


async def expire_overdue(
    connection: asyncpg.Connection, *, max_age_seconds: float, limit: int = 1000
) -> int:
    """End as `expired` the pending deliveries older than the retry window that no attempt
    holds: those behind an open breaker would otherwise wait for a probe each."""
    status = await queries("webhooks").expire_overdue.execute(
        connection, age=max_age_seconds, limit=limit
    )
    return _rows_affected(status)


def _rows_affected(status: str) -> int:
    """The row count of a command status such as `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])
