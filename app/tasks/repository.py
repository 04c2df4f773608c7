"""SQL for reading and writing tasks; the service layer composes these in one unit of work."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, LargeBinary, Row, String, delete, literal, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.db.models import Task, TaskAudio

LIST_COLUMNS = (
    Task.id,
    Task.user_id,
    Task.text_id,
    Task.title,
    Task.status,
    Task.accuracy,
    Task.comment,
    Task.created_at,
    Task.updated_at,
    Task.completed_at,
)


@dataclass(frozen=True)
class PageCursor:
    """Position after the last task of a page: the (created_at, id) sort key."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class Recording:
    """The uploaded audio and what the client said about it."""

    content: bytes | memoryview
    filename: str | None
    content_type: str | None


async def insert_task(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    text_id: uuid.UUID,
    title: str,
    idempotency_key: str | None,
    request_fingerprint: str | None,
    upload: Recording,
) -> Task | None:
    """Insert a task and its upload in one statement (one round trip, and the audio's
    only trip to the database); None when the user's idempotency key is already taken
    (a retry race), and then nothing is inserted."""
    new_task = (
        insert(Task)
        .values(
            user_id=user_id,
            text_id=text_id,
            title=title,
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
        )
        .on_conflict_do_nothing(
            index_elements=[Task.user_id, Task.idempotency_key],
            index_where=Task.idempotency_key.is_not(None),
        )
        .returning(*Task.__table__.columns)
        .cte("new_task")
    )
    # A Core insert: an ORM object would keep the bytes alive until the session closes.
    new_audio = (
        insert(TaskAudio)
        .from_select(
            ["task_id", "kind", "content", "filename", "content_type", "size"],
            select(
                new_task.c.id,
                literal("upload", String),
                # Bound as given: asyncpg encodes any buffer, so a view of the parsed
                # upload reaches it without a copy (the dialect adds no processor).
                literal(upload.content, LargeBinary),
                literal(upload.filename, String),
                literal(upload.content_type, String),
                literal(len(upload.content), Integer),
            ),
        )
        .cte("new_audio")
    )
    statement = select(aliased(Task, new_task)).add_cte(new_audio)
    return (await session.scalars(statement)).one_or_none()


async def find_by_idempotency_key(
    session: AsyncSession, user_id: uuid.UUID, key: str
) -> Task | None:
    return await session.scalar(
        select(Task).where(Task.user_id == user_id, Task.idempotency_key == key)
    )


async def get_user_task(
    session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID
) -> Task | None:
    """The task if it exists and belongs to `user_id`."""
    return await session.scalar(select(Task).where(Task.id == task_id, Task.user_id == user_id))


async def list_user_tasks(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int | None,
    after: PageCursor | None = None,
    status: str | None = None,
) -> list[Row[Any]]:
    """The user's tasks newest first, served by `ix_tasks_user_created`.

    Only the columns a list shows: rows, not ORM objects, which cost several times more
    per row than the query itself.
    """
    query = select(*LIST_COLUMNS).where(Task.user_id == user_id)
    if status is not None:
        query = query.where(Task.status == status)
    if after is not None:
        query = query.where(tuple_(Task.created_at, Task.id) < (after.created_at, after.id))
    query = query.order_by(Task.created_at.desc(), Task.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(await session.execute(query))


async def delete_user_task(session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID) -> bool:
    """Delete the task; its audio and history go with it (ON DELETE CASCADE)."""
    deleted = await session.execute(
        delete(Task).where(Task.id == task_id, Task.user_id == user_id).returning(Task.id)
    )
    return deleted.first() is not None
