"""Per-stage timings and attempts, read off a task's history."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from app.db.models import TaskEvent
from app.db.status import STAGE_BY_STATUS


@dataclass
class StageTiming:
    stage: str
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def stage_timings(events: Sequence[TaskEvent]) -> list[StageTiming]:
    """One entry per stage entered: it ends where the next transition begins."""
    retries = Counter(event.stage for event in events if event.kind == "retry")
    timings: list[StageTiming] = []
    open_stage: StageTiming | None = None
    for event in events:
        if event.kind != "status":
            continue
        if open_stage is not None:
            open_stage.finished_at = event.created_at
            open_stage = None
        stage = STAGE_BY_STATUS.get(event.status)
        if stage is not None:
            open_stage = StageTiming(stage, event.created_at, None, 1 + retries[stage])
            timings.append(open_stage)
    return timings
