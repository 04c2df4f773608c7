"""Turning a multipart upload into a validated `NewTask`, shared by both create routes."""

from __future__ import annotations

import unicodedata
import uuid
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, replace
from tempfile import SpooledTemporaryFile
from typing import Annotated, Any, TypedDict

from fastapi import Depends, File, Form, Header, HTTPException, Request, UploadFile, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.formparsers import MultiPartParser

from app.api.multipart_form import PartCaps
from app.api.part_buffer import buffered_part
from app.api.schemas import ErrorResponse
from app.config import Settings
from app.db.models import CALLBACK_URL_MAX_LENGTH, METADATA_MAX_LENGTH, TITLE_MAX_LENGTH
from app.runtime import Runtime
from app.tasks import service
from app.tasks.service import CreatedTask, NewTask
from app.webhooks.policy import CallbackRefused


# The form has one file and three text fields (title, text_id, and user_id on the legacy
# route); a few more are tolerated for clients that send extras. A title is 50
# characters, so a text field has no reason to be larger than a few KiB.
class FormLimits(TypedDict, total=False):
    """The limits `Request.form()` and FastAPI's `form_limits` take."""

    max_files: int
    max_fields: int
    max_part_size: int


MAX_TEXT_FIELDS = 8
MAX_TEXT_FIELD_BYTES = 8 * 1024
UPLOAD_FORM_LIMITS = FormLimits(
    max_files=1, max_fields=MAX_TEXT_FIELDS, max_part_size=MAX_TEXT_FIELD_BYTES
)
# The same caps for the parser that reads a form into memory (app/api/multipart_form.py).
UPLOAD_PART_CAPS = PartCaps(
    max_files=UPLOAD_FORM_LIMITS["max_files"],
    max_fields=UPLOAD_FORM_LIMITS["max_fields"],
    max_text_bytes=UPLOAD_FORM_LIMITS["max_part_size"],
)
# Memory a form can hold while it is parsed: the in-memory part of its spooled file
# plus its text fields at their caps.
PARSE_MEMORY_BYTES = MultiPartParser.spool_max_size + MAX_TEXT_FIELDS * MAX_TEXT_FIELD_BYTES

FileField = Annotated[
    UploadFile,
    File(
        description="The recording: raw PCM s16le, 2 channels, 44.1 kHz, as the app records it.",
        json_schema_extra={"minLength": 1},  # an empty file is refused (422)
    ),
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


async def require_multipart(request: Request) -> None:
    """Refuse a body that is not a form upload before anything else is looked at."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=(
                "Send the upload as multipart/form-data with the fields file, title and text_id."
            ),
        )


@dataclass(frozen=True)
class Upload:
    """What both create routes take besides the caller."""

    file: UploadFile
    title: str
    text_id: uuid.UUID
    idempotency_key: str | None
    callback_url: str | None = None


async def upload_parts(
    file: FileField,
    title: TitleField,
    text_id: TextIdField,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Upload:
    return Upload(file=file, title=title, text_id=text_id, idempotency_key=idempotency_key)


UploadDep = Annotated[Upload, Depends(upload_parts)]

CallbackUrlField = Annotated[
    str | None,
    Form(
        min_length=1,
        max_length=CALLBACK_URL_MAX_LENGTH,
        description=(
            "Where to POST a signed webhook when the task completes or fails "
            "(https; see docs/webhooks.md)."
        ),
        examples=["https://lms.example.org/hooks/ilps"],
    ),
]


async def resource_upload_parts(
    file: FileField,
    title: TitleField,
    text_id: TextIdField,
    idempotency_key: IdempotencyKeyHeader = None,
    callback_url: CallbackUrlField = None,
) -> Upload:
    return Upload(
        file=file,
        title=title,
        text_id=text_id,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
    )


ResourceUploadDep = Annotated[Upload, Depends(resource_upload_parts)]
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "Idempotency-Key reused for another body."},
    400: {"model": ErrorResponse, "description": "Malformed multipart, or a part over its cap."},
    408: {"model": ErrorResponse, "description": "The body arrived slower than the minimum rate."},
    413: {"model": ErrorResponse, "description": "The file is over the upload limit."},
    415: {"model": ErrorResponse, "description": "The body is not multipart/form-data."},
}


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
        created = await service.create_task(session, new, idempotency_key=upload.idempotency_key)
    if not created.replayed:
        runtime.metrics.tasks_created.inc()
    return created


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


def field_error(field: str, message: str, value: object) -> RequestValidationError:
    """A 422 in FastAPI's own shape, so every validation error reads the same."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}]
    )


def upload_too_large(limit_mb: float) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"The upload is larger than the limit of {limit_mb:g} MB.",
    )
