"""create tasks, task audio and task events

Revision ID: 0001
Revises:
Create Date: 2026-11-27 20:24:17.529391
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here on purpose: a later status needs its own migration of this constraint.
STATUSES = ", ".join(
    f"'{status}'"
    for status in (
        "created",
        "started",
        "preprocessing",
        "transcribing",
        "evaluating",
        "completed",
        "failed",
    )
)


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("text_id", sa.UUID(), nullable=False),
        sa.Column(
            "title", sa.String(length=50), server_default=sa.text("'Упражнение'"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), server_default="created", nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("mistakes", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "run_after", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("stage_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claim_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_event_seq", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint(
            f"status IN ({STATUSES})",
            name=op.f("ck_tasks_status_known"),
        ),
        sa.CheckConstraint(
            "accuracy >= 0 AND accuracy <= 100", name=op.f("ck_tasks_accuracy_range")
        ),
        sa.CheckConstraint("char_length(title) > 0", name=op.f("ck_tasks_title_not_empty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index(
        "ix_tasks_leased_user",
        "tasks",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("lease_owner IS NOT NULL"),
    )
    op.create_index(
        "ix_tasks_unfinished",
        "tasks",
        ["created_at", "id"],
        unique=False,
        postgresql_where=sa.text("status NOT IN ('completed', 'failed')"),
    )
    op.create_index(
        "ix_tasks_user_created",
        "tasks",
        ["user_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_index(
        "uq_tasks_user_idempotency_key",
        "tasks",
        ["user_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "task_audio",
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('upload', 'preprocessed')", name=op.f("ck_task_audio_kind_known")
        ),
        sa.CheckConstraint("size > 0", name=op.f("ck_task_audio_not_empty")),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_audio_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "kind", name=op.f("pk_task_audio")),
    )
    op.create_table(
        "task_events",
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('status', 'retry')", name=op.f("ck_task_events_kind_known")),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_events_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "seq", name=op.f("pk_task_events")),
    )


def downgrade() -> None:
    op.drop_table("task_events")
    op.drop_table("task_audio")
    op.drop_index(
        "uq_tasks_user_idempotency_key",
        table_name="tasks",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index("ix_tasks_user_created", table_name="tasks")
    op.drop_index("ix_tasks_leased_user", table_name="tasks")
    op.drop_index(
        "ix_tasks_unfinished",
        table_name="tasks",
        postgresql_where=sa.text("status NOT IN ('completed', 'failed')"),
    )
    op.drop_table("tasks")
