"""The console's reads: the overview's figures and a task's timeline."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.db.queries import queries
from app.db.status import STAGE_BY_STATUS
from app.pipeline.queue import waiting_summary
from app.webhooks.reports import pending_summary

CHART_MINUTES = 60
DURATION_WINDOW_HOURS = 24


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
    console = queries("console")
    by_status = await connection.execute(console.unfinished_by_status.clause)
    unfinished = {row.status: row.tasks for row in by_status}
    # The queue's statements run on the asyncpg connection under this one.
    driver = (await connection.get_raw_connection()).driver_connection
    waiting, oldest = await waiting_summary(driver)
    completed = [0] * CHART_MINUTES
    failed = [0] * CHART_MINUTES
    endings = await connection.execute(
        console.endings_per_minute.clause, {"minutes": CHART_MINUTES}
    )
    for row in endings:
        slot = CHART_MINUTES - 1 - min(row.minutes_ago, CHART_MINUTES - 1)
        (completed if row.status == "completed" else failed)[slot] += row.tasks
    stage_runs = await connection.execute(
        console.stage_durations.clause,
        {"hours": DURATION_WINDOW_HOURS, "stage_statuses": list(STAGE_BY_STATUS)},
    )
    durations = [
        StageDuration(
            stage=STAGE_BY_STATUS[row.status],
            runs=row.runs,
            p50_seconds=float(row.p50),
            p95_seconds=float(row.p95),
        )
        for row in stage_runs
    ]
    backlog, oldest_webhook = await pending_summary(connection)
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
        await connection.execute(queries("console").task_summary.clause, {"id": task_id})
    ).one_or_none()
    if row is None:
        return None
    return TaskSummary(**row._asdict())


async def timeline(connection: AsyncConnection, task_id: uuid.UUID) -> list[TimelineEntry]:
    rows = await connection.execute(queries("console").timeline.clause, {"id": task_id})
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
        queries("console").user_tasks.clause, {"user_id": user_id, "limit": limit}
    )
    return [TaskSummary(**row._asdict()) for row in rows]
