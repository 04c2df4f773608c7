"""The task row as the pipeline's job: claiming, leases, stage outputs, retries, failure.

The statements are `app/db/sql/queue.sql`, run on `Database.driver()` connections, where
asyncpg prepares each once per connection. Every write after the claim is fenced by
`lease_owner`: a worker that lost its lease (expired and taken over, or the task was
deleted) changes nothing and stops; each write that moves a task records the move in the
same statement, so it needs no transaction of its own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from app.db.queries import Query, queries
from app.db.status import TaskStatus

_QUEUE = queries("queue")


@dataclass
class HeldTask:
    """A task a worker holds under its lease: the claim's answer, then the worker's state
    of it as it moves from stage to stage."""

    id: uuid.UUID
    user_id: uuid.UUID
    text_id: uuid.UUID
    status: TaskStatus  # the stage it is in (the claim's entry; unchanged when abandoned)
    stage_attempts: int  # failed attempts of this stage so far
    claim_count: int  # claims that took over an expired lease, this one included
    has_preprocessed_audio: bool
    result: str | None  # the transcription, once there is one
    created_at: datetime
    # The input of the stage: the upload before preprocessing, the WAV before transcribing.
    audio: bytes | None


# Serialization failures only happen when claims race for the same user; a claim that
# keeps losing gives up and its worker tries again at its next wakeup.
CLAIM_ATTEMPTS = 20


async def claim_next_task(
    connection: asyncpg.Connection,
    *,
    owner: str,
    lease_seconds: float,
    per_user: int,
    max_claims: int,
) -> HeldTask | None:
    """Lease the next task to `owner` and move it into its stage, in a transaction of its own.

    `connection` must be outside a transaction. The task comes without its audio: read it
    with `with_stage_audio`, after this commit, so the bytes are not read while the claim's
    row locks are held.
    """
    row = None
    for _ in range(CLAIM_ATTEMPTS):
        await _QUEUE.begin_claim.execute(connection)
        try:
            row = await _QUEUE.claim_next_task.fetchrow(
                connection,
                owner=owner,
                lease=lease_seconds,
                per_user=per_user,
                max_claims=max_claims,
            )
            await connection.execute("COMMIT")
            break
        except asyncpg.SerializationError:
            await connection.execute("ROLLBACK")
        except BaseException:
            if not connection.is_closed() and connection.is_in_transaction():
                await connection.execute("ROLLBACK")
            raise
    if row is None:
        return None
    return HeldTask(
        id=row["id"],
        user_id=row["user_id"],
        text_id=row["text_id"],
        status=TaskStatus(row["status"]),
        stage_attempts=row["stage_attempts"],
        claim_count=row["claim_count"],
        has_preprocessed_audio=row["has_preprocessed_audio"],
        result=row["result"],
        created_at=row["created_at"],
        audio=None,
    )


async def with_stage_audio(connection: asyncpg.Connection, task: HeldTask) -> HeldTask:
    """`task` with the audio its next stage needs, read in a statement of its own: the
    upload before preprocessing, the WAV before transcribing, nothing before feedback."""
    if task.has_preprocessed_audio and task.result is not None:
        return task
    kind = "preprocessed" if task.has_preprocessed_audio else "upload"
    # asyncpg hands bytea over as `bytes`: no further copy is made here.
    audio = await _QUEUE.stage_audio.fetchval(connection, task_id=task.id, kind=kind)
    return replace(task, audio=audio)


async def _moved_under_lease(
    connection: asyncpg.Connection, statement: Query, **values: Any
) -> bool:
    """Run a write that moves a held task; False when the lease (or the stage the write
    finishes) was gone and nothing changed."""
    return await statement.fetchrow(connection, **values) is not None


async def store_preprocessed_audio(
    connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str, wav: bytes
) -> bool:
    """Keep the WAV and move on to transcribing, in one step."""
    return await _moved_under_lease(
        connection,
        _QUEUE.store_preprocessed_audio,
        task_id=task_id,
        owner=owner,
        expected_status=TaskStatus.PREPROCESSING.value,
        next_status=TaskStatus.TRANSCRIBING.value,
        wav=wav,
        size=len(wav),
    )


async def store_transcription(
    connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str, transcription: str
) -> bool:
    """Keep the transcription and move on to evaluating, in one step."""
    return await _moved_under_lease(
        connection,
        _QUEUE.store_transcription,
        task_id=task_id,
        owner=owner,
        expected_status=TaskStatus.TRANSCRIBING.value,
        next_status=TaskStatus.EVALUATING.value,
        result=transcription,
    )


async def complete_task(
    connection: asyncpg.Connection,
    task_id: uuid.UUID,
    *,
    owner: str,
    accuracy: float,
    mistakes: list[Any],
    drop_audio: bool = False,
) -> bool:
    """Store the assessment and finish the task in one step (`drop_audio`: and its audio)."""
    return await _moved_under_lease(
        connection,
        _QUEUE.complete_task,
        task_id=task_id,
        owner=owner,
        drop_audio=drop_audio,
        expected_status=TaskStatus.EVALUATING.value,
        next_status=TaskStatus.COMPLETED.value,
        accuracy=accuracy,
        # As JSON text: the connection's jsonb codec (SQLAlchemy's) takes a string.
        mistakes=json.dumps(mistakes),
    )


async def fail_task(
    connection: asyncpg.Connection,
    task_id: uuid.UUID,
    *,
    owner: str,
    comment: str,
    kind: str = "",
    drop_audio: bool = False,
) -> bool:
    """End the task as failed with `comment` naming the stage and the reason; the history
    row keeps both the comment and the failure's `kind`, which operators group by."""
    return await _moved_under_lease(
        connection,
        _QUEUE.fail_task,
        task_id=task_id,
        owner=owner,
        drop_audio=drop_audio,
        next_status=TaskStatus.FAILED.value,
        comment=comment,
        failure=json.dumps({"comment": comment, "kind": kind}, ensure_ascii=False),
    )


