"""What the hub hands its followers: a task's status transitions, as streams show them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from app.db.status import is_terminal


@dataclass(frozen=True)
class TaskUpdate:
    """A status transition as followers see it."""

    task_id: uuid.UUID
    seq: int
    status: str
    created_at: datetime
    accuracy: float | None
    comment: str | None
    # Its SSE frames by format, encoded by the first stream that writes it: the hub hands
    # one object to every follower of the task, so each format is encoded once per event.
    frames: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)


@dataclass(frozen=True)
class TaskState:
    """A task's owner and current position, read when a follower arrives."""

    user_id: uuid.UUID
    current: TaskUpdate
