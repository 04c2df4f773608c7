"""The task row as the pipeline's job: claiming, leases, stage outputs, retries, failure.

Every write after the claim is fenced by `lease_owner`: a worker that lost its lease
(expired and taken over, or the task was deleted) changes nothing and stops.

Each write after the claim that moves the task is one statement that also appends the
history row it implies and sends its NOTIFY (built by `app.db.history.recorded`), so it
runs without a transaction of its own (one round trip, on an autocommit connection) and
is still all-or-nothing.

The statements run thousands of times a minute, so they run on the asyncpg connection
under a pooled one (`Database.driver()`), compiled once (`DriverStatement`): asyncpg
prepares each once per connection, and no SQLAlchemy machinery runs per call.

Every statement is written out whole below. The statuses come from `app.db.status`: the
next status as a bind parameter (`:next_status`), the terminal set as its SQL literal
(`TERMINAL_SQL`, so that the partial indexes on unfinished tasks keep serving these
statements under generic plans).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    CTE,
    Boolean,
    Integer,
    LargeBinary,
    String,
    bindparam,
    delete,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.engine import DriverStatement
from app.db.history import recorded, recorded_transitions_sql
from app.db.models import Task, TaskAudio
from app.db.status import TERMINAL_SQL, TaskStatus


@dataclass(frozen=True)
class ClaimedTask:
    """What a worker needs to know about the task it now holds, and its next stage's input."""

    id: uuid.UUID
    user_id: uuid.UUID
    text_id: uuid.UUID
    status: TaskStatus  # the stage the claim moved it into (unchanged when abandoned)
    stage_attempts: int
    claim_count: int  # claims that took over an expired lease, this one included
    has_preprocessed_audio: bool
    result: str | None
    created_at: datetime
    audio: bytes | None  # the upload, or the preprocessed WAV once that exists


# Claims take no lock shared by all claims: a claim that stalls between its statements (a
# frozen or cut-off process) must not hold up the others. The per-user cap still holds
# exactly, because every claim serialises on the row of the user it serves instead:
# it runs under REPEATABLE READ, locks that user's `queue_users` row (SKIP LOCKED: a user
# being claimed for elsewhere is passed over, not waited for) and updates it. A claim whose
# snapshot predates another claim's commit for the same user cannot lock that row (the
# row changed after its snapshot) and fails with a serialization error; it is retried at
# once with a fresh snapshot that sees the other claim's lease. A task row claimed
# meanwhile fails the same way. What a stalled claim holds is one user's row and one task,
# which others skip until its session is ended by `idle_in_transaction_session_timeout`.
_BEGIN_CLAIM = "BEGIN ISOLATION LEVEL REPEATABLE READ"
# Serialization failures only happen when claims race for the same user; a claim that
# keeps losing gives up and its worker tries again at its next wakeup.
CLAIM_ATTEMPTS = 20

