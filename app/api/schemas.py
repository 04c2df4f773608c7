"""Request and response bodies of both API families (pydantic v2, with OpenAPI examples)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.db.status import TaskStatus

_USER_ID = "3f0b8c1e-6a0e-4f43-9a57-5b8f9f3f4a10"
_TASK_ID = "0b6c5d52-57a4-4b4b-8a8e-1f0e6e7e2c11"
_TEXT_ID = "7b1e2f60-2d2c-4c1f-9a51-3d6f0c2a9b01"
_MISTAKE_EXAMPLE: dict[str, Any] = {
    "reference": {"position": 3, "value": "ɪ"},
    "actual": {"position": 3, "value": "i"},
    "type": "Replacement",
}


class ErrorResponse(BaseModel):
    """Every 4xx/5xx this service produces itself (422s use FastAPI's list of field errors)."""

    detail: str = Field(examples=["Task not found."])


UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "X-User-Id sent more than once."},
    401: {
        "model": ErrorResponse,
        "description": "No caller: X-User-Id missing, or no valid token when tokens are verified.",
    },
    403: {
        "model": ErrorResponse,
        "description": "X-User-Id from outside MANAGER_TRUSTED_CLIENTS (without tokens).",
    },
}


# ----------------------------------------------------------------- legacy family


class LegacyUserRequest(BaseModel):
    """The gateway's body on the legacy read routes."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": _USER_ID}]})

    user_id: uuid.UUID


class LegacyCreatedResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"id": _TASK_ID}]})

    id: uuid.UUID


class LegacyTaskSummary(BaseModel):
    """One row of the legacy list (`POST /`)."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": _TASK_ID,
                    "status": "completed",
                    "title": "Please call Stella",
                    "accuracy": 87.5,
                    "created_at": "2026-11-27T10:15:00.123456+00:00",
                }
            ]
        },
    )

    id: uuid.UUID
    status: TaskStatus
    title: str
    accuracy: float | None
    created_at: datetime


class LegacyTaskDetail(BaseModel):
    """The legacy detail (`POST /{uuid}`), unchanged from the replaced service."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": _TASK_ID,
                    "title": "Please call Stella",
                    "text_id": _TEXT_ID,
                    "status": "completed",
                    "result": "p l i z k ɔ l s t ɛ l ə",
                    "accuracy": 87.5,
                    "mistakes": [_MISTAKE_EXAMPLE],
                    "comment": None,
                }
            ]
        },
    )

    id: uuid.UUID
    title: str
    text_id: uuid.UUID
    status: TaskStatus
    result: str | None
    accuracy: float | None
    mistakes: list[Any] | None
    comment: str | None


# --------------------------------------------------------------- resource family


class StageReport(BaseModel):
    """How one pipeline stage went: when it ran and how many attempts it took."""

    stage: str = Field(examples=["transcribing"])
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    attempts: int = Field(examples=[1])


class TaskSummary(BaseModel):
    """A task in a list: everything but the large fields."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    text_id: uuid.UUID
    title: str
    status: TaskStatus
    accuracy: float | None
    comment: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class TaskResource(TaskSummary):
    """A task in full, with the pipeline's per-stage report."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": _TASK_ID,
                    "user_id": _USER_ID,
                    "text_id": _TEXT_ID,
                    "title": "Please call Stella",
                    "status": "completed",
                    "accuracy": 87.5,
                    "comment": None,
                    "created_at": "2026-11-27T10:15:00.123456+00:00",
                    "updated_at": "2026-11-27T10:15:09.5+00:00",
                    "completed_at": "2026-11-27T10:15:09.5+00:00",
                    "result": "p l i z k ɔ l s t ɛ l ə",
                    "mistakes": [_MISTAKE_EXAMPLE],
                    "callback_url": "https://lms.example.org/hooks/ilps",
                    "stages": [
                        {
                            "stage": "preprocessing",
                            "started_at": "2026-11-27T10:15:00.2+00:00",
                            "finished_at": "2026-11-27T10:15:00.4+00:00",
                            "duration_seconds": 0.2,
                            "attempts": 1,
                        }
                    ],
                }
            ]
        },
    )

    result: str | None
    mistakes: list[Any] | None
    callback_url: str | None = Field(
        default=None, description="Where the completion webhook goes (docs/webhooks.md)."
    )
    stages: list[StageReport] = Field(default_factory=list)


class WebhookAttemptReport(BaseModel):
    """One try of a webhook delivery."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int = Field(examples=[1])
    started_at: datetime
    duration_seconds: float
    status_code: int | None = Field(examples=[503], description="None: no HTTP answer.")
    outcome: str = Field(
        examples=["server_error"],
        description="delivered, gone (410), redirect, rejected (4xx), server_error, timeout, "
        "connection_error, refused (the address policy) or dropped (attempt 0: the user's "
        "pending deliveries were at their cap).",
    )
    detail: str | None


class WebhookDeliveryReport(BaseModel):
    """A completion webhook of the task: its id (`webhook-id`), state and attempts."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    event_type: str = Field(examples=["task.completed"])
    callback_url: str
    state: str = Field(
        examples=["delivered"],
        description="pending, delivered, disabled, expired, refused or dropped.",
    )
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    attempts: list[WebhookAttemptReport]


class TaskPageResponse(BaseModel):
    """One page of `GET /tasks`; pass `next_cursor` as `cursor` for the next page."""

    items: list[TaskSummary]
    next_cursor: str | None = Field(
        examples=["MjAyNi0xMS0yN1QxMDoxNTowMC4xMjM0NTYrMDA6MDB8MGI2YzVk"]
    )


# ------------------------------------------------------------------------ health


class SystemInfo(BaseModel):
    hostname: str
    os: str
    os_version: str


class HealthResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "healthy",
                    "system": {"hostname": "task-manager-1", "os": "Linux", "os_version": "6.1.0"},
                    "timestamp": "2026-11-27T10:15:00.123456+00:00",
                }
            ]
        }
    )

    status: str
    system: SystemInfo
    timestamp: datetime
