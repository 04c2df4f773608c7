"""SQL for reading and writing tasks; the service layer composes these in one unit of work."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Dialect, LargeBinary, Row, bindparam, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

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


async def insert_task(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    text_id: uuid.UUID,
    title: str,
    idempotency_key: str | None,
    request_fingerprint: str | None,
) -> Task | None:
    """Insert a task; None when the user's idempotency key is already taken (a retry race)."""
    statement = (
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
        .returning(Task)
    )
    return (await session.scalars(statement)).one_or_none()


class _BufferBytea(LargeBinary):
    """bytea bound as given: asyncpg encodes any buffer, so a view of the parsed upload
    goes to it without the `bytes()` copy `LargeBinary` would make first."""

    def bind_processor(self, dialect: Dialect) -> None:
        return None


async def insert_audio(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    kind: str,
    content: bytes | memoryview,
    filename: str | None,
    content_type: str | None,
) -> None:
    # A Core insert: an ORM object would keep the bytes alive until the session closes.
    await session.execute(
        insert(TaskAudio).values(
            task_id=task_id,
            kind=kind,
            content=bindparam("content", content, type_=_BufferBytea()),
            filename=filename,
            content_type=content_type,
            size=len(content),
        )
    )


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
