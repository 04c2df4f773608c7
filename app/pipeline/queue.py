"""The task row as the pipeline's job: claiming, leases, stage outputs, retries, failure.

Every write after the claim is fenced by `lease_owner`: a worker that lost its lease
(expired and taken over, or the task was deleted) changes nothing and stops.

Each write after the claim that moves the task is one statement that also appends the
history row it implies and sends its NOTIFY (built by `app.db.history.recorded`), so it
runs without a transaction of its own (one round trip, on an autocommit connection) and
is still all-or-nothing.

Every statement is written out whole below. The statuses come from `app.db.status`: the
next status as a bind parameter (`:next_status`), the terminal set as its SQL literal
(`TERMINAL_SQL`, so that the partial indexes on unfinished tasks keep serving these
statements under generic plans).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    LargeBinary,
    Select,
    String,
    bindparam,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.history import recorded
from app.db.models import Task, TaskAudio
from app.db.status import TERMINAL_SQL, TaskStatus


@dataclass(frozen=True)
class ClaimedTask:
    """What a worker needs to know about the task it now holds, and its next stage's input."""

    id: uuid.UUID
    user_id: uuid.UUID
    text_id: uuid.UUID
    status: TaskStatus
    stage_attempts: int
    claim_count: int  # claims that took over an expired lease, this one included
    has_preprocessed_audio: bool
    result: str | None
    created_at: datetime
    audio: bytes | None  # the upload, or the preprocessed WAV once that exists


# Claims queue up behind one transaction-scoped advisory lock. Without it, claims running
# at the same moment cannot see each other's uncommitted leases and the per-user cap
# overshoots; with it, each claim's statement starts after the previous claim committed.
# The claim reads a bounded number of rows (below) and no audio, so the lock is held for
# well under a millisecond whatever the backlog.
CLAIM_LOCK_KEY = 0x1175_7A5C
_TAKE_CLAIM_LOCK = text("SELECT pg_advisory_xact_lock(:key)")

