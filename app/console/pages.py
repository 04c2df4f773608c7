"""The console's pages and form actions (HTML; the same actions as JSON are in `api`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from sse_starlette import EventSourceResponse

from app.api.deps import RuntimeDep, SettingsDep
from app.console import views
from app.console.api import retry_task
from app.console.auth import (
    FORBIDDEN,
    NAME_COOKIE,
    TOKEN_COOKIE,
    OperatorDep,
    csrf_token,
    session_cookie,
    token_matches,
)
from app.console.queries import overview, task_summary, timeline, user_tasks
from app.console.routing import LoginRoute, OperatorRoute
from app.runtime import Runtime
from app.tasks.errors import TaskError
from app.tasks.failures import FailureFilter, failure_groups
from app.tasks.retry import action_detail, cancel_task, retry_matching
from app.webhooks.redeliver import redeliver
from app.webhooks.reports import task_deliveries

STATIC = Path(__file__).parent / "static"
# How often the overview stream sends fresh figures, and for how long one stream lasts
# (the browser's EventSource reconnects on its own).
OVERVIEW_EVERY_SECONDS = 2.0
STREAM_MAX_SECONDS = 3600.0
BULK_LIMIT = 1000

router = APIRouter(prefix="/console", include_in_schema=False, route_class=OperatorRoute)
# The one way in without a session: trusted clients only, and off without a token.
login_router = APIRouter(prefix="/console", include_in_schema=False, route_class=LoginRoute)

Reason = Annotated[str, Form(max_length=500)]


@login_router.get("/login", response_class=HTMLResponse)
async def login_form() -> str:
    return views.page("Sign in", views.login_body())


@login_router.post("/login", response_model=None)
async def login(
    settings: SettingsDep,
    name: Annotated[str, Form(max_length=64)],
    token: Annotated[str, Form(max_length=4096)],
) -> RedirectResponse:
    if not token_matches(settings, token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=FORBIDDEN)
    response = RedirectResponse("/console", status.HTTP_303_SEE_OTHER)
    for key, value in ((TOKEN_COOKIE, session_cookie(settings)), (NAME_COOKIE, name.strip())):
        response.set_cookie(key, value, httponly=True, samesite="strict", path="/console")
    return response


@router.get("", response_class=HTMLResponse)
async def overview_page(runtime: RuntimeDep, _operator: OperatorDep) -> str:
    async with runtime.database.autocommit.connect() as connection:
        data = await overview(connection)
    return views.page("Overview", views.overview_body(data), script=True)


@router.get("/console.js")
async def script(_operator: OperatorDep) -> FileResponse:
    return FileResponse(STATIC / "console.js", media_type="text/javascript")


async def _overview_frames(runtime: Runtime, request: Request) -> AsyncIterator[dict[str, str]]:
    loop = asyncio.get_running_loop()
    ends = loop.time() + STREAM_MAX_SECONDS
    while loop.time() < ends and not await request.is_disconnected():
        async with runtime.database.autocommit.connect() as connection:
            data = await overview(connection)
        frame = data.as_json()
        frame["chart"] = views.chart(data.completed_per_minute, data.failed_per_minute)
        yield {"event": "overview", "data": json.dumps(frame)}
        # The refresh period, cut short by the stop signal: the stream ends with the process.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stopping.wait(), OVERVIEW_EVERY_SECONDS)
        if runtime.stopping.is_set():
            return


@router.get("/events")
async def overview_events(
    request: Request, runtime: RuntimeDep, _operator: OperatorDep
) -> EventSourceResponse:
    return EventSourceResponse(_overview_frames(runtime, request))


def _user(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="Not a user id.") from None


@router.get("/failures", response_class=HTMLResponse)
async def failures_page(
    runtime: RuntimeDep,
    settings: SettingsDep,
    _operator: OperatorDep,
    window_hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24.0,
    stage: str | None = None,
    user_id: str | None = None,
) -> str:
    matching = FailureFilter(window_hours=window_hours, stage=stage or None, user_id=_user(user_id))
    async with runtime.database.autocommit.connect() as connection:
        groups = await failure_groups(connection, matching)
    body = views.failures_body(
        groups,
        window_hours=window_hours,
        stage=stage or None,
        user_id=user_id,
        csrf=csrf_token(settings),
    )
    return views.page("Failures", body)


@router.post("/failures/retry", response_class=HTMLResponse)
async def bulk_retry_form(
    runtime: RuntimeDep,
    operator: OperatorDep,
    window_hours: Annotated[float, Form(gt=0, le=24 * 90)] = 24.0,
    stage: Annotated[str, Form()] = "",
    user_id: Annotated[str, Form()] = "",
    reason_filter: Annotated[str | None, Form()] = None,
    dry_run: Annotated[bool, Form()] = False,
    reason: Reason = "",
) -> str:
    matching = FailureFilter(
        window_hours=window_hours,
        stage=stage or None,
        user_id=_user(user_id),
        reason=reason_filter,
    )
    async with runtime.database.sessions() as session, session.begin():
        outcome = await retry_matching(
            session, matching, actor=operator, reason=reason, dry_run=dry_run, limit=BULK_LIMIT
        )
    if not dry_run and outcome.retried:
        runtime.workers.wakeup.notify()
    body = views.bulk_result_body(
        dry_run=dry_run,
        matched=outcome.matched,
        retried=len(outcome.retried),
        refused=len(outcome.not_retryable),
    )
    return views.page("Bulk retry", body)


@router.get("/tasks", response_class=HTMLResponse, response_model=None)
async def search(
    runtime: RuntimeDep, _operator: OperatorDep, q: str = ""
) -> str | RedirectResponse:
    query = q.strip()
    if not query:
        return views.page("Find a task", views.search_body("", []))
    try:
        wanted = uuid.UUID(query)
    except ValueError:
        return views.page("Find a task", views.search_body(query, [], "Not a task or user id."))
    async with runtime.database.autocommit.connect() as connection:
        if await task_summary(connection, wanted) is not None:
            return RedirectResponse(f"/console/tasks/{wanted}", status.HTTP_303_SEE_OTHER)
        tasks = await user_tasks(connection, wanted)
    message = "" if tasks else "No task or user with this id."
    return views.page("Find a task", views.search_body(query, tasks, message))


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(
    task_id: uuid.UUID,
    runtime: RuntimeDep,
    settings: SettingsDep,
    _operator: OperatorDep,
    message: Annotated[str, Query(max_length=300)] = "",
) -> str:
    async with runtime.database.autocommit.connect() as connection:
        task = await task_summary(connection, task_id)
        if task is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Task not found.")
        events = await timeline(connection, task_id)
        deliveries = await task_deliveries(connection, task_id)
    body = views.task_body(task, events, deliveries, csrf=csrf_token(settings), message=message)
    return views.page(f"Task {task_id}", body)


def _back(task_id: uuid.UUID, message: str = "") -> RedirectResponse:
    query = f"?message={quote(message)}" if message else ""
    return RedirectResponse(f"/console/tasks/{task_id}{query}", status.HTTP_303_SEE_OTHER)


@router.post("/tasks/{task_id}/retry")
async def retry_form(
    task_id: uuid.UUID, runtime: RuntimeDep, operator: OperatorDep, reason: Reason = ""
) -> RedirectResponse:
    try:
        await retry_task(runtime, task_id, actor=operator, reason=reason, owner=None)
    except TaskError as error:
        return _back(task_id, error.detail)
    return _back(task_id)


@router.post("/tasks/{task_id}/cancel")
async def cancel_form(
    task_id: uuid.UUID, runtime: RuntimeDep, operator: OperatorDep, reason: Reason = ""
) -> RedirectResponse:
    try:
        async with runtime.database.sessions() as session, session.begin():
            await cancel_task(session, task_id, actor=operator, reason=reason)
    except TaskError as error:
        return _back(task_id, error.detail)
    runtime.deliveries.wake()
    return _back(task_id)


@router.post("/deliveries/{delivery_id}/redeliver")
async def redeliver_form(
    delivery_id: uuid.UUID, runtime: RuntimeDep, operator: OperatorDep, reason: Reason = ""
) -> RedirectResponse:
    async with runtime.database.sessions() as session, session.begin():
        queued = await redeliver(
            session, delivery_id, detail=action_detail("redeliver", operator, reason)
        )
    if queued is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such delivery.")
    runtime.deliveries.wake()
    return _back(queued[1])
