"""Failures read off the history: grouped for the console, or listed for a bulk retry.

A failure is a `failed` transition in `task_events`. Its stage is the status the task was
in just before (the stage's service name, as in `STAGE_BY_STATUS`); its reason is the
learner-facing comment the pipeline wrote (`<stage> failed: <message>`), without the
attempt count so that one outage makes one group; its kind is the short label the
pipeline logged with it ("HTTP 503", "timeout", "invalid response"). A cancel's detail is
the action's JSON: its reason is the comment it set, its kind the action.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db.status import STAGE_BY_STATUS

_STAGE_CASE = (
    "CASE prior "
    + " ".join(f"WHEN '{status}' THEN '{stage}'" for status, stage in STAGE_BY_STATUS.items())
    + " ELSE coalesce(prior, 'claim') END"
)

# `:current`: only tasks failed now, each with its latest failure.
_FAILURES = f"""
    WITH failure AS (
        SELECT e.task_id, e.seq, e.created_at AS failed_at, t.user_id,
               CASE WHEN left(e.detail, 1) = '{{' THEN (e.detail::jsonb) ->> 'comment'
                    ELSE e.detail END AS comment,
               CASE WHEN left(e.detail, 1) = '{{'
                    THEN coalesce((e.detail::jsonb) ->> 'kind', (e.detail::jsonb) ->> 'action')
               END AS kind,
               (SELECT p.status FROM task_events p
                WHERE p.task_id = e.task_id AND p.kind = 'status' AND p.seq < e.seq
                ORDER BY p.seq DESC LIMIT 1) AS prior
        FROM task_events e JOIN tasks t ON t.id = e.task_id
        WHERE e.kind = 'status' AND e.status = 'failed'
          AND e.created_at >= now() - make_interval(secs => CAST(:window AS float8))
          AND (CAST(:user_id AS uuid) IS NULL OR t.user_id = CAST(:user_id AS uuid))
          AND (NOT CAST(:current AS boolean) OR (
              t.status = 'failed' AND NOT EXISTS (
                  SELECT 1 FROM task_events n
                  WHERE n.task_id = e.task_id AND n.kind = 'status' AND n.seq > e.seq)))
    ),
    labelled AS (
        SELECT failure.*, {_STAGE_CASE} AS stage,
               regexp_replace(coalesce(comment, ''), ' \\(after \\d+ attempts\\)$', '')
                   AS reason
        FROM failure
    )
    SELECT * FROM labelled
    WHERE (CAST(:stage AS text) IS NULL OR stage = CAST(:stage AS text))
      AND (CAST(:reason AS text) IS NULL OR reason = CAST(:reason AS text))
"""

_GROUPS = text(
    f"""
    SELECT stage, reason, coalesce(nullif(kind, ''), 'unknown') AS kind,
           count(*) AS failures, count(DISTINCT task_id) AS tasks,
           min(failed_at) AS first_seen, max(failed_at) AS last_seen
    FROM ({_FAILURES}) matched
    GROUP BY stage, reason, 3
    ORDER BY count(*) DESC, max(failed_at) DESC
    """
)
_TASK_IDS = text(f"SELECT task_id FROM ({_FAILURES}) matched ORDER BY failed_at LIMIT :limit")


@dataclass(frozen=True)
class FailureFilter:
    window_hours: float = 24.0
    stage: str | None = None
    user_id: uuid.UUID | None = None
    reason: str | None = None

    def params(self, *, current: bool) -> dict[str, Any]:
        return {
            "window": self.window_hours * 3600,
            "stage": self.stage,
            "user_id": self.user_id,
            "reason": self.reason,
            "current": current,
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
    rows = await connection.execute(_GROUPS, matching.params(current=False))
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
    rows = await connection.execute(_TASK_IDS, {**matching.params(current=True), "limit": limit})
    return [row.task_id for row in rows]
