"""The console's actions as an API, for scripts; and `POST /tasks/{id}/retry` for owners too."""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from app.api.deps import (
    AuthorizationHeader,
    ForwardedUserId,
    RuntimeDep,
    SettingsDep,
    caller_user_id,
)
from app.api.schemas import UNAUTHENTICATED, ErrorResponse
from app.console.auth import FORBIDDEN, MaybeOperatorDep, OperatorDep
from app.console.queries import overview
from app.console.routing import OperatorRoute, OwnerOrOperatorRoute
from app.runtime import Runtime
from app.tasks.failures import FailureFilter
from app.tasks.retry import action_detail, cancel_task, retry_failed_task, retry_matching
from app.webhooks.redeliver import redeliver

log = logging.getLogger(__name__)

BULK_LIMIT = 1000
REASON_MAX = 500

OPERATORS_ONLY: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": FORBIDDEN},
    404: {"model": ErrorResponse, "description": "The console is off (no operator token)."},
}
TASK_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such task (for this user)."},
    409: {"model": ErrorResponse, "description": "Not in a state this action applies to."},
}

owner_router = APIRouter(prefix="/tasks", tags=["tasks"], route_class=OwnerOrOperatorRoute)
router = APIRouter(
    prefix="/console/api", tags=["console"], responses=OPERATORS_ONLY, route_class=OperatorRoute
)


class ActionRequest(BaseModel):
    reason: str = Field(default="", max_length=REASON_MAX, description="Kept in the history.")


class RetryResponse(BaseModel):
    id: uuid.UUID
    status: str = Field(description="The stage's status the task waits in for a worker.")
    stage: Literal["preprocessing", "transcribing", "feedback"]


class BulkRetryRequest(BaseModel):
    window_hours: float = Field(default=24.0, gt=0, le=24 * 90)
    stage: Literal["preprocessing", "transcribing", "feedback", "claim"] | None = None
    user_id: uuid.UUID | None = None
    reason_filter: str | None = Field(
        default=None, description="Only failures with exactly this reason (as grouped)."
    )
    dry_run: bool = Field(default=True, description="Count only; retry nothing.")
    reason: str = Field(default="", max_length=REASON_MAX, description="Kept in the history.")


class BulkRetryResponse(BaseModel):
    dry_run: bool
    matched: int = Field(description=f"Failed tasks matching (at most {BULK_LIMIT}).")
    retried: int = Field(description="Retried, or that would be on a dry run.")
    not_retryable: dict[uuid.UUID, str] = Field(description="Matching tasks left, and why.")


class CancelResponse(BaseModel):
    id: uuid.UUID
    status: Literal["failed"] = "failed"


class RedeliverResponse(BaseModel):
    id: uuid.UUID = Field(description="The new delivery (a new `webhook-id`).")
    task_id: uuid.UUID


def _wake_workers(runtime: Runtime) -> None:
    # Workers of this process look now; other processes within MANAGER_WORKER_POLL_SECONDS.
    runtime.workers.wakeup.notify()


async def retry_task(
    runtime: Runtime, task_id: uuid.UUID, *, actor: str, reason: str, owner: uuid.UUID | None
) -> RetryResponse:
    async with runtime.database.sessions() as session, session.begin():
        retried = await retry_failed_task(session, task_id, actor=actor, reason=reason, owner=owner)
    _wake_workers(runtime)
    log.info("task %s retried from %s by %s: %s", task_id, retried.stage, actor, reason)
    return RetryResponse(id=task_id, status=retried.status, stage=retried.stage)


