"""The delivery rows' SQL: claim, store the body, record an attempt, list, summarise.

Deliveries are claimed the way tasks are: `FOR UPDATE SKIP LOCKED` and a lease, so two
processes never hold the same delivery at once. A claim counts the attempt; the result
is written fenced by `lease_owner` and that attempt number, so a worker whose lease ran
out (and whose delivery another worker took) changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

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


# Due deliveries, fairly across receivers: the walk visits each host with pending
# deliveries once through the (receiver_host, next_attempt_at) index (a skip scan, so a
# host with thousands pending costs one probe), takes up to its room of that host's
# soonest due deliveries, and the claim fills the free slots round-robin: every host's
# first before any host's second. A host missing from :hosts has room :per_host; one
# the caller gives room 0 (its slots full, or its breaker open) is skipped. The locks
# are taken per host with SKIP LOCKED, and their conditions are checked again on the
# row as locked, so two processes never claim one delivery.
_CLAIM = text(
    f"""
    WITH RECURSIVE receivers AS (
        (SELECT receiver_host AS host FROM webhook_deliveries
         WHERE state = '{PENDING}' ORDER BY receiver_host LIMIT 1)
        UNION ALL
        SELECT (SELECT d.receiver_host FROM webhook_deliveries AS d
                WHERE d.state = '{PENDING}' AND d.receiver_host > r.host
                ORDER BY d.receiver_host LIMIT 1)
        FROM receivers AS r WHERE r.host IS NOT NULL
    ),
    rooms AS (
        SELECT * FROM unnest(CAST(:hosts AS text[]), CAST(:rooms AS integer[])) AS l(host, room)
    ),
    due AS (
        SELECT picked.id, picked.next_attempt_at,
               row_number() OVER (PARTITION BY r.host ORDER BY picked.next_attempt_at) AS turn
        FROM receivers AS r
        LEFT JOIN rooms ON rooms.host = r.host
        CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_at FROM webhook_deliveries AS d
            WHERE d.state = '{PENDING}' AND d.receiver_host = r.host
              AND d.next_attempt_at <= now()
              AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())
            ORDER BY d.next_attempt_at
            LIMIT coalesce(rooms.room, CAST(:per_host AS integer))
            FOR UPDATE OF d SKIP LOCKED
        ) AS picked
        WHERE r.host IS NOT NULL
    ),
    chosen AS (
        SELECT id FROM due ORDER BY turn, next_attempt_at LIMIT :limit
    )
    UPDATE webhook_deliveries AS d
    SET lease_owner = :owner,
        lease_expires_at = now() + make_interval(secs => CAST(:lease_seconds AS float8)),
        attempts = d.attempts + 1
    FROM chosen
    WHERE d.id = chosen.id
    RETURNING d.id, d.task_id, d.user_id, d.event_type, d.callback_url, d.receiver_host,
              d.payload, d.attempts, d.created_at,
              extract(epoch FROM now() - d.created_at) AS age
    """
)


async def claim(
    connection: AsyncConnection,
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
    rows = await connection.execute(
        _CLAIM,
        {
            "owner": owner,
            "limit": limit,
            "lease_seconds": lease_seconds,
            "per_host": per_host,
            "hosts": list(rooms),
            "rooms": list(rooms.values()),
        },
    )
    return [
        ClaimedDelivery(
            id=row.id,
            task_id=row.task_id,
            user_id=row.user_id,
            event_type=row.event_type,
            callback_url=row.callback_url,
            receiver_host=row.receiver_host,
            payload=row.payload,
            attempt=row.attempts,
            created_at=row.created_at,
            age_seconds=float(row.age),
        )
        for row in rows
    ]


async def store_payload(connection: AsyncConnection, delivery_id: uuid.UUID, body: bytes) -> bytes:
    """Keep the first body ever stored: every attempt sends exactly those bytes."""
    stored = await connection.scalar(
        text(
            "UPDATE webhook_deliveries SET payload = coalesce(payload, :body) "
            "WHERE id = :id RETURNING payload"
        ),
        {"id": delivery_id, "body": body},
    )
    return bytes(stored) if stored is not None else body


_RECORD = text(
    """
    WITH finished AS (
        UPDATE webhook_deliveries
        SET state = CAST(:state AS varchar),
            next_attempt_at = now() + make_interval(secs => CAST(:retry_in AS float8)),
            finished_at = CASE WHEN CAST(:state AS varchar) = 'pending' THEN NULL ELSE now() END,
            lease_owner = NULL,
            lease_expires_at = NULL
        WHERE id = :id AND lease_owner = :owner AND attempts = CAST(:attempt AS integer)
        RETURNING id
    )
    INSERT INTO webhook_attempts
        (delivery_id, attempt, started_at, duration_seconds, status_code, outcome, detail)
    SELECT id, CAST(:attempt AS integer), CAST(:started_at AS timestamptz),
           CAST(:duration AS float8), CAST(:status_code AS integer), CAST(:outcome AS varchar),
           CAST(:detail AS text)
    FROM finished
    RETURNING delivery_id
    """
)


async def record_attempt(
    connection: AsyncConnection,
    delivery: ClaimedDelivery,
    *,
    owner: str,
    state: str,
    retry_in: float,
    record: AttemptRecord,
) -> bool:
    """Write the attempt and the delivery's next state; False if the lease was lost."""
    written = await connection.scalar(
        _RECORD,
        {
            "id": delivery.id,
            "owner": owner,
            "attempt": delivery.attempt,
            "state": state,
            "retry_in": retry_in,
            "started_at": record.started_at,
            "duration": record.duration_seconds,
            "status_code": record.status_code,
            "outcome": record.outcome,
            "detail": record.detail,
        },
    )
    return written is not None


