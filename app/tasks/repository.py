"""SQL for reading and writing tasks; the service layer composes these in one unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, LargeBinary, Select, String, bindparam, delete, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from app.db.models import Task, TaskAudio

# The columns of the two lists, in the order of their responses' fields: the API writes
# the rows out as they come (app/api/listing.py). UUIDs are read as text, the form the
# responses show, so no value is converted in Python.
PAGE_COLUMNS = (
    "id",
    "user_id",
    "text_id",
    "title",
    "status",
    "accuracy",
    "comment",
    "created_at",
    "updated_at",
    "completed_at",
)
LEGACY_LIST_COLUMNS = ("id", "status", "title", "accuracy", "created_at")
_UUID_COLUMNS = frozenset({"id", "user_id", "text_id"})


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


def _insert_task_with_upload() -> Select[Task]:
    """The statement behind `insert_task`, built once: its parameters are named `new_*`.

    Built per call, constructing the two CTEs and computing their cache key was a visible
    part of an upload's CPU; built once, each call only binds its values.
    """
    new_task = (
        insert(Task)
        .values(
            user_id=bindparam("new_user_id"),
            text_id=bindparam("new_text_id"),
            title=bindparam("new_title"),
            idempotency_key=bindparam("new_idempotency_key"),
            request_fingerprint=bindparam("new_request_fingerprint"),
            callback_url=bindparam("new_callback_url"),
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
                bindparam("new_content", type_=LargeBinary),
                bindparam("new_filename", type_=String),
                bindparam("new_content_type", type_=String),
                bindparam("new_size", type_=Integer),
            ),
        )
        .cte("new_audio")
    )
    return select(aliased(Task, new_task)).add_cte(new_audio)


_INSERT_TASK_WITH_UPLOAD = _insert_task_with_upload()


async def insert_task(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    text_id: uuid.UUID,
    title: str,
    idempotency_key: str | None,
    request_fingerprint: str | None,
    upload: Recording,
    callback_url: str | None = None,
) -> Task | None:
    """Insert a task and its upload in one statement (one round trip, and the audio's
    only trip to the database); None when the user's idempotency key is already taken
    (a retry race), and then nothing is inserted."""
    parameters = {
        "new_user_id": user_id,
        "new_text_id": text_id,
        "new_title": title,
        "new_idempotency_key": idempotency_key,
        "new_request_fingerprint": request_fingerprint,
        "new_callback_url": callback_url,
        "new_content": upload.content,
        "new_filename": upload.filename,
        "new_content_type": upload.content_type,
        "new_size": len(upload.content),
    }
    return (await session.scalars(_INSERT_TASK_WITH_UPLOAD, parameters)).one_or_none()


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
    connection: AsyncConnection,
    user_id: uuid.UUID,
    *,
    columns: Sequence[str],
    limit: int | None,
    after: PageCursor | None = None,
    status: str | None = None,
) -> Sequence[Any]:
    """The user's tasks newest first, served by `ix_tasks_user_created`.

    The rows are the driver's own (asyncpg records: values in `columns` order, also by
    name): at 10 000 rows, ORM objects, SQLAlchemy rows and per-value type conversion
    each cost more than the query. The statement still runs through SQLAlchemy, so a
    connection a database restart cut is invalidated and answered 503 like any other;
    the driver has fetched every row by the time `execute` returns. One SQL text per
    shape of the query (status filter, cursor, limit), so each keeps its own prepared
    statement and its plan on the index.
    """
    shown = ", ".join(
        f"{name}::text AS {name}" if name in _UUID_COLUMNS else name for name in columns
    )
    parameters: list[Any] = [user_id]
    conditions = ["user_id = $1"]
    if status is not None:
        parameters.append(status)
        conditions.append(f"status = ${len(parameters)}")
    if after is not None:
        parameters += [after.created_at, after.id]
        conditions.append(f"(created_at, id) < (${len(parameters) - 1}, ${len(parameters)})")
    sql = (
        f"SELECT {shown} FROM tasks WHERE {' AND '.join(conditions)} "
        "ORDER BY created_at DESC, id DESC"
    )
    if limit is not None:
        parameters.append(limit)
        sql += f" LIMIT ${len(parameters)}"
    result = await connection.exec_driver_sql(sql, tuple(parameters))
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


async def delete_user_task(session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID) -> bool:
    """Delete the task; its audio and history go with it (ON DELETE CASCADE)."""
    deleted = await session.execute(
        delete(Task).where(Task.id == task_id, Task.user_id == user_id).returning(Task.id)
    )
    return deleted.first() is not None