# The server a lease's liveness lock lives on: the cluster, its timeline and the start of
# its postmaster. Advisory locks are not replicated and vanish at a restart, so a lock is
# evidence only on the server that stamped the lease. A restart changes the start time; a
# promotion changes the timeline (read from the WAL position: `pg_control_checkpoint()`
# catches up only at the first checkpoint after the promotion). NULL on a standby.
SERVER_IDENTITY_SQL = (
    "CASE WHEN NOT pg_is_in_recovery() THEN "
    "(SELECT system_identifier FROM pg_control_system())::text"
    " || '/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
    " || '/' || extract(epoch FROM pg_postmaster_start_time())::text END"
)

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
# free and the lease was last stamped (claim or renewal, `leased_at`, `leased_on`) on this
# server (`SERVER_IDENTITY_SQL`: same cluster, timeline and postmaster start). Claims and
# renewals stamp the lease only while the owner's lock is held, and an owner never takes
# the same key again on one server (a process whose lock connection drops while the
# server runs on takes a new owner name). So a free lock behind a lease stamped on this
# server means that lock session has ended: the process died, or it was cut off and has
# abandoned that name; its late writes are fenced off by `lease_owner`. A restart or a
# promotion (a standby that takes over has none of the primary's locks) frees every lock
# at once, live owners included, until they reconnect; leases stamped before it are
# therefore judged by the clock alone (`lease_expires_at`): a live owner re-takes its lock
# and its next renewal stamps the lease again, and a process that died across the
# failover loses its tasks when their leases run out. Two live processes never take each
# other's tasks after a restart or a failover.
#
# `candidate`: users, not tasks, are walked. `queue_users` lists each user with unfinished
# tasks in the order of their oldest one (kept by triggers on `tasks`, see migration 0002).
# The claim takes the first user below the per-user cap (`busy`: live leases) and that
# user's oldest runnable task (`pick`). It skips only users it cannot serve: those at the
# cap and those whose unfinished tasks are all in flight or waiting for a retry, so a
# user's backlog of any size costs one index probe, and the claim's cost does not grow
# with the number of waiting tasks. Within a user tasks run oldest first; across users,
# the one waiting longest for its oldest task goes first.
#
# `entry` and `claimed`: the claim also moves the task into the stage it resumes at — the
# first one without output — and records the transitions (`created` passes through
# `started`), so the task is claimed and started in one statement. A task whose holders
# vanished `:max_claims` times stays where it is: the worker fails it next.
_CLAIM = text(
    f"""
    WITH live AS MATERIALIZED (
        SELECT coalesce(array_agg((l.classid::bigint << 32) | l.objid::bigint), '{{}}') AS keys,
               {SERVER_IDENTITY_SQL} AS server
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    ),
    candidate AS (
        SELECT pick.*, live.server FROM live CROSS JOIN queue_users u
        CROSS JOIN LATERAL (
            SELECT t.id, t.status, t.result, t.claim_count, t.lease_expires_at FROM tasks t
            WHERE t.user_id = u.user_id
              AND t.status NOT IN {TERMINAL_SQL}
              AND t.run_after <= now()
              AND (
                  t.lease_owner IS NULL
                  OR t.lease_expires_at < now()
                  OR (
                      t.lease_owner IS NOT NULL
                      AND t.leased_on = live.server
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
                    AND busy.leased_on = live.server
                    AND NOT hashtextextended(busy.lease_owner, 0) = ANY(live.keys)
                )
          ) < :per_user
        ORDER BY u.oldest_unfinished_at, u.user_id
        LIMIT 1
        FOR UPDATE OF u SKIP LOCKED
    ),
    resumed AS (
        SELECT candidate.*,
               -- A lease still set is one that expired (or whose owner died): its holder
               -- vanished mid-task. Retries and shutdown hand-backs clear the lease, so
               -- they do not count.
               candidate.claim_count + (candidate.lease_expires_at IS NOT NULL)::int
                   AS new_claim_count,
               EXISTS (
                   SELECT 1 FROM task_audio wav
                   WHERE wav.task_id = candidate.id AND wav.kind = 'preprocessed'
               ) AS has_preprocessed_audio
        FROM candidate
    ),
    entry AS (
        SELECT resumed.*,
               CASE WHEN resumed.new_claim_count >= :max_claims THEN resumed.status
                    WHEN NOT resumed.has_preprocessed_audio THEN 'preprocessing'
                    WHEN resumed.result IS NULL THEN 'transcribing'
                    ELSE 'evaluating'
               END AS entered
        FROM resumed
    ),
    steps AS (
        SELECT entry.*,
               array_remove(ARRAY[
                   CASE WHEN entry.status = 'created' AND entry.entered <> 'created'
                        THEN 'started' END,
                   CASE WHEN entry.entered <> entry.status THEN entry.entered END
               ]::text[], NULL) AS steps
        FROM entry
    ),
    claimed AS (
        UPDATE tasks SET
            lease_owner = :owner,
            lease_expires_at = now() + make_interval(secs => :lease),
            leased_at = now(),
            leased_on = steps.server,
            claim_count = steps.new_claim_count,
            status = steps.entered,
            last_event_seq = tasks.last_event_seq + cardinality(steps.steps),
            updated_at = CASE WHEN cardinality(steps.steps) > 0 THEN now()
                              ELSE tasks.updated_at END
        FROM steps WHERE tasks.id = steps.id
        RETURNING tasks.id, tasks.user_id, tasks.text_id, tasks.status, tasks.stage_attempts,
                  tasks.claim_count, tasks.result, tasks.created_at, tasks.last_event_seq,
                  steps.has_preprocessed_audio, steps.steps
    ),
    -- The write other claims for this user conflict with (see _BEGIN_CLAIM).
    serialised AS (
        UPDATE queue_users q SET oldest_unfinished_at = q.oldest_unfinished_at
        FROM claimed WHERE q.user_id = claimed.user_id
        RETURNING q.user_id
    ),
    {recorded_transitions_sql("claimed")}
    SELECT claimed.id, claimed.user_id, claimed.text_id, claimed.status,
           claimed.stage_attempts, claimed.claim_count, claimed.result, claimed.created_at,
           claimed.has_preprocessed_audio, (SELECT count(*) FROM notified) AS events
    FROM claimed
    """
)
_CLAIM_STATEMENT = DriverStatement.compile(_CLAIM)


