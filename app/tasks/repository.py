"""SQL for reading and writing tasks; the service layer composes these in one unit of work.

The statements written as SQL are in app/db/sql/tasks.sql; the ORM and Core ones are built
here from the models.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    LargeBinary,
    Select,
    String,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from app.db.models import Task, TaskAudio
from app.db.queries import Query, queries

# The columns of the two lists' statements, in the order of their responses' fields: the
# API writes the rows out as they come (app/api/listing.py). UUIDs are read as text, the
# form the responses show, so no value is converted in Python.
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
    """The statement behind `insert_task`, built once (each call only binds its values):
    its parameters are named `new_*`."""
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
    # The user's lock is taken in this statement and held to the commit, so the caps'
    # check (`record_created_within_caps`), a statement of its own and thus with a later
    # snapshot, counts every task of the user committed before; costs no round trip.
    lock = func.pg_advisory_xact_lock(
        USER_LOCK_CLASS, func.hashtext(cast(new_task.c.user_id, Text))
    )
    return select(aliased(Task, new_task), lock).add_cte(new_audio)


# The per-user lock that serialises a user's creations and erasure: the two-key form
# (PostgreSQL's objsubid 2), which the claim's reading of owner locks (objsubid 1) ignores.
USER_LOCK_CLASS = 0x5553_4552

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
    row = (await session.execute(_INSERT_TASK_WITH_UPLOAD, parameters)).one_or_none()
    return None if row is None else row[0]


async def record_created_within_caps(
    session: AsyncSession, task_id: uuid.UUID, *, max_unfinished: int, max_audio_bytes: int
) -> bool:
    """Record the new task's `created` event; False (nothing written) when over a cap."""
    seq = await session.scalar(
        queries("tasks").record_created_within_caps.clause,
        {"task_id": task_id, "max_unfinished": max_unfinished, "max_audio_bytes": max_audio_bytes},
    )
    return seq is not None


@dataclass(frozen=True)
class UserUsage:
    unfinished: int
    audio_bytes: int
    # When the earliest audio of a finished task of the user ends, by `retention_hours`.
    audio_frees_in_seconds: float | None


async def user_usage(
    session: AsyncSession, user_id: uuid.UUID, *, retention_hours: float
) -> UserUsage:
    """What the user holds against the caps (read only when a creation was refused)."""
    row = (
        await session.execute(
            queries("tasks").user_usage.clause,
            {"user_id": user_id, "retention": retention_hours * 3600},
        )
    ).one()
    frees = None if row.audio_frees_in is None else float(row.audio_frees_in)
    return UserUsage(
        unfinished=int(row.unfinished),
        audio_bytes=int(row.audio_bytes),
        audio_frees_in_seconds=frees,
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


async def list_all_user_tasks(connection: AsyncConnection, user_id: uuid.UUID) -> Sequence[Any]:
    """Every task of the user newest first, holding `LEGACY_LIST_COLUMNS`."""
    return await _driver_rows(connection, "list_all_tasks", {"user_id": user_id})


async def list_user_tasks_page(
    connection: AsyncConnection,
    user_id: uuid.UUID,
    *,
    limit: int,
    after: PageCursor | None = None,
    status: str | None = None,
) -> Sequence[Any]:
    """Up to `limit` of the user's tasks newest first, holding `PAGE_COLUMNS`: those in
    `status` (None: any), after the cursor `after` (None: from the newest)."""
    values: dict[str, Any] = {"user_id": user_id, "limit": limit}
    name = "list_tasks_page"
    if status is not None:
        name += "_in_status"
        values["status"] = status
    if after is not None:
        name += "_after"
        values |= {"after_created_at": after.created_at, "after_id": after.id}
    return await _driver_rows(connection, name, values)


async def _driver_rows(
    connection: AsyncConnection, name: str, values: dict[str, Any]
) -> Sequence[Any]:
    """The rows of a list statement as the driver's own records (values in column order,
    also by name): ORM objects, SQLAlchemy rows and per-value conversion each cost more
    than the query at thousands of rows. It still runs through SQLAlchemy, so a connection
    a database restart cut is invalidated and answered 503 like any other; the driver has
    fetched every row by the time `execute` returns."""
    query: Query = getattr(queries("tasks"), name)
    result = await connection.exec_driver_sql(query.driver_sql, tuple(query.arguments(values)))
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


async def lock_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Take the user's lock (see `USER_LOCK_CLASS`) until the transaction ends."""
    await session.execute(
        queries("tasks").lock_user.clause, {"lock_class": USER_LOCK_CLASS, "user_id": user_id}
    )


async def erase_user_tasks(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Delete everything stored for the user; the number of tasks deleted."""
    erased = await session.execute(queries("tasks").erase_user.clause, {"user_id": user_id})
    return len(erased.all())


async def delete_user_task(session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID) -> bool:
    """Delete the task; its audio and history go with it (ON DELETE CASCADE)."""
    deleted = await session.execute(
        delete(Task).where(Task.id == task_id, Task.user_id == user_id).returning(Task.id)
    )
    return deleted.first() is not None