# The claim, in order of its parts:
#
# `live`: owner liveness. Each worker process holds a session-level advisory lock on
# `hashtextextended(owner, 0)` for as long as its lock connection lives (see
# `app.pipeline.liveness`); `live.keys` is the set of such keys held right now, one read
# of the lock table per statement however many tasks the statement looks at. The claim
# only proceeds while this process's own lock is held, so every lease it stamps was taken
# under that lock.
#
# A lease is *dead* (the three-line test that appears twice) when its owner's lock is
# free and the lease was last stamped (claim or renewal, `leased_at`) after this server
# started. Claims and renewals stamp `leased_at` only while the owner's lock is held, and
# an owner never takes the same key again within one server lifetime (a process whose
# lock connection drops without a server restart takes a new owner name). So a free lock
# behind a lease stamped in this server lifetime means that lock session has ended: the
# process died, or it was cut off and has abandoned that name; its late writes are fenced
# off by `lease_owner`. A server restart frees every lock at once, live owners included,
# until they reconnect; leases stamped before it are therefore judged by the clock alone
# (`lease_expires_at`): a live owner re-takes its lock and its next renewal stamps the
# lease again, and a process that died across the restart loses its tasks when their
# leases run out. Two live processes never take each other's tasks after a restart.
#
# `candidate`: users, not tasks, are walked. `queue_users` lists each user with unfinished
# tasks in the order of their oldest one (kept by triggers on `tasks`, see migration 0002).
# The claim takes the first user below the per-user cap (`busy`: live leases) and that
# user's oldest runnable task (`pick`). It skips only users it cannot serve: those at the
# cap and those whose unfinished tasks are all in flight or waiting for a retry, so a
# user's backlog of any size costs one index probe, and the claim's cost does not grow
# with the number of waiting tasks. Within a user tasks run oldest first; across users,
# the one waiting longest for its oldest task goes first.
_CLAIM = text(
    f"""
    WITH live AS MATERIALIZED (
        SELECT coalesce(array_agg((l.classid::bigint << 32) | l.objid::bigint), '{{}}') AS keys
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    ),
    candidate AS (
        SELECT pick.id FROM live CROSS JOIN queue_users u
        CROSS JOIN LATERAL (
            SELECT t.id FROM tasks t
            WHERE t.user_id = u.user_id
              AND t.status NOT IN {TERMINAL_SQL}
              AND t.run_after <= now()
              AND (
                  t.lease_owner IS NULL
                  OR t.lease_expires_at < now()
                  OR (
                      t.lease_owner IS NOT NULL
                      AND t.leased_at > pg_postmaster_start_time()
                      AND NOT hashtextextended(t.lease_owner, 0) = ANY(live.keys)
                  )
              )
            ORDER BY t.created_at, t.id
            LIMIT 1
            FOR UPDATE OF t SKIP LOCKED
        ) pick
        WHERE u.oldest_unfinished_at IS NOT NULL
          AND hashtextextended(:owner, 0) = ANY(live.keys)
          AND (
              SELECT count(*) FROM tasks busy
              WHERE busy.user_id = u.user_id
                AND busy.lease_owner IS NOT NULL
                AND busy.lease_expires_at >= now()
                AND NOT (
                    busy.lease_owner IS NOT NULL
                    AND busy.leased_at > pg_postmaster_start_time()
                    AND NOT hashtextextended(busy.lease_owner, 0) = ANY(live.keys)
                )
          ) < :per_user
        ORDER BY u.oldest_unfinished_at, u.user_id
        LIMIT 1
    )
    UPDATE tasks SET
        lease_owner = :owner,
        lease_expires_at = now() + make_interval(secs => :lease),
        leased_at = now(),
        -- A lease still set is one that expired (or whose owner died): its holder vanished
        -- mid-task. Retries and shutdown hand-backs clear the lease, so they do not count.
        claim_count = claim_count + (tasks.lease_expires_at IS NOT NULL)::int
    FROM candidate WHERE tasks.id = candidate.id
    RETURNING tasks.id, tasks.user_id, tasks.text_id, tasks.status, tasks.stage_attempts,
              tasks.claim_count, tasks.result, tasks.created_at,
              EXISTS (
                  SELECT 1 FROM task_audio wav
                  WHERE wav.task_id = tasks.id AND wav.kind = 'preprocessed'
              ) AS has_preprocessed_audio
    """
)


