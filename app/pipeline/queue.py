"""The task row as the pipeline's job: claiming, leases, stage outputs, retries, failure.

Every write after the claim is fenced by `lease_owner`: a worker that lost its lease
(expired and taken over, or the task was deleted) changes nothing and stops.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import bindparam

from app.tasks.history import EventRecord, append_event
from app.tasks.status import TaskStatus

_UNFINISHED = "status NOT IN ('completed', 'failed')"


@dataclass(frozen=True)
class ClaimedTask:
    """What a worker needs to know about the task it now holds."""

    id: uuid.UUID
    user_id: uuid.UUID
    text_id: uuid.UUID
    status: TaskStatus
    stage_attempts: int
    claim_count: int
    has_preprocessed_audio: bool
    result: str | None
    created_at: datetime


# The oldest runnable task whose lease is free or expired, skipping rows another worker
# is claiming right now, and skipping users who already have enough tasks in flight.
_CLAIM = text(
    f"""
    WITH candidate AS (
        SELECT t.id FROM tasks t
        WHERE t.{_UNFINISHED}
          AND t.run_after <= now()
          AND (t.lease_expires_at IS NULL OR t.lease_expires_at < now())
          AND (
              SELECT count(*) FROM tasks busy
              WHERE busy.user_id = t.user_id
                AND busy.lease_owner IS NOT NULL
                AND busy.lease_expires_at >= now()
          ) < :per_user
        ORDER BY t.created_at, t.id
        LIMIT 1
        FOR UPDATE OF t SKIP LOCKED
    )
    UPDATE tasks SET
        lease_owner = :owner,
        lease_expires_at = now() + make_interval(secs => :lease),
        claim_count = claim_count + 1
    FROM candidate WHERE tasks.id = candidate.id
    RETURNING tasks.id, tasks.user_id, tasks.text_id, tasks.status, tasks.stage_attempts,
              tasks.claim_count, tasks.result, tasks.created_at,
              EXISTS (SELECT 1 FROM task_audio a
                      WHERE a.task_id = tasks.id AND a.kind = 'preprocessed')
                  AS has_preprocessed_audio
    """
)


# Claims queue up behind one transaction-scoped advisory lock. Without it, claims running
# at the same moment cannot see each other's uncommitted leases and the per-user cap
# overshoots; with it, each claim's statement starts after the previous claim committed.
# A claim is one short statement, so this still allows about a thousand claims a second.
CLAIM_LOCK_KEY = 0x1175_7A5C


async def claim_next_task(
    session: AsyncSession, *, owner: str, lease_seconds: float, per_user: int
) -> ClaimedTask | None:
    """Lease the next task to `owner`; run it in a transaction of its own and commit at once."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK_KEY})
    row = (
        (
            await session.execute(
                _CLAIM, {"owner": owner, "lease": lease_seconds, "per_user": per_user}
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    return ClaimedTask(
        id=row["id"],
        user_id=row["user_id"],
        text_id=row["text_id"],
        status=TaskStatus(row["status"]),
        stage_attempts=row["stage_attempts"],
        claim_count=row["claim_count"],
        has_preprocessed_audio=row["has_preprocessed_audio"],
        result=row["result"],
        created_at=row["created_at"],
    )


# Only future times count: a task due already but not claimable is held back by the
# per-user cap and becomes claimable when that user's work finishes, not at a time.
_NEXT_DUE = text(
    f"""
    SELECT EXTRACT(EPOCH FROM min(due) - now()) FROM (
        SELECT greatest(run_after, coalesce(lease_expires_at, run_after)) AS due
        FROM tasks WHERE {_UNFINISHED}
    ) pending
    WHERE due > now()
    """
)


async def seconds_until_next_due(session: AsyncSession) -> float | None:
    """How long until some unfinished task becomes claimable (None: there is none)."""
    value = await session.scalar(_NEXT_DUE)
    return None if value is None else float(value)


_RENEW = text(
    """
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease)
    WHERE id = :task_id AND lease_owner = :owner
    RETURNING id
    """
)


async def renew_lease(
    session: AsyncSession, task_id: uuid.UUID, *, owner: str, lease_seconds: float
) -> bool:
    """Extend the lease; False when it is gone (task deleted or taken over)."""
    renewed = await session.execute(
        _RENEW, {"task_id": task_id, "owner": owner, "lease": lease_seconds}
    )
    return renewed.first() is not None


_ADVANCE = text(
    """
    UPDATE tasks SET status = :status, stage_attempts = :stage_attempts
    WHERE id = :task_id AND lease_owner = :owner
    RETURNING id
    """
)


async def advance_status(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    owner: str,
    status: TaskStatus,
    reset_attempts: bool,
    current_attempts: int,
) -> bool:
    """Move the held task to `status` and record the transition; False if the lease is lost."""
    moved = await session.execute(
        _ADVANCE,
        {
            "task_id": task_id,
            "owner": owner,
            "status": status.value,
            "stage_attempts": 0 if reset_attempts else current_attempts,
        },
    )
    if moved.first() is None:
        return False
    await append_event(session, task_id, EventRecord(kind="status", status=status))
    return True


async def load_audio(session: AsyncSession, task_id: uuid.UUID, kind: str) -> bytes | None:
    content = await session.scalar(
        text("SELECT content FROM task_audio WHERE task_id = :task_id AND kind = :kind"),
        {"task_id": task_id, "kind": kind},
    )
    return None if content is None else bytes(content)


async def store_preprocessed_audio(session: AsyncSession, task_id: uuid.UUID, wav: bytes) -> None:
    await session.execute(
        text(
            """
            INSERT INTO task_audio (task_id, kind, content, filename, content_type, size)
            VALUES (:task_id, 'preprocessed', :content, 'audio.wav', 'audio/wav', :size)
            ON CONFLICT (task_id, kind) DO UPDATE SET content = EXCLUDED.content,
                size = EXCLUDED.size
            """
        ),
        {"task_id": task_id, "content": wav, "size": len(wav)},
    )


async def store_transcription(
    session: AsyncSession, task_id: uuid.UUID, *, owner: str, transcription: str
) -> bool:
    stored = await session.execute(
        text(
            "UPDATE tasks SET result = :result WHERE id = :task_id AND lease_owner = :owner "
            "RETURNING id"
        ),
        {"task_id": task_id, "owner": owner, "result": transcription},
    )
    return stored.first() is not None


_COMPLETE = text(
    """
    UPDATE tasks SET status = 'completed', accuracy = :accuracy, mistakes = :mistakes,
        comment = NULL, completed_at = now(), stage_attempts = 0,
        lease_owner = NULL, lease_expires_at = NULL
    WHERE id = :task_id AND lease_owner = :owner
    RETURNING id
    """
).bindparams(bindparam("mistakes", type_=JSONB))


async def complete_task(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    owner: str,
    accuracy: float,
    mistakes: list[Any],
) -> bool:
    """Store the assessment and finish the task in one step."""
    done = await session.execute(
        _COMPLETE, {"task_id": task_id, "owner": owner, "accuracy": accuracy, "mistakes": mistakes}
    )
    if done.first() is None:
        return False
    await append_event(session, task_id, EventRecord(kind="status", status=TaskStatus.COMPLETED))
    return True


_FAIL = text(
    f"""
    UPDATE tasks SET status = 'failed', comment = :comment, completed_at = now(),
        lease_owner = NULL, lease_expires_at = NULL
    WHERE id = :task_id AND (lease_owner = :owner OR :owner IS NULL) AND {_UNFINISHED}
    RETURNING id
    """
)


async def fail_task(
    session: AsyncSession, task_id: uuid.UUID, *, owner: str | None, comment: str
) -> bool:
    """End the task as failed with `comment` naming the stage and the reason."""
    failed = await session.execute(_FAIL, {"task_id": task_id, "owner": owner, "comment": comment})
    if failed.first() is None:
        return False
    await append_event(
        session, task_id, EventRecord(kind="status", status=TaskStatus.FAILED, detail=comment)
    )
    return True


_RETRY_LATER = text(
    """
    UPDATE tasks SET stage_attempts = :attempts,
        run_after = now() + make_interval(secs => :delay),
        lease_owner = NULL, lease_expires_at = NULL
    WHERE id = :task_id AND lease_owner = :owner
    RETURNING status
    """
)


async def release_for_retry(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    owner: str,
    stage: str,
    attempts: int,
    delay_seconds: float,
    reason: str,
) -> bool:
    """Give the task back with a not-before time, recording the retry and its reason."""
    status = await session.scalar(
        _RETRY_LATER,
        {"task_id": task_id, "owner": owner, "attempts": attempts, "delay": delay_seconds},
    )
    if status is None:
        return False
    await append_event(
        session,
        task_id,
        EventRecord(kind="retry", status=status, stage=stage, attempt=attempts, detail=reason),
    )
    return True


async def release_lease(session: AsyncSession, task_id: uuid.UUID, *, owner: str) -> None:
    """Hand an unfinished task back at once (graceful shutdown)."""
    await session.execute(
        text(
            "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = :task_id AND lease_owner = :owner"
        ),
        {"task_id": task_id, "owner": owner},
    )


async def release_all_leases(session: AsyncSession, *, owner: str) -> int:
    """Hand back every task this process still holds."""
    released = await session.execute(
        text(
            "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE lease_owner = :owner RETURNING id"
        ),
        {"owner": owner},
    )
    return len(released.all())


async def purge_expired_audio(session: AsyncSession, *, older_than_hours: float) -> int:
    """Delete the audio of tasks finished more than `older_than_hours` ago; results stay."""
    purged = await session.execute(
        text(
            """
            DELETE FROM task_audio a USING tasks t
            WHERE a.task_id = t.id AND t.status IN ('completed', 'failed')
              AND t.completed_at < now() - make_interval(secs => :age)
            RETURNING a.task_id
            """
        ),
        {"age": older_than_hours * 3600},
    )
    return len(purged.all())


async def waiting_summary(session: AsyncSession) -> tuple[int, float]:
    """Unfinished tasks nobody holds, and the age in seconds of the oldest of them."""
    row = (
        await session.execute(
            text(
                f"""
                SELECT count(*), coalesce(EXTRACT(EPOCH FROM now() - min(created_at)), 0)
                FROM tasks
                WHERE {_UNFINISHED}
                  AND (lease_expires_at IS NULL OR lease_expires_at < now())
                """
            )
        )
    ).one()
    return int(row[0]), float(row[1])