async def release_for_retry(
    connection: asyncpg.Connection,
    task_id: uuid.UUID,
    *,
    owner: str,
    stage: str,
    attempts: int,
    delay_seconds: float,
    reason: str,
) -> bool:
    """Give the task back with a not-before time, recording the retry and its reason."""
    return await _moved_under_lease(
        connection,
        _QUEUE.release_for_retry,
        task_id=task_id,
        owner=owner,
        stage=stage,
        attempts=attempts,
        delay=delay_seconds,
        reason=reason,
    )


async def moved_to(
    connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str, status: TaskStatus
) -> bool:
    """Is the task at `status` under `owner`'s lease (or completed)?"""
    found = await _QUEUE.moved_to.fetchval(
        connection, task_id=task_id, owner=owner, status=status.value
    )
    return found is not None


async def seconds_until_next_due(connection: asyncpg.Connection) -> float | None:
    """How long until some unfinished task becomes claimable (None: there is none)."""
    value = await _QUEUE.seconds_until_next_due.fetchval(connection)
    return None if value is None else float(value)


async def renew_lease(
    connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str, lease_seconds: float
) -> bool:
    """Extend the lease; False when it is gone (task deleted or taken over)."""
    renewed = await _QUEUE.renew_lease.fetchrow(
        connection, task_id=task_id, owner=owner, lease=lease_seconds
    )
    return renewed is not None


async def release_lease(connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str) -> None:
    """Hand an unfinished task back at once (graceful shutdown)."""
    await _QUEUE.release_lease.execute(connection, task_id=task_id, owner=owner)


async def release_all_leases(connection: asyncpg.Connection, *, owner: str) -> int:
    """Hand back every task this process still holds."""
    return len(await _QUEUE.release_all_leases.fetch(connection, owner=owner))


async def purge_expired_audio(connection: asyncpg.Connection, *, older_than_hours: float) -> int:
    """Delete the audio of tasks that ended more than `older_than_hours` ago; results stay.

    Only terminal tasks lose audio: a task in a stage never does, whatever its age.
    """
    purged = await _QUEUE.purge_expired_audio.fetch(connection, age=older_than_hours * 3600)
    return len(purged)


async def waiting_summary(connection: asyncpg.Connection) -> tuple[int, float]:
    """Unfinished tasks nobody holds, and the age in seconds of the oldest of them."""
    row = await _QUEUE.waiting_summary.fetchrow(connection)
    return int(row[0]), float(row[1])
