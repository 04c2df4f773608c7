"""The routes the ILPS gateway calls today: paths, methods and shapes kept (docs/legacy-api.md)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Form

from app.api.deps import ReadSessionDep, RuntimeDep, SessionDep, read_connection
from app.api.listing import JSONBytes, legacy_list_body
from app.api.schemas import (
    ErrorResponse,
    LegacyCreatedResponse,
    LegacyTaskDetail,
    LegacyTaskSummary,
    LegacyUserRequest,
)
from app.api.upload import (
    UPLOAD_FORM_LIMITS,
    UPLOAD_RESPONSES,
    LegacyRoute,
    UploadDep,
    create_from_upload,
    require_multipart,
)
from app.tasks import service

UNTRUSTED: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "The caller is not in MANAGER_TRUSTED_CLIENTS."}
}
JSON_BODY: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "The body is over MANAGER_JSON_BODY_MAX_KB."},
    415: {"model": ErrorResponse, "description": "The body is not application/json."},
}
# The user id comes from the body, so only the gateway may call these (LegacyRoute).
router = APIRouter(tags=["legacy"], route_class=LegacyRoute, responses=UNTRUSTED)

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such task for this user."}
}
UserBody = Annotated[LegacyUserRequest, Body()]


@router.post(
    "/transcribe",
    response_model=LegacyCreatedResponse,
    summary="Upload a recording (legacy)",
    dependencies=[Depends(require_multipart)],
    responses=UPLOAD_RESPONSES,
    form_limits=UPLOAD_FORM_LIMITS,
)
async def transcribe(
    session: SessionDep,
    runtime: RuntimeDep,
    upload: UploadDep,
    user_id: Annotated[uuid.UUID, Form(examples=["3f0b8c1e-6a0e-4f43-9a57-5b8f9f3f4a10"])],
) -> LegacyCreatedResponse:
    """Store the task with its audio (status `created`); the pipeline processes it."""
    created = await create_from_upload(session, runtime, user_id, upload)
    return LegacyCreatedResponse(id=created.task.id)


@router.post(
    "/",
    response_model=list[LegacyTaskSummary],
    summary="List the user's tasks, newest first (legacy)",
    responses=JSON_BODY,
)
async def list_tasks(runtime: RuntimeDep, body: UserBody) -> JSONBytes:
    """The body is written from the rows, not validated through the model (app/api/listing.py)."""
    async with read_connection(runtime) as connection:
        rows = await service.list_all_tasks(connection, body.user_id)
    return JSONBytes(legacy_list_body(rows))


@router.post(
    "/{task_id}",
    response_model=LegacyTaskDetail,
    summary="Read one task (legacy)",
    responses={**NOT_FOUND, **JSON_BODY},
)
async def read_task(
    session: ReadSessionDep, task_id: uuid.UUID, body: UserBody
) -> LegacyTaskDetail:
    task = await service.get_task(session, body.user_id, task_id)
    return LegacyTaskDetail.model_validate(task)