async def claim_next_task(
    connection: asyncpg.Connection,
    *,
    owner: str,
    lease_seconds: float,
    per_user: int,
    max_claims: int,
) -> ClaimedTask | None:
    """Lease the next task to `owner` and move it into its stage, in a transaction of its own.

    `connection` must be outside a transaction. The task comes without its audio: read it
    with `with_stage_audio`, after this commit, so the bytes are not read while the claim's
    row locks are held.
    """
    row = None
    for _ in range(CLAIM_ATTEMPTS):
        await connection.execute(_BEGIN_CLAIM)
        try:
            row = await _CLAIM_STATEMENT.fetchrow(
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
_STAGE_AUDIO = DriverStatement.compile(
    text("SELECT content FROM task_audio WHERE task_id = :task_id AND kind = :kind")
)


async def with_stage_audio(connection: asyncpg.Connection, task: ClaimedTask) -> ClaimedTask:
    """`task` with the audio its next stage needs, read in a statement of its own."""
    if task.has_preprocessed_audio and task.result is not None:
        return task
    kind = "preprocessed" if task.has_preprocessed_audio else "upload"
    # asyncpg hands bytea over as `bytes`: no further copy is made here.
    audio = await _STAGE_AUDIO.fetchval(connection, task_id=task.id, kind=kind)
    return replace(task, audio=audio)


# The stage writes. Each is the task's UPDATE, fenced by the lease; `recorded` adds the
# history row (kind, stage, attempt, detail) and the NOTIFY to the same statement, only
# for a row the UPDATE moved.
_HELD = (Task.id == bindparam("task_id")) & (Task.lease_owner == bindparam("owner"))
# The writes that keep the lease are also fenced by the stage they finish: a write retried
# after an ambiguous commit (it committed, the answer was lost) finds the task moved on
# and changes nothing, so no second history row or NOTIFY.
_IN_STAGE = _HELD & (Task.status == bindparam("expected_status"))
_NO_LEASE = {"lease_owner": None, "lease_expires_at": None}


def _audio_dropped(moved: CTE) -> CTE:
    """With a retention of 0 (`:drop_audio`), the end of a task also deletes its audio.

    In the statement that ends the task, so no moment exists in which a finished task
    still holds audio, and a task that did not end (lease lost) keeps it.
    """
    return (
        delete(TaskAudio)
        .where(
            TaskAudio.task_id.in_(select(moved.c.id)),
            bindparam("drop_audio", type_=Boolean),
        )
        .cte("dropped")
    )


_PREPROCESSED = DriverStatement.compile(
    recorded(
        update(Task).where(_IN_STAGE).values(status=bindparam("next_status"), stage_attempts=0),
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
)

_TRANSCRIBED = DriverStatement.compile(
    recorded(
        update(Task)
        .where(_IN_STAGE)
        .values(status=bindparam("next_status"), result=bindparam("result"), stage_attempts=0)
    )
)

_COMPLETE = DriverStatement.compile(
    recorded(
        update(Task)
        .where(_IN_STAGE)
        .values(
            status=bindparam("next_status"),
            accuracy=bindparam("accuracy"),
            mistakes=bindparam("mistakes"),
            comment=None,
            completed_at=func.now(),
            stage_attempts=0,
            **_NO_LEASE,
        ),
        alongside=_audio_dropped,
    )
)

# The only write that checks the status: a task that finished meanwhile stays finished.
_FAIL = DriverStatement.compile(
    recorded(
        update(Task)
        .where(_HELD, text(f"tasks.status NOT IN {TERMINAL_SQL}"))
        .values(
            status=bindparam("next_status"),
            comment=bindparam("comment"),
            completed_at=func.now(),
            **_NO_LEASE,
        ),
        detail=bindparam("failure", type_=String),
        alongside=_audio_dropped,
    )
)

_RETRY_LATER = DriverStatement.compile(
    recorded(
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
)


async def _moved(connection: asyncpg.Connection, statement: DriverStatement, **params: Any) -> bool:
    """Run one `recorded` statement; False when the lease was gone and nothing happened."""
    return await statement.fetchrow(connection, **params) is not None


async def store_preprocessed_audio(
    connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str, wav: bytes
) -> bool:
    """Keep the WAV and move on to transcribing, in one step."""
    return await _moved(
        connection,
        _PREPROCESSED,
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
    return await _moved(
        connection,
        _TRANSCRIBED,
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
    return await _moved(
        connection,
        _COMPLETE,
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
    return await _moved(
        connection,
        _FAIL,
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


# A completed task no longer names its owner: completion is final, whoever wrote it.
_MOVED_TO = DriverStatement.compile(
    text(
        "SELECT 1 FROM tasks WHERE id = :task_id AND status = :status "
        "AND (lease_owner = :owner OR status = 'completed')"
    )
)


async def moved_to(
    connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str, status: TaskStatus
) -> bool:
    """Is the task at `status` under `owner`'s lease (or completed)?"""
    return (
        await _MOVED_TO.fetchval(connection, task_id=task_id, owner=owner, status=status.value)
        is not None
    )


# Only future times count: a task due already but not claimable is held back by the
# per-user cap and becomes claimable when that user's work finishes, not at a time.
_NEXT_DUE = DriverStatement.compile(
    text(
        f"""
    SELECT EXTRACT(EPOCH FROM min(due) - now()) FROM (
        SELECT greatest(run_after, coalesce(lease_expires_at, run_after)) AS due
        FROM tasks WHERE status NOT IN {TERMINAL_SQL}
    ) pending
    WHERE due > now()
    """
    )
)


async def seconds_until_next_due(connection: asyncpg.Connection) -> float | None:
    """How long until some unfinished task becomes claimable (None: there is none)."""
    value = await _NEXT_DUE.fetchval(connection)
    return None if value is None else float(value)


# The lease is stamped as taken under the owner's lock only while that lock is held (see
# the claim's dead-lease test); without it, the renewal still extends the clock.
_RENEW = DriverStatement.compile(
    text(
        f"""
    WITH live AS MATERIALIZED (
        SELECT coalesce(array_agg((l.classid::bigint << 32) | l.objid::bigint), '{{}}') AS keys,
               {SERVER_IDENTITY_SQL} AS server
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    )
    UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease),
        leased_at = CASE WHEN hashtextextended(:owner, 0) = ANY(live.keys)
                         THEN now() ELSE leased_at END,
        leased_on = CASE WHEN hashtextextended(:owner, 0) = ANY(live.keys)
                         THEN live.server ELSE leased_on END
    FROM live
    WHERE id = :task_id AND lease_owner = :owner
    RETURNING id
    """
    )
)


async def renew_lease(
    connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str, lease_seconds: float
) -> bool:
    """Extend the lease; False when it is gone (task deleted or taken over)."""
    renewed = await _RENEW.fetchrow(connection, task_id=task_id, owner=owner, lease=lease_seconds)
    return renewed is not None


_RELEASE = DriverStatement.compile(
    text(
        "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL "
        "WHERE id = :task_id AND lease_owner = :owner"
    )
)
_RELEASE_ALL = DriverStatement.compile(
    text(
        "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL "
        "WHERE lease_owner = :owner RETURNING id"
    )
)


async def release_lease(connection: asyncpg.Connection, task_id: uuid.UUID, *, owner: str) -> None:
    """Hand an unfinished task back at once (graceful shutdown)."""
    await _RELEASE.fetch(connection, task_id=task_id, owner=owner)


async def release_all_leases(connection: asyncpg.Connection, *, owner: str) -> int:
    """Hand back every task this process still holds."""
    return len(await _RELEASE_ALL.fetch(connection, owner=owner))


async def purge_expired_audio(connection: AsyncConnection, *, older_than_hours: float) -> int:
    """Delete the audio of tasks that ended more than `older_than_hours` ago; results stay.

    Only terminal tasks lose audio: a task in a stage never does, whatever its age. A
    task ended when `completed_at` was set; a finished row without it (written by an
    older release) counts from its last update.
    """
    purged = await connection.execute(
        text(
            f"""
            DELETE FROM task_audio a USING tasks t
            WHERE a.task_id = t.id AND t.status IN {TERMINAL_SQL}
              AND coalesce(t.completed_at, t.updated_at) <= now() - make_interval(secs => :age)
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
