"""Turning a multipart upload into a validated `NewTask`, shared by both create routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import File, Form, Header, HTTPException, Request, UploadFile, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.models import TITLE_MAX_LENGTH
from app.runtime import Runtime
from app.tasks import service
from app.tasks.service import CreatedTask, NewTask

FileField = Annotated[
    UploadFile,
    File(description="The recording: raw PCM s16le, 2 channels, 44.1 kHz, as the app records it."),
]
TitleField = Annotated[
    str,
    Form(
        min_length=1,
        max_length=TITLE_MAX_LENGTH,
        description="A name for the exercise.",
        examples=["Please call Stella"],
    ),
]
TextIdField = Annotated[
    uuid.UUID,
    Form(description="The text that was read.", examples=["7b1e2f60-2d2c-4c1f-9a51-3d6f0c2a9b01"]),
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        description=(
            "Any unique string per upload. A retry with the same key returns the first task "
            "instead of creating another; the same key with a different request is a 409."
        ),
        examples=["c0a8f1d2-upload-1"],
    ),
]


def require_multipart(request: Request) -> None:
    """Refuse a body that is not a form upload before anything else is looked at."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=(
                "Send the upload as multipart/form-data with the fields file, title and text_id."
            ),
        )


async def create_from_upload(
    session: AsyncSession,
    runtime: Runtime,
    *,
    user_id: uuid.UUID,
    text_id: uuid.UUID,
    title: str,
    file: UploadFile,
    idempotency_key: str | None,
) -> CreatedTask:
    """Validate the upload, store the task and count it (a replayed retry is not new)."""
    new = await read_upload(
        runtime.settings, user_id=user_id, text_id=text_id, title=title, file=file
    )
    created = await service.create_task(session, new, idempotency_key=idempotency_key)
    if not created.replayed:
        runtime.metrics.tasks_created.inc()
    return created


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
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="The title must not be blank."
        )
    limit = settings.max_upload_bytes
    if file.size is not None and file.size > limit:
        raise upload_too_large(settings.max_upload_mb)
    audio = await file.read(limit + 1)
    if len(audio) > limit:
        raise upload_too_large(settings.max_upload_mb)
    if not audio:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="The uploaded file is empty."
        )
    return NewTask(
        user_id=user_id,
        text_id=text_id,
        title=title,
        audio=audio,
        filename=file.filename,
        content_type=file.content_type,
    )


def upload_too_large(limit_mb: float) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"The upload is larger than the limit of {limit_mb:g} MB.",
    )
