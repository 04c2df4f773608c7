"""The upload form's fields as both create routes declare them, and their answers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, File, Form, Header, UploadFile

from app.api.schemas import ErrorResponse
from app.db.models import CALLBACK_URL_MAX_LENGTH, TITLE_MAX_LENGTH

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


UploadDep = Annotated[Upload, Depends(upload_parts)]
ResourceUploadDep = Annotated[Upload, Depends(resource_upload_parts)]

UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "Idempotency-Key reused for another body."},
    400: {"model": ErrorResponse, "description": "Malformed multipart, or a part over its cap."},
    408: {"model": ErrorResponse, "description": "The body arrived slower than the minimum rate."},
    413: {"model": ErrorResponse, "description": "The file is over the upload limit."},
    415: {"model": ErrorResponse, "description": "The body is not multipart/form-data."},
    429: {
        "model": ErrorResponse,
        "description": "The user is at a cap: unfinished tasks, or stored audio (see Retry-After).",
    },
}