async def release(connection: AsyncConnection, ids: list[uuid.UUID], *, owner: str) -> int:
    """Hand back deliveries this process claimed but did not finish (shutdown)."""
    if not ids:
        return 0
    result = await connection.execute(
        text(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = ANY(:ids) AND lease_owner = :owner AND state = 'pending'"
        ),
        {"ids": ids, "owner": owner},
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def seconds_until_next_due(
    connection: AsyncConnection, *, blocked: list[str] | None = None
) -> float | None:
    """When the next pending delivery can be claimed: its retry time, or its lease's end
    while another attempt holds it (in flight now is not "due now"). Deliveries to the
    `blocked` hosts (no room now) are left out: their being due is no reason to wake.

    Only the first rows of the queue are looked at, through its index: during an outage
    thousands may be pending, and this runs on every idle round.
    """
    value = await connection.scalar(
        text(
            f"""
            SELECT extract(epoch FROM min(greatest(next_attempt_at, lease_expires_at)) - now())
            FROM (
                SELECT next_attempt_at, lease_expires_at FROM webhook_deliveries
                WHERE state = '{PENDING}' AND receiver_host <> ALL(CAST(:blocked AS text[]))
                ORDER BY next_attempt_at LIMIT 100
            ) AS first
            """
        ),
        {"blocked": blocked or []},
    )
    return None if value is None else float(value)


async def store_limits(connection: AsyncConnection, *, max_pending_per_user: int) -> None:
    """The limits the outbox trigger applies (0: no cap on a user's pending deliveries)."""
    await connection.execute(
        text(
            "INSERT INTO webhook_limits (id, max_pending_per_user) VALUES (true, :cap) "
            "ON CONFLICT (id) DO UPDATE SET max_pending_per_user = excluded.max_pending_per_user"
        ),
        {"cap": max_pending_per_user or None},
    )


async def report_dropped(connection: AsyncConnection, *, limit: int = 1000) -> dict[uuid.UUID, int]:
    """Deliveries the per-user cap dropped that no process has reported yet, by user;
    marked finished, so each is reported once."""
    rows = await connection.execute(
        text(
            """
            UPDATE webhook_deliveries AS d SET finished_at = now()
            FROM (
                SELECT id FROM webhook_deliveries
                WHERE state = 'dropped' AND finished_at IS NULL
                ORDER BY created_at LIMIT :limit
                FOR UPDATE SKIP LOCKED
            ) AS unreported
            WHERE d.id = unreported.id
            RETURNING d.user_id
            """
        ),
        {"limit": limit},
    )
    dropped: dict[uuid.UUID, int] = {}
    for row in rows:
        dropped[row.user_id] = dropped.get(row.user_id, 0) + 1
    return dropped


async def expire_overdue(
    connection: AsyncConnection, *, max_age_seconds: float, limit: int = 1000
) -> int:
    """End as `expired` the pending deliveries older than the retry window that no attempt
    holds: those behind an open breaker would otherwise wait for a probe each."""
    result = await connection.execute(
        text(
            f"""
            UPDATE webhook_deliveries AS d
            SET state = 'expired', finished_at = now(), lease_owner = NULL,
                lease_expires_at = NULL
            FROM (
                SELECT id FROM webhook_deliveries
                WHERE state = '{PENDING}'
                  AND created_at < now() - make_interval(secs => CAST(:age AS float8))
                  AND (lease_expires_at IS NULL OR lease_expires_at < now())
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
            ) AS overdue
            WHERE d.id = overdue.id
            """
        ),
        {"age": max_age_seconds, "limit": limit},
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def pending_summary(connection: AsyncConnection) -> tuple[int, float]:
    """Deliveries still to be made, and how long the oldest has waited (0: none)."""
    row = (
        await connection.execute(
            text(
                f"""
                SELECT count(*) AS pending,
                       coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
                FROM webhook_deliveries WHERE state = '{PENDING}'
                """
            )
        )
    ).one()
    return int(row.pending), float(row.oldest)


async def task_deliveries(connection: AsyncConnection, task_id: uuid.UUID) -> list[DeliveryReport]:
    """A task's deliveries, oldest first, each with its attempts in order."""
    deliveries = (
        await connection.execute(
            text(
                "SELECT id, event_type, callback_url, state, created_at, next_attempt_at, "
                "finished_at FROM webhook_deliveries WHERE task_id = :task_id "
                "ORDER BY created_at, id"
            ),
            {"task_id": task_id},
        )
    ).all()
    if not deliveries:
        return []
    attempts: dict[uuid.UUID, list[AttemptRecord]] = {row.id: [] for row in deliveries}
    rows = await connection.execute(
        text(
            "SELECT delivery_id, attempt, started_at, duration_seconds, status_code, outcome, "
            "detail FROM webhook_attempts WHERE delivery_id = ANY(:ids) "
            "ORDER BY delivery_id, attempt"
        ),
        {"ids": list(attempts)},
    )
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
            next_attempt_at=row.next_attempt_at if row.state == PENDING else None,
            finished_at=row.finished_at,
            attempts=attempts[row.id],
        )
        for row in deliveries
    ]
