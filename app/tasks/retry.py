"""Operator and owner actions on a task: retry a failed one, cancel an unfinished one.

Each is one UPDATE of the task with its history row (`app/db/sql/task_actions.sql`), whose
`detail` is a JSON object naming the action, who took it and why, so the history says who
did what.

A retry puts the task back where the pipeline's claim would resume it: the claim picks
the stage from what is stored (no preprocessed audio: preprocessing; no transcription:
transcribing; else feedback), so the retry checks that the input of that stage is still
stored. Audio retention deletes all of a finished task's audio at once; a task past it
cannot be retried (409).

A cancel ends the task as failed and clears its lease. Every write of a worker after its
claim is fenced by `lease_owner`, so a worker still running a stage of the task changes
nothing when it finishes and moves on.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.queries import queries
from app.db.status import STAGE_BY_STATUS, TaskStatus
from app.tasks.errors import TaskError, TaskNotFound
from app.tasks.failures import FailureFilter, failed_task_ids

CANCELLED_COMMENT = "cancelled by an operator"

_ACTIONS = queries("task_actions")


class TaskNotRetryable(TaskError):
    status_code = 409
    detail = "The task cannot be retried."


class TaskNotCancellable(TaskError):
    status_code = 409
    detail = "The task has already finished."


@dataclass(frozen=True)
class Retried:
    task_id: uuid.UUID
    status: str  # the stage's status the task waits in until a worker claims it
    stage: str


def action_detail(action: str, actor: str, reason: str, **extra: str) -> str:
    """The history row's `detail` of an action: who, what and why, as JSON text."""
    return json.dumps({"action": action, "by": actor, "reason": reason, **extra})


def entry_status(*, has_upload: bool, has_preprocessed: bool, transcribed: bool) -> str | None:
    """Where the claim resumes a task with this much stored; None: its input is gone."""
    if has_preprocessed:
        return TaskStatus.EVALUATING.value if transcribed else TaskStatus.TRANSCRIBING.value
    if has_upload:
        return TaskStatus.PREPROCESSING.value
    return None


async def retry_failed_task(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    actor: str,
    reason: str,
    owner: uuid.UUID | None = None,
    dry_run: bool = False,
) -> Retried:
    """Put a failed task back into the queue at the stage that failed.

    `owner`: only that user's task (another's answers as missing); None: any task.
    `dry_run`: check only, change nothing.
    """
    state = (
        await session.execute(_ACTIONS.retry_state.clause, {"task_id": task_id, "owner": owner})
    ).one_or_none()
    if state is None:
        raise TaskNotFound
    if state.status != TaskStatus.FAILED.value:
        raise TaskNotRetryable(f"Only a failed task can be retried; this one is {state.status}.")
    entry = entry_status(
        has_upload=state.has_upload,
        has_preprocessed=state.has_preprocessed,
        transcribed=state.transcribed,
    )
    if entry is None:
        raise TaskNotRetryable(
            "The task's audio is no longer stored (audio retention deleted it), "
            "so no stage can run again."
        )
    if dry_run:
        return Retried(task_id=task_id, status=entry, stage=STAGE_BY_STATUS[entry])
    await session.execute(
        _ACTIONS.retry_failed_task.clause,
        {
            "task_id": task_id,
            "entry_status": entry,
            "action_detail": action_detail("retry", actor, reason),
        },
    )
    return Retried(task_id=task_id, status=entry, stage=STAGE_BY_STATUS[entry])


@dataclass(frozen=True)
class BulkRetry:
    matched: int  # failed tasks matching the filter (at most the limit)
    retried: list[uuid.UUID]  # retried, or that would be on a dry run
    not_retryable: dict[uuid.UUID, str]  # and why not (their audio is gone)


async def retry_matching(
    session: AsyncSession,
    matching: FailureFilter,
    *,
    actor: str,
    reason: str,
    dry_run: bool,
    limit: int,
) -> BulkRetry:
    """Retry (or count, on a dry run) the failed tasks whose latest failure matches."""
    task_ids = await failed_task_ids(session, matching, limit=limit)
    retried: list[uuid.UUID] = []
    refused: dict[uuid.UUID, str] = {}
    for task_id in task_ids:
        try:
            await retry_failed_task(session, task_id, actor=actor, reason=reason, dry_run=dry_run)
        except TaskError as error:  # gone or no longer failed meanwhile, or audio purged
            refused[task_id] = error.detail
        else:
            retried.append(task_id)
    return BulkRetry(matched=len(task_ids), retried=retried, not_retryable=refused)


async def cancel_task(
    session: AsyncSession, task_id: uuid.UUID, *, actor: str, reason: str
) -> None:
    """End an unfinished task as failed; a worker still holding it writes nothing more."""
    seq = await session.scalar(
        _ACTIONS.cancel_task.clause,
        {
            "task_id": task_id,
            "comment": CANCELLED_COMMENT,
            "action_detail": action_detail("cancel", actor, reason, comment=CANCELLED_COMMENT),
        },
    )
    if seq is not None:
        return
    exists = await session.scalar(_ACTIONS.task_exists.clause, {"task_id": task_id})
    if exists is None:
        raise TaskNotFound
    raise TaskNotCancellable
