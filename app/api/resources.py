"""The resource routes for new clients: `/tasks`, the caller identified by `X-User-Id`."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import ReadSessionDep, RuntimeDep, SessionDep, UserIdDep, read_connection
from app.api.listing import JSONBytes, task_page_body
from app.api.schemas import (
    UNAUTHENTICATED,
    ErrorResponse,
    StageReport,
    TaskPageResponse,
    TaskResource,
    WebhookDeliveryReport,
)
from app.api.upload import (
    UPLOAD_FORM_LIMITS,
    UPLOAD_RESPONSES,
    ResourceRoute,
    ResourceUploadDep,
    create_from_upload,
    require_multipart,
)
from app.db.status import TaskStatus
from app.tasks import service
from app.tasks.errors import TaskNotFound
from app.webhooks.reports import task_deliveries

router = APIRouter(
    prefix="/tasks", tags=["tasks"], responses=UNAUTHENTICATED, route_class=ResourceRoute
)

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such task for this user."}
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskResource,
    summary="Upload a recording",
    dependencies=[Depends(require_multipart)],
    responses={
        200: {"model": TaskResource, "description": "A repeat of an earlier Idempotency-Key."},
        **UPLOAD_RESPONSES,
    },
    form_limits=UPLOAD_FORM_LIMITS,
)
async def create_task(
    session: SessionDep,
    runtime: RuntimeDep,
    user_id: UserIdDep,
    response: Response,
    upload: ResourceUploadDep,
) -> TaskResource:
    """Store the task with its audio; `Location` names the new resource."""
    created = await create_from_upload(session, runtime, user_id, upload)
    response.headers["Location"] = f"/tasks/{created.task.id}"
    if created.replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return TaskResource.model_validate(created.task)


@router.get(
    "",
    response_model=TaskPageResponse,
    summary="List the caller's tasks, newest first",
    responses={400: {"model": ErrorResponse, "description": "The cursor is not valid."}},
)
async def list_tasks(
    runtime: RuntimeDep,
    user_id: UserIdDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
    ] = None,
    status_filter: Annotated[
        TaskStatus | None, Query(alias="status", description="Only tasks in this status.")
    ] = None,
) -> JSONBytes:
    """The body is written from the rows, not validated through the model (app/api/listing.py)."""
    async with read_connection(runtime) as connection:
        page = await service.list_tasks_page(
            connection, user_id, limit=limit, cursor=cursor, status=status_filter
        )
    return JSONBytes(task_page_body(page.tasks, page.next_cursor))


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a task with its audio and history",
    responses=NOT_FOUND,
)
async def delete_task(session: SessionDep, user_id: UserIdDep, task_id: uuid.UUID) -> None:
    """A worker processing the task stops at its next step without writing anything back."""
    await service.delete_task(session, user_id, task_id)


@router.get(
    "/{task_id}",
    response_model=TaskResource,
    summary="Read one task",
    responses=NOT_FOUND,
)
async def read_task(
    session: ReadSessionDep, user_id: UserIdDep, task_id: uuid.UUID
) -> TaskResource:
    return await task_detail(session, user_id, task_id)


@router.get(
    "/{task_id}/deliveries",
    response_model=list[WebhookDeliveryReport],
    summary="The task's completion webhooks and their attempts",
    responses=NOT_FOUND,
)
async def list_deliveries(
    session: ReadSessionDep, user_id: UserIdDep, task_id: uuid.UUID
) -> list[WebhookDeliveryReport]:
    """Empty until the task ends (and always without a `callback_url`)."""
    await service.get_task(session, user_id, task_id)  # the owner's, or 404
    reports = await task_deliveries(await session.connection(), task_id)
    return [WebhookDeliveryReport.model_validate(report) for report in reports]


async def task_detail(
    session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID
) -> TaskResource:
    """The detail route's body; a completion webhook's `data` is the same document."""
    task, timings = await service.get_task_with_stages(session, user_id, task_id)
    resource = TaskResource.model_validate(task)
    resource.stages = [
        StageReport.model_validate(timing, from_attributes=True) for timing in timings
    ]
    return resource


async def webhook_task_data(
    session: AsyncSession, user_id: uuid.UUID, task_id: uuid.UUID
) -> dict[str, Any] | None:
    """The detail as JSON-ready data, for the delivery workers (None: the task is gone)."""
    try:
        resource = await task_detail(session, user_id, task_id)
    except TaskNotFound:
        return None
    return resource.model_dump(mode="json")