async def claim_next_task(
    connection: AsyncConnection, *, owner: str, lease_seconds: float, per_user: int
) -> ClaimedTask | None:
    """Lease the next task to `owner`; the caller's transaction must commit at once.

    The task comes without its audio: read it with `with_stage_audio` after the commit,
    so the bytes are not read while the claim lock is held.
    """
    await connection.execute(_TAKE_CLAIM_LOCK, {"key": CLAIM_LOCK_KEY})
    row = (
        (
            await connection.execute(
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
        audio=None,
    )


# The input of the task's next stage: the upload before preprocessing, the WAV before
# transcribing, nothing before feedback (the transcription is on the task).
_STAGE_AUDIO = text(
    """
    SELECT content FROM task_audio
    WHERE task_id = :task_id AND kind = :kind
    """
)


async def with_stage_audio(connection: AsyncConnection, task: ClaimedTask) -> ClaimedTask:
    """`task` with the audio its next stage needs, read in a statement of its own."""
    if task.has_preprocessed_audio and task.result is not None:
        return task
    kind = "preprocessed" if task.has_preprocessed_audio else "upload"
    audio = await connection.scalar(_STAGE_AUDIO, {"task_id": task.id, "kind": kind})
    return replace(task, audio=None if audio is None else bytes(audio))


# The stage writes. Each is the task's UPDATE, fenced by the lease; `recorded` adds the
# history row (kind, stage, attempt, detail) and the NOTIFY to the same statement.
_HELD = (Task.id == bindparam("task_id")) & (Task.lease_owner == bindparam("owner"))
_NO_LEASE = {"lease_owner": None, "lease_expires_at": None}

_ADVANCE = recorded(
    update(Task)
    .where(_HELD)
    .values(status=bindparam("next_status"), stage_attempts=bindparam("stage_attempts"))
)

_PREPROCESSED = recorded(
    update(Task).where(_HELD).values(status=bindparam("next_status"), stage_attempts=0),
    alongside=lambda moved: (
        insert(TaskAudio)
        .from_select(
            ["task_id", "kind", "content", "filename", "content_type", "size"],
            select(
                moved.c.id,
                literal("preprocessed"),
                bindparam("wav", type_=LargeBinary),
                literal("audio.wav"),
                literal("audio/wav"),
                bindparam("size", type_=Integer),
            ),
        )
        .on_conflict_do_update(
            index_elements=[TaskAudio.task_id, TaskAudio.kind],
            set_={
                "content": insert(TaskAudio).excluded.content,
                "size": insert(TaskAudio).excluded.size,
            },
        )
        .cte("stored")
    ),
)

_TRANSCRIBED = recorded(
    update(Task)
    .where(_HELD)
    .values(status=bindparam("next_status"), result=bindparam("result"), stage_attempts=0)
)

_COMPLETE = recorded(
    update(Task)
    .where(_HELD)
    .values(
        status=bindparam("next_status"),
        accuracy=bindparam("accuracy"),
        mistakes=bindparam("mistakes"),
        comment=None,
        completed_at=func.now(),
        stage_attempts=0,
        **_NO_LEASE,
    )
)

# The only write that checks the status: a task that finished meanwhile stays finished.
_FAIL = recorded(
    update(Task)
    .where(_HELD, text(f"tasks.status NOT IN {TERMINAL_SQL}"))
    .values(
        status=bindparam("next_status"),
        comment=bindparam("comment"),
        completed_at=func.now(),
        **_NO_LEASE,
    ),
    detail=bindparam("comment", type_=String),
)

_RETRY_LATER = recorded(
    update(Task)
    .where(_HELD)
    .values(
        stage_attempts=bindparam("attempts"),
        run_after=text("now() + make_interval(secs => :delay)"),
        **_NO_LEASE,
    ),
    kind="retry",
    stage=bindparam("stage", type_=String),
    attempt=bindparam("attempts"),
    detail=bindparam("reason", type_=String),
)


async def _moved(connection: AsyncConnection, statement: Select[Any], **params: Any) -> bool:
    """Run one `recorded` statement; False when the lease was gone and nothing happened."""
    return (await connection.execute(statement, params)).first() is not None


async def advance_status(
    connection: AsyncConnection,
    task_id: uuid.UUID,
    *,
    owner: str,
    status: TaskStatus,
    stage_attempts: int,
) -> bool:
    """Move the held task to `status` and record the transition."""
    return await _moved(
        connection,
        _ADVANCE,
        task_id=task_id,
        owner=owner,
        next_status=status.value,
        stage_attempts=stage_attempts,
    )


async def store_preprocessed_audio(
    connection: AsyncConnection, task_id: uuid.UUID, *, owner: str, wav: bytes
) -> bool:
    """Keep the WAV and move on to transcribing, in one step."""
    return await _moved(
        connection,
        _PREPROCESSED,
        task_id=task_id,
        owner=owner,
        next_status=TaskStatus.TRANSCRIBING.value,
        wav=wav,
        size=len(wav),
    )


async def store_transcription(
    connection: AsyncConnection, task_id: uuid.UUID, *, owner: str, transcription: str
) -> bool:
    """Keep the transcription and move on to evaluating, in one step."""
    return await _moved(
        connection,
        _TRANSCRIBED,
        task_id=task_id,
        owner=owner,
        next_status=TaskStatus.EVALUATING.value,
        result=transcription,
    )


async def complete_task(
    connection: AsyncConnection,
    task_id: uuid.UUID,
    *,
    owner: str,
    accuracy: float,
    mistakes: list[Any],
) -> bool:
    """Store the assessment and finish the task in one step."""
    return await _moved(
        connection,
        _COMPLETE,
        task_id=task_id,
        owner=owner,
        next_status=TaskStatus.COMPLETED.value,
        accuracy=accuracy,
        mistakes=mistakes,
    )


async def fail_task(
    connection: AsyncConnection, task_id: uuid.UUID, *, owner: str, comment: str
) -> bool:
    """End the task as failed with `comment` naming the stage and the reason."""
    return await _moved(
        connection,
        _FAIL,
        task_id=task_id,
        owner=owner,
        next_status=TaskStatus.FAILED.value,
        comment=comment,
    )


async def release_for_retry(
    connection: AsyncConnection,
    task_id: uuid.UUID,
    *,
    owner: str,
    stage: str,
    attempts: int,
    delay_seconds: float,
    reason: str,
) -> bool:
    """Give the task back with a not-before time, recording the retry and its reason."""
    return await _moved(
        connection,
        _RETRY_LATER,
        task_id=task_id,
        owner=owner,
        stage=stage,
        attempts=attempts,
        delay=delay_seconds,
        reason=reason,
    )


# Only future times count: a task due already but not claimable is held back by the
# per-user cap and becomes claimable when that user's work finishes, not at a time.
_NEXT_DUE = text(
    f"""
    SELECT EXTRACT(EPOCH FROM min(due) - now()) FROM (
        SELECT greatest(run_after, coalesce(lease_expires_at, run_after)) AS due
        FROM tasks WHERE status NOT IN {TERMINAL_SQL}
    ) pending
    WHERE due > now()
    """
)


async def seconds_until_next_due(connection: AsyncConnection) -> float | None:
    """How long until some unfinished task becomes claimable (None: there is none)."""
    value = await connection.scalar(_NEXT_DUE)
    return None if value is None else float(value)


# The lease is stamped as taken under the owner's lock only while that lock is held (see
# the claim's dead-lease test); without it, the renewal still extends the clock.
_RENEW = text(
    """
    WITH live AS MATERIALIZED (
        SELECT coalesce(array_agg((l.classid::bigint << 32) | l.objid::bigint), '{}') AS keys
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    )
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease),
        leased_at = CASE WHEN hashtextextended(:owner, 0) = ANY(live.keys)
                         THEN now() ELSE leased_at END
    FROM live
    WHERE id = :task_id AND lease_owner = :owner
    RETURNING id
    """
)


async def renew_lease(
    connection: AsyncConnection, task_id: uuid.UUID, *, owner: str, lease_seconds: float
) -> bool:
    """Extend the lease; False when it is gone (task deleted or taken over)."""
    renewed = await connection.execute(
        _RENEW, {"task_id": task_id, "owner": owner, "lease": lease_seconds}
    )
    return renewed.first() is not None


async def release_lease(connection: AsyncConnection, task_id: uuid.UUID, *, owner: str) -> None:
    """Hand an unfinished task back at once (graceful shutdown)."""
    await connection.execute(
        text(
            "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = :task_id AND lease_owner = :owner"
        ),
        {"task_id": task_id, "owner": owner},
    )


async def release_all_leases(connection: AsyncConnection, *, owner: str) -> int:
    """Hand back every task this process still holds."""
    released = await connection.execute(
        text(
            "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE lease_owner = :owner RETURNING id"
        ),
        {"owner": owner},
    )
    return len(released.all())


async def purge_expired_audio(connection: AsyncConnection, *, older_than_hours: float) -> int:
    """Delete the audio of tasks finished more than `older_than_hours` ago; results stay."""
    purged = await connection.execute(
        text(
            f"""
            DELETE FROM task_audio a USING tasks t
            WHERE a.task_id = t.id AND t.status IN {TERMINAL_SQL}
              AND t.completed_at < now() - make_interval(secs => :age)
            RETURNING a.task_id
            """
        ),
        {"age": older_than_hours * 3600},
    )
    return len(purged.all())


async def waiting_summary(connection: AsyncConnection) -> tuple[int, float]:
    """Unfinished tasks nobody holds, and the age in seconds of the oldest of them."""
    row = (
        await connection.execute(
            text(
                f"""
                SELECT count(*), coalesce(EXTRACT(EPOCH FROM now() - min(created_at)), 0)
                FROM tasks
                WHERE status NOT IN {TERMINAL_SQL}
                  AND (lease_expires_at IS NULL OR lease_expires_at < now())
                """
            )
        )
    ).one()
    return int(row[0]), float(row[1])