@owner_router.post(
    "/{task_id}/retry",
    response_model=RetryResponse,
    summary="Retry a failed task from the stage that failed",
    description="For the task's owner (as the other `/tasks` routes identify them) or an "
    "operator (`Authorization: Bearer <operator token>` from a trusted client). 409 when the "
    "task is not failed, or when its audio is no longer stored.",
    responses={**UNAUTHENTICATED, **TASK_ERRORS},
)
async def retry_one(
    request: Request,
    task_id: uuid.UUID,
    runtime: RuntimeDep,
    settings: SettingsDep,
    operator: MaybeOperatorDep,
    body: ActionRequest | None = None,
    x_user_id: ForwardedUserId = None,
    authorization: AuthorizationHeader = None,
) -> RetryResponse:
    reason = body.reason if body else ""
    if operator is not None:
        return await retry_task(runtime, task_id, actor=operator, reason=reason, owner=None)
    owner = await caller_user_id(request, settings, x_user_id, authorization)
    return await retry_task(runtime, task_id, actor="owner", reason=reason, owner=owner)


@router.post("/retries", response_model=BulkRetryResponse, summary="Retry failures in bulk")
async def bulk_retry(
    body: BulkRetryRequest, runtime: RuntimeDep, operator: OperatorDep
) -> BulkRetryResponse:
    """The failed tasks whose latest failure matches the filter; a dry run (the default)
    only counts them."""
    matching = FailureFilter(
        window_hours=body.window_hours,
        stage=body.stage,
        user_id=body.user_id,
        reason=body.reason_filter,
    )
    async with runtime.database.sessions() as session, session.begin():
        outcome = await retry_matching(
            session,
            matching,
            actor=operator,
            reason=body.reason,
            dry_run=body.dry_run,
            limit=BULK_LIMIT,
        )
    if not body.dry_run and outcome.retried:
        _wake_workers(runtime)
        log.info("%d tasks retried in bulk by %s: %s", len(outcome.retried), operator, body.reason)
    return BulkRetryResponse(
        dry_run=body.dry_run,
        matched=outcome.matched,
        retried=len(outcome.retried),
        not_retryable=outcome.not_retryable,
    )


@router.post(
    "/tasks/{task_id}/retry",
    response_model=RetryResponse,
    summary="Retry a failed task (operator)",
    responses=TASK_ERRORS,
)
async def operator_retry(
    task_id: uuid.UUID, runtime: RuntimeDep, operator: OperatorDep, body: ActionRequest
) -> RetryResponse:
    return await retry_task(runtime, task_id, actor=operator, reason=body.reason, owner=None)


@router.post(
    "/tasks/{task_id}/cancel",
    response_model=CancelResponse,
    summary="Cancel an unfinished task",
    description="Ends it as failed; a worker still running one of its stages writes nothing.",
    responses=TASK_ERRORS,
)
async def cancel(
    task_id: uuid.UUID, runtime: RuntimeDep, operator: OperatorDep, body: ActionRequest
) -> CancelResponse:
    async with runtime.database.sessions() as session, session.begin():
        await cancel_task(session, task_id, actor=operator, reason=body.reason)
    runtime.deliveries.wake()
    log.info("task %s cancelled by %s: %s", task_id, operator, body.reason)
    return CancelResponse(id=task_id)


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    response_model=RedeliverResponse,
    summary="Send a webhook again",
    responses={404: {"model": ErrorResponse, "description": "No such delivery."}},
)
async def redeliver_webhook(
    delivery_id: uuid.UUID, runtime: RuntimeDep, operator: OperatorDep, body: ActionRequest
) -> RedeliverResponse:
    async with runtime.database.sessions() as session, session.begin():
        queued = await redeliver(
            session, delivery_id, detail=action_detail("redeliver", operator, body.reason)
        )
    if queued is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such delivery.")
    runtime.deliveries.wake()
    log.info(
        "delivery %s of task %s redelivered as %s by %s: %s",
        delivery_id,
        queued[1],
        queued[0],
        operator,
        body.reason,
    )
    return RedeliverResponse(id=queued[0], task_id=queued[1])


@router.get("/overview", summary="The overview's figures")
async def overview_json(runtime: RuntimeDep, _operator: OperatorDep, request: Request) -> Any:
    async with runtime.database.autocommit.connect() as connection:
        return (await overview(connection)).as_json()
