"""ORM models: a task, its audio (upload and stage artefacts) and its status history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.status import TERMINAL_SQL, TaskStatus

DEFAULT_TITLE = "Упражнение"
TITLE_MAX_LENGTH = 50
CALLBACK_URL_MAX_LENGTH = 2048
METADATA_MAX_LENGTH = 255  # the upload's filename and content type, as the client sent them
_STATUS_VALUES = ", ".join(f"'{status.value}'" for status in TaskStatus)
# A partial index's predicate must be a literal: spelled out from the one list.
_TERMINAL_SQL = f"status NOT IN {TERMINAL_SQL}"


class Task(Base):
    """One assessment request. The row is also the pipeline's job (lease + run_after)."""

    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    text_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    title: Mapped[str] = mapped_column(
        String(TITLE_MAX_LENGTH), server_default=text(f"'{DEFAULT_TITLE}'")
    )
    status: Mapped[str] = mapped_column(String(16), server_default=TaskStatus.CREATED.value)
    result: Mapped[str | None] = mapped_column(Text)
    accuracy: Mapped[float | None] = mapped_column(Float)
    mistakes: Mapped[list[Any] | None] = mapped_column(JSONB)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # A retried upload carries the same key: the first task is returned, not duplicated.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))

    # Pipeline bookkeeping: who works on the task until when, and not before when.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the lease was last taken or renewed under its owner's liveness lock.
    leased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The server (cluster, timeline, start) `leased_at` was stamped on: liveness locks are
    # only meaningful on that same server (see app/pipeline/queue.py).
    leased_on: Mapped[str | None] = mapped_column(String(96))
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    stage_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # Counts every claim, so a task that keeps killing its worker is failed, not retried forever.
    claim_count: Mapped[int] = mapped_column(Integer, server_default="0")
    last_event_seq: Mapped[int] = mapped_column(Integer, server_default="0")
    # Where a completion webhook goes (app/webhooks); NULL: nobody is told.
    callback_url: Mapped[str | None] = mapped_column(String(CALLBACK_URL_MAX_LENGTH))

    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status_known"),
        CheckConstraint("accuracy >= 0 AND accuracy <= 100", name="accuracy_range"),
        CheckConstraint("char_length(title) > 0", name="title_not_empty"),
        # "This user's tasks, newest first" with a stable tie-break for cursor pagination.
        Index("ix_tasks_user_created", "user_id", text("created_at DESC"), text("id DESC")),
        Index(
            "uq_tasks_user_idempotency_key",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # Tasks in flight per user, for the fairness cap of the claim.
        Index("ix_tasks_leased_user", "user_id", postgresql_where=text("lease_owner IS NOT NULL")),
        # A user's unfinished tasks, oldest first: the claim's pick within a user.
        Index(
            "ix_tasks_user_unfinished",
            "user_id",
            "created_at",
            "id",
            postgresql_where=text(_TERMINAL_SQL),
        ),
        # The workers' queue: only unfinished tasks, oldest first.
        Index(
            "ix_tasks_unfinished",
            "created_at",
            "id",
            postgresql_where=text(_TERMINAL_SQL),
        ),
    )


class QueueUser(Base):
    """A user and the creation time of their oldest unfinished task (NULL: none).

    Kept by triggers on `tasks` (migration 0002), never written by the application: the
    claim walks users in this order instead of walking every waiting task.
    """

    __tablename__ = "queue_users"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    oldest_unfinished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_queue_users_oldest",
            "oldest_unfinished_at",
            "user_id",
            postgresql_where=text("oldest_unfinished_at IS NOT NULL"),
        ),
    )


class TaskAudio(Base):
    """Audio belonging to a task: the upload, and the preprocessed WAV once it exists."""

    __tablename__ = "task_audio"

    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    filename: Mapped[str | None] = mapped_column(String(METADATA_MAX_LENGTH))
    content_type: Mapped[str | None] = mapped_column(String(METADATA_MAX_LENGTH))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("kind IN ('upload', 'preprocessed')", name="kind_known"),
        CheckConstraint("size > 0", name="not_empty"),
    )


class TaskEvent(Base):
    """Append-only history: every status transition and every retry, numbered per task."""

    __tablename__ = "task_events"

    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(16))
    attempt: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("kind IN ('status', 'retry')", name="kind_known"),)


DELIVERY_STATES = ("pending", "delivered", "disabled", "expired", "refused", "dropped")


class WebhookDelivery(Base):
    """One completion webhook to send: the outbox row, and the job of the delivery workers.

    Written by a trigger on `tasks` (migrations 0003, 0004) in the transaction that makes
    the task terminal, never by the pipeline's code; `dropped` when the user already had
    the cap of pending deliveries (`webhook_limits`), and then `finished_at` is set once
    a sending process has logged and counted it. `id` is the `webhook-id` of every attempt;
    `payload` is built once, at the first claim, so every attempt sends the same bytes.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    # The task's user, for the cap on one user's pending deliveries (migration 0004).
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(32))
    callback_url: Mapped[str] = mapped_column(String(CALLBACK_URL_MAX_LENGTH))
    # The callback's host[:port], lower case: the key of the per-receiver limits.
    receiver_host: Mapped[str] = mapped_column(String(CALLBACK_URL_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{state}'" for state in DELIVERY_STATES) + ")",
            name="state_known",
        ),
        Index("ix_webhook_deliveries_task_id", "task_id"),
        # The delivery workers' queue: only what is still to be sent, soonest first.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
        # The claim's walk over receivers: each host's due deliveries, soonest first.
        Index(
            "ix_webhook_deliveries_due_by_host",
            "receiver_host",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
        # The per-user cap counts a user's pending deliveries, up to the cap.
        Index(
            "ix_webhook_deliveries_pending_by_user",
            "user_id",
            postgresql_where=text("state = 'pending'"),
        ),
        # Deliveries dropped by the cap that no process has logged and counted yet.
        Index(
            "ix_webhook_deliveries_dropped_unreported",
            "created_at",
            postgresql_where=text("state = 'dropped' AND finished_at IS NULL"),
        ),
    )


class WebhookLimits(Base):
    """One row: the limits the outbox trigger applies, written by each sending process at
    start from its settings (MANAGER_WEBHOOK_MAX_PENDING_PER_USER; NULL: no cap)."""

    __tablename__ = "webhook_limits"

    id: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    max_pending_per_user: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("id", name="one_row"),)


class WebhookAttempt(Base):
    """One try of a delivery and how it ended (shown by GET /tasks/{id}/deliveries)."""

    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        primary_key=True,
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_seconds: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(24))
    detail: Mapped[str | None] = mapped_column(Text)
