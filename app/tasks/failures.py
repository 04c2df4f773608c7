"""Failures read off the history: grouped for the console, or listed for a bulk retry.

A failure is a `failed` transition in `task_events`. Its stage is the status the task was
in just before (the stage's service name, as in `STAGE_BY_STATUS`); its reason is the
learner-facing comment the pipeline wrote (`<stage> failed: <message>`), without the
attempt count so that one outage makes one group; its kind is the short label the
pipeline logged with it ("HTTP 503", "timeout", "invalid response"). A cancel's detail is
the action's JSON: its reason is the comment it set, its kind the action. The statements
are in app/db/sql/tasks.sql.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.queries import queries
from app.db.status import STAGE_BY_STATUS

# The statements label a failure with the stage of the status the task was in before.
_STAGE_BY_STATUS_JSON = json.dumps(STAGE_BY_STATUS)


@dataclass(frozen=True)
class FailureFilter:
    window_hours: float = 24.0
    stage: str | None = None
    user_id: uuid.UUID | None = None
    reason: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "window": self.window_hours * 3600,
            "stage": self.stage,
            "user_id": self.user_id,
            "reason": self.reason,
            "stage_by_status": _STAGE_BY_STATUS_JSON,
        }


@dataclass(frozen=True)
class FailureGroup:
    stage: str
    reason: str
    kind: str
    failures: int
    tasks: int
    first_seen: datetime
    last_seen: datetime


async def failure_groups(
    connection: AsyncConnection | AsyncSession, matching: FailureFilter
) -> list[FailureGroup]:
    """Every failure in the window, grouped by stage and reason, most frequent first."""
    rows = await connection.execute(queries("tasks").failure_groups.clause, matching.params())
    return [
        FailureGroup(
            stage=row.stage,
            reason=row.reason,
            kind=row.kind,
            failures=row.failures,
            tasks=row.tasks,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
        )
        for row in rows
    ]


async def failed_task_ids(
    connection: AsyncConnection | AsyncSession, matching: FailureFilter, *, limit: int
) -> list[uuid.UUID]:
    """Tasks failed now whose latest failure matches, oldest failure first."""
    rows = await connection.execute(
        queries("tasks").failed_task_ids.clause, {**matching.params(), "limit": limit}
    )
    return [row.task_id for row in rows]
