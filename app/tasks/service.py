"""The task service: what callers can do with tasks. Routers call this; it never speaks HTTP.

Each function runs inside the caller's unit of work (one session, one transaction) and
only flushes; the request dependency commits, so a task and its audio land together.
"""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.history import EventRecord, append_event, list_events, notify_deleted
from app.db.models import Task
from app.db.status import TaskStatus
from app.tasks import repository
from app.tasks.errors import IdempotencyConflict, InvalidCursor, QuotaExceeded, TaskNotFound
from app.tasks.report import StageTiming, stage_timings
from app.tasks.repository import PageCursor, Recording


@dataclass(frozen=True)
class NewTask:
    """A validated upload."""

    user_id: uuid.UUID
    text_id: uuid.UUID
    title: str
    audio: bytes | memoryview  # a view of the parsed upload, not a copy
    filename: str | None
    content_type: str | None
    callback_url: str | None = None

    def fingerprint(self) -> str:
        """What makes two uploads "the same request" for idempotency."""
        digest = hashlib.sha256()
        for part in (str(self.text_id), self.title, self.filename or ""):
            digest.update(part.encode())
            digest.update(b"\0")
        digest.update(hashlib.sha256(self.audio).digest())
        if self.callback_url is not None:  # absent: the same fingerprints as before
            digest.update(b"\0callback\0" + self.callback_url.encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class UserCaps:
    """What one user may hold: unfinished tasks, and stored audio bytes."""

    max_unfinished: int
    max_audio_bytes: int
    audio_retention_hours: float  # when the audio of finished tasks is freed


# Tasks take seconds to minutes through the pipeline: a slot frees well within this.
UNFINISHED_RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class CreatedTask:
    task: Task
    replayed: bool  # True when an Idempotency-Key repeat returned the first task


@dataclass(frozen=True)
class TaskPage:
    tasks: Sequence[Any]  # driver rows holding `repository.PAGE_COLUMNS`
    next_cursor: str | None


async def create_task(
    session: AsyncSession,
    new: NewTask,
    *,
    idempotency_key: str | None = None,
    caps: UserCaps | None = None,
) -> CreatedTask:
    """Store the task, its audio and its `created` event in the current transaction.

    Over one of `caps` (the new task counted) it raises `QuotaExceeded`, and the caller's
    rollback removes the insert: nothing stays, no event is sent.
    """
    fingerprint = new.fingerprint() if idempotency_key else None
    if idempotency_key:
        existing = await repository.find_by_idempotency_key(session, new.user_id, idempotency_key)
        if existing is not None:
            return _replay(existing, fingerprint)
    task = await repository.insert_task(
        session,
        user_id=new.user_id,
        text_id=new.text_id,
        title=new.title,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        upload=Recording(content=new.audio, filename=new.filename, content_type=new.content_type),
        callback_url=new.callback_url,
    )
    if task is None:
        # A concurrent retry with the same key won the insert; answer with its task.
        assert idempotency_key is not None
        existing = await repository.find_by_idempotency_key(session, new.user_id, idempotency_key)
        if existing is None:  # pragma: no cover - the winner rolled back; let the client retry
            raise IdempotencyConflict("A request with this Idempotency-Key is in progress.")
        return _replay(existing, fingerprint)
    if caps is None:
        await append_event(session, task.id, EventRecord(kind="status", status=TaskStatus.CREATED))
    elif not await repository.record_created_within_caps(
        session,
        task.id,
        max_unfinished=caps.max_unfinished,
        max_audio_bytes=caps.max_audio_bytes,
    ):
        raise await _over_quota(session, new.user_id, caps)
    return CreatedTask(task=task, replayed=False)


async def _over_quota(session: AsyncSession, user_id: uuid.UUID, caps: UserCaps) -> QuotaExceeded:
    """Which cap the creation went over, and when trying again makes sense."""
    usage = await repository.user_usage(
        session, user_id, retention_hours=caps.audio_retention_hours
    )
    if usage.unfinished > caps.max_unfinished:
        return QuotaExceeded(
            f"This user already has {caps.max_unfinished} unfinished tasks; "
            "retry when some have finished.",
            retry_after_seconds=UNFINISHED_RETRY_AFTER_SECONDS,
        )
    frees = usage.audio_frees_in_seconds
    if frees is None:  # all of it belongs to unfinished tasks: it goes after they end
        frees = max(UNFINISHED_RETRY_AFTER_SECONDS, caps.audio_retention_hours * 3600)
    return QuotaExceeded(
        f"This user's stored audio is over the quota of "
        f"{caps.max_audio_bytes / (1024 * 1024):g} MB; it is freed "
        f"{caps.audio_retention_hours:g} hours after each task ends.",
        retry_after_seconds=max(1, math.ceil(frees)),
    )


def _replay(existing: Task, fingerprint: str | None) -> CreatedTask:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict()
    return CreatedTask(task=existing, replayed=True)


async def get_task(session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    """The user's task, or `TaskNotFound` (also for another user's task)."""
    task = await repository.get_user_task(session, user_id, task_id)
    if task is None:
        raise TaskNotFound()
    return task


async def get_task_with_stages(
    session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID
) -> tuple[Task, list[StageTiming]]:
    """The user's task and how each pipeline stage went so far."""
    task = await get_task(session, user_id, task_id)
    return task, stage_timings(await list_events(session, task.id))


async def list_all_tasks(connection: AsyncConnection, user_id: uuid.UUID) -> Sequence[Any]:
    """Every task of the user, newest first (the legacy list has no pagination).

    The rows hold `repository.LEGACY_LIST_COLUMNS`, UUIDs as text.
    """
    return await repository.list_all_user_tasks(connection, user_id)


async def list_tasks_page(
    connection: AsyncConnection,
    user_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    status: TaskStatus | None = None,
) -> TaskPage:
    """One page of the user's tasks, newest first, continuing after `cursor`."""
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.list_user_tasks_page(
        connection,
        user_id,
        limit=limit + 1,
        after=after,
        status=status.value if status is not None else None,
    )
    tasks = rows[:limit]
    has_more = len(rows) > limit
    next_cursor = (
        encode_cursor(PageCursor(tasks[-1]["created_at"], uuid.UUID(tasks[-1]["id"])))
        if has_more
        else None
    )
    return TaskPage(tasks=tasks, next_cursor=next_cursor)


async def erase_user(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Delete everything stored for the user, in the caller's one transaction.

    The user's lock keeps a creation of the same user from slipping in between. Erasing
    a user with nothing stored does nothing. Workers holding a task of the user stop at
    their next write (fenced by the lease on a row that is gone); the followers of each
    task are told at commit.
    """
    await repository.lock_user(session, user_id)
    return await repository.erase_user_tasks(session, user_id)


async def delete_task(session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID) -> None:
    """Remove the task with its audio and history; a worker holding it stops on its next write."""
    if not await repository.delete_user_task(session, user_id, task_id):
        raise TaskNotFound()
    await notify_deleted(session, task_id)


def encode_cursor(cursor: PageCursor) -> str:
    raw = f"{cursor.created_at.isoformat()}|{cursor.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> PageCursor:
    try:
        padded = value + "=" * (-len(value) % 4)
        created_at, _, task_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        cursor = PageCursor(datetime.fromisoformat(created_at), uuid.UUID(task_id))
        if cursor.created_at.tzinfo is None:
            raise InvalidCursor()
        # The driver converts to UTC; year 1 at +14:00 has no UTC equivalent.
        cursor.created_at.astimezone(UTC)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise InvalidCursor() from None
    return cursor
