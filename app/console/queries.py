"""The console's reads: the overview's figures and a task's timeline."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.status import STAGE_BY_STATUS, TERMINAL_SQL
from app.pipeline.queue import waiting_summary
from app.webhooks import outbox

CHART_MINUTES = 60
DURATION_WINDOW_HOURS = 24

_UNFINISHED = text(
    f"SELECT status, count(*) AS tasks FROM tasks WHERE status NOT IN {TERMINAL_SQL} "
    "GROUP BY status ORDER BY status"
)
# Endings per minute over the chart's hour, from the history (a retried task that fails
# again counts each time).
_PER_MINUTE = text(
    f"""
    SELECT floor(EXTRACT(EPOCH FROM now() - created_at) / 60)::int AS minutes_ago,
           status, count(*) AS tasks
    FROM task_events
    WHERE kind = 'status' AND status IN {TERMINAL_SQL}
      AND created_at >= now() - make_interval(mins => {CHART_MINUTES})
    GROUP BY 1, 2
    """
)
# A stage's duration: from entering its status to the task's next transition.
_DURATIONS = text(
    f"""
    WITH moves AS (
        SELECT status, created_at,
               lead(created_at) OVER (PARTITION BY task_id ORDER BY seq) AS left_at
        FROM task_events
        WHERE kind = 'status'
          AND created_at >= now() - make_interval(hours => {DURATION_WINDOW_HOURS})
    )
    SELECT status, count(*) AS runs,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY EXTRACT(EPOCH FROM left_at - created_at)) AS p50,
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY EXTRACT(EPOCH FROM left_at - created_at)) AS p95
    FROM moves
    WHERE left_at IS NOT NULL AND status IN ({", ".join(f"'{s}'" for s in STAGE_BY_STATUS)})
    GROUP BY status
    """
)


@dataclass
class StageDuration:
    stage: str
    runs: int
    p50_seconds: float
    p95_seconds: float


@dataclass
class Overview:
    unfinished: dict[str, int]  # by status
    waiting: int  # unfinished and held by no worker
    oldest_waiting_seconds: float
    completed_per_minute: list[int]  # oldest minute first, the current one last
    failed_per_minute: list[int]
    durations: list[StageDuration]
    webhook_backlog: int
    oldest_webhook_seconds: float
    stages: dict[str, str] = field(default_factory=lambda: dict(STAGE_BY_STATUS))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def overview(connection: AsyncConnection) -> Overview:
    unfinished = {row.status: row.tasks for row in await connection.execute(_UNFINISHED)}
    # The queue's statements run on the asyncpg connection under this one.
    driver = (await connection.get_raw_connection()).driver_connection
    waiting, oldest = await waiting_summary(driver)
    completed = [0] * CHART_MINUTES
    failed = [0] * CHART_MINUTES
    for row in await connection.execute(_PER_MINUTE):
        slot = CHART_MINUTES - 1 - min(row.minutes_ago, CHART_MINUTES - 1)
        (completed if row.status == "completed" else failed)[slot] += row.tasks
    durations = [
        StageDuration(
            stage=STAGE_BY_STATUS[row.status],
            runs=row.runs,
            p50_seconds=float(row.p50),
            p95_seconds=float(row.p95),
        )
        for row in await connection.execute(_DURATIONS)
    ]
    backlog, oldest_webhook = await outbox.pending_summary(connection)
    return Overview(
        unfinished=unfinished,
        waiting=waiting,
        oldest_waiting_seconds=oldest,
        completed_per_minute=completed,
        failed_per_minute=failed,
        durations=durations,
        webhook_backlog=backlog,
        oldest_webhook_seconds=oldest_webhook,
    )


@dataclass
class TimelineEntry:
    seq: int
    kind: str
    status: str
    stage: str | None
    attempt: int | None
    detail: str | None
    at: datetime
    seconds_until_next: float | None


@dataclass
class TaskSummary:
    id: uuid.UUID
    user_id: uuid.UUID
    title: str
    status: str
    comment: str | None
    created_at: datetime
    updated_at: datetime
    callback_url: str | None
    audio: list[str]


async def task_summary(connection: AsyncConnection, task_id: uuid.UUID) -> TaskSummary | None:
    row = (
        await connection.execute(
            text(
                "SELECT t.id, t.user_id, t.title, t.status, t.comment, t.created_at, "
                "t.updated_at, t.callback_url, array(SELECT a.kind FROM task_audio a "
                "WHERE a.task_id = t.id ORDER BY a.kind) AS audio FROM tasks t WHERE t.id = :id"
            ),
            {"id": task_id},
        )
    ).one_or_none()
    if row is None:
        return None
    return TaskSummary(**row._asdict())


async def timeline(connection: AsyncConnection, task_id: uuid.UUID) -> list[TimelineEntry]:
    rows = await connection.execute(
        text(
            """
            SELECT seq, kind, status, stage, attempt, detail, created_at AS at,
                   EXTRACT(EPOCH FROM lead(created_at) OVER (ORDER BY seq) - created_at)
                       AS seconds_until_next
            FROM task_events WHERE task_id = :id ORDER BY seq
            """
        ),
        {"id": task_id},
    )
    return [
        TimelineEntry(
            seq=row.seq,
            kind=row.kind,
            status=row.status,
            stage=row.stage,
            attempt=row.attempt,
            detail=row.detail,
            at=row.at,
            seconds_until_next=None
            if row.seconds_until_next is None
            else float(row.seconds_until_next),
        )
        for row in rows
    ]


async def user_tasks(
    connection: AsyncConnection, user_id: uuid.UUID, *, limit: int = 50
) -> list[TaskSummary]:
    rows = await connection.execute(
        text(
            "SELECT t.id, t.user_id, t.title, t.status, t.comment, t.created_at, t.updated_at, "
            "t.callback_url, ARRAY[]::text[] AS audio FROM tasks t WHERE t.user_id = :user_id "
            "ORDER BY t.created_at DESC, t.id DESC LIMIT :limit"
        ),
        {"user_id": user_id, "limit": limit},
    )
    return [TaskSummary(**row._asdict()) for row in rows]
