"""An upload's form turned into a stored task: the checks the form schema cannot express,
the audio read within the upload memory budget, the task created and counted."""

from __future__ import annotations

import unicodedata
import uuid
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import replace
from tempfile import SpooledTemporaryFile

from fastapi import UploadFile
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.upload.errors import field_error, upload_too_large
from app.api.upload.fields import Upload
from app.api.upload.part_buffer import buffered_part
from app.config import Settings
from app.db.models import METADATA_MAX_LENGTH
from app.runtime import Runtime
from app.tasks import service
from app.tasks.service import CreatedTask, NewTask, UserCaps
from app.webhooks.policy import CallbackRefused


async def create_from_upload(
    session: AsyncSession, runtime: Runtime, user_id: uuid.UUID, upload: Upload
) -> CreatedTask:
    """Validate the upload, store the task and count it (a replayed retry is not new)."""
    memory = runtime.upload_memory
    size = upload.file.size or 0
    spooled = upload.file.file
    if isinstance(spooled, SpooledTemporaryFile) and not memory.fits(memory.storage_bytes(size)):
        # A small file is still in memory after parsing: move it to disk before it waits,
        # so that waiting uploads hold nothing outside the budget.
        spooled.rollover()
    callback_url = await check_callback(runtime, upload.callback_url, user_id)
    # A file parsed into memory holds its storage share since before its first byte.
    storing: AbstractAsyncContextManager[None] = (
        nullcontext() if buffered_part(upload.file) else memory.reserve(size)
    )
    async with storing:
        new = await read_upload(
            runtime.settings,
            user_id=user_id,
            text_id=upload.text_id,
            title=upload.title,
            file=upload.file,
        )
        if callback_url is not None:
            new = replace(new, callback_url=callback_url)
        created = await service.create_task(
            session, new, idempotency_key=upload.idempotency_key, caps=user_caps(runtime.settings)
        )
    if not created.replayed:
        runtime.metrics.tasks_created.inc()
    return created


def user_caps(settings: Settings) -> UserCaps:
    return UserCaps(
        max_unfinished=settings.max_unfinished_tasks_per_user,
        max_audio_bytes=settings.max_stored_audio_bytes_per_user,
        audio_retention_hours=settings.audio_retention_hours,
    )


async def check_callback(runtime: Runtime, url: str | None, user_id: uuid.UUID) -> str | None:
    """The callback URL to store, or a 422 saying why it is refused (before the audio).

    Its DNS lookups count against the user's share (a name that never answers holds
    that user's lookups, nobody else's)."""
    if url is None:
        return None
    if not runtime.settings.webhook_keys:
        raise field_error(
            "callback_url",
            "This service sends no webhooks (no MANAGER_WEBHOOK_SECRET is configured).",
            url,
        )
    try:
        return await runtime.webhook_policy.check(url, user_id)
    except CallbackRefused as refused:
        raise field_error("callback_url", f"{refused}.", url) from None


async def read_upload(
    settings: Settings,
    *,
    user_id: uuid.UUID,
    text_id: uuid.UUID,
    title: str,
    file: UploadFile,
) -> NewTask:
    """Check the parts the form schema cannot express and read the audio."""
    if not title.strip():
        raise field_error("title", "The title must not be blank.", title)
    if _has_unstorable_characters(title):
        raise field_error(
            "title", "The title must not contain control characters or lone surrogates.", title
        )
    limit = settings.max_upload_bytes
    if file.size is not None and file.size > limit:
        raise upload_too_large(settings.max_upload_mb)
    buffer = buffered_part(file)
    audio = buffer.view() if buffer is not None else await file.read(limit + 1)
    if len(audio) > limit:
        raise upload_too_large(settings.max_upload_mb)
    if not audio:
        raise field_error("file", "The uploaded file is empty.", file.filename)
    return NewTask(
        user_id=user_id,
        text_id=text_id,
        title=title,
        audio=audio,
        # Kept for reference only: cleaned so that no client string can upset the database.
        filename=_clean_metadata(file.filename),
        content_type=_clean_metadata(file.content_type),
    )


# Control characters (PostgreSQL refuses NUL in text) and lone surrogates (a field decoded
# with a charset the client chose, e.g. UTF-7 "+2AA-", which UTF-8 cannot encode).
_UNSTORABLE = frozenset({"Cc", "Cs"})


def _has_unstorable_characters(text: str) -> bool:
    return any(unicodedata.category(character) in _UNSTORABLE for character in text)


def _clean_metadata(value: str | None, limit: int = METADATA_MAX_LENGTH) -> str | None:
    if value is None:
        return None
    cleaned = "".join(c for c in value if unicodedata.category(c) not in _UNSTORABLE)[:limit]
    return cleaned or None
