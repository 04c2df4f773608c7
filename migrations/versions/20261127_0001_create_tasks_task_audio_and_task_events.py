"""create tasks, task audio and task events (taking over the original's tasks)

The original task manager's table (revision c7e1b585e358) is renamed aside, this
service's tables are created exactly as this revision has always created them (databases
built by it before it had a parent exist, and must match), and every original task is
copied over with a history the original never kept. A task the original left unfinished
cannot be resumed, because the original never stored its audio: it becomes `failed`,
with a comment telling the learner to record it again.

The downgrade does the reverse, for handing the database back to the original: its
schema is recreated, every task is copied back with its status in the original's enum,
unfinished tasks become FAILED (the original cannot resume them either), and audio,
history, leases and idempotency keys are dropped.

Everything runs in Alembic's one transaction: nothing is visible until all of it is done.

Revision ID: 0001
Revises: c7e1b585e358
Create Date: 2026-11-27 20:24:17.529391
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = "c7e1b585e358"
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


# Printed by `alembic upgrade head` (the alembic logger is configured in alembic.ini).
log = logging.getLogger("alembic.runtime.migration")

DEFAULT_TITLE = "Упражнение"  # the original's default title, for the rare empty one
UPGRADE_NOTE = (
    "This recording was being assessed when the service was upgraded and its audio was not "
    "kept; please record it again."
)
DOWNGRADE_NOTE = (
    "This recording was being assessed when the service was rolled back to its previous "
    "version, which cannot resume it; please record it again."
)


def _set_aside(table: str, new_name: str) -> None:
    """Rename `table` out of the way, with the NOT NULL constraints PostgreSQL 18 names
    after it (`tasks_id_not_null`): left as they are, the new table's would be suffixed."""
    op.execute(f"ALTER TABLE {table} RENAME TO {new_name}")
    op.execute(
        f"""
        DO $$
        DECLARE constraint_name name;
        BEGIN
            FOR constraint_name IN
                SELECT conname FROM pg_constraint
                WHERE conrelid = '{new_name}'::regclass AND contype = 'n'
            LOOP
                EXECUTE format('ALTER TABLE {new_name} RENAME CONSTRAINT %I TO %I',
                               constraint_name, '{new_name}_' || constraint_name);
            END LOOP;
        END $$
        """
    )


# Convert through text so a `real` such as 57.1 stays 57.1 rather than 57.099998474121094.
# An earlier comment of an unfinished task is kept after the note, so nothing is lost.
_TAKE_OVER_TASKS = sa.text(
    """
    INSERT INTO tasks (id, user_id, text_id, title, status, result, accuracy, mistakes,
                       comment, created_at, updated_at, completed_at, last_event_seq)
    SELECT id, user_id, text_id,
           CASE WHEN title = '' THEN :default_title ELSE title END,
           CASE WHEN finished THEN lower(status::text) ELSE 'failed' END,
           result, accuracy::text::double precision, mistakes::jsonb,
           CASE WHEN finished THEN comment
                ELSE concat_ws(' ', CAST(:note AS text), 'Earlier note: ' || comment) END,
           created_at,
           CASE WHEN finished THEN greatest(created_at, completed_at) ELSE now() END,
           CASE WHEN finished THEN completed_at ELSE now() END,
           2
    FROM (
        SELECT *, status IN ('COMPLETED', 'FAILED') AS finished FROM original_tasks
    ) AS original
    """
)
# Each task's history as the pipeline would have written it: `created` (seq 1), then its
# terminal status (seq 2, with the comment on failure). No stage events: the original
# kept no stage times, so the detail reports no stages rather than invented ones.
_WRITE_HISTORY = sa.text(
    """
    INSERT INTO task_events (task_id, seq, kind, status, detail, created_at)
    SELECT id, 1, 'status', 'created', NULL, created_at FROM tasks
    UNION ALL
    SELECT id, 2, 'status', status, CASE WHEN status = 'failed' THEN comment END,
           greatest(created_at, coalesce(completed_at, created_at))
    FROM tasks
    """
)
_COUNT_ORIGINAL = sa.text(
    """
    SELECT count(*) AS kept,
           count(*) FILTER (WHERE status NOT IN ('COMPLETED', 'FAILED')) AS unfinished,
           count(*) FILTER (WHERE title = '') AS untitled
    FROM original_tasks
    """
)


def upgrade() -> None:
    # The original's other names (tasks_pkey, task_*_idx) differ from ours.
    _set_aside("tasks", "original_tasks")
    _create_tables()
    bind = op.get_bind()
    counts = bind.execute(_COUNT_ORIGINAL).one()
    bind.execute(_TAKE_OVER_TASKS, {"default_title": DEFAULT_TITLE, "note": UPGRADE_NOTE})
    bind.execute(_WRITE_HISTORY)
    op.execute("DROP TABLE original_tasks")
    op.execute("DROP TYPE status")
    log.info(
        "Took over the original task manager's tasks: %d kept, %d unfinished failed "
        "(the original kept no audio to resume them), %d empty titles set to %r",
        counts.kept,
        counts.unfinished,
        counts.untitled,
        DEFAULT_TITLE,
    )


def _create_tables() -> None:
    """This service's tables, exactly as revision 0001 has always created them."""
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


# The original's schema at c7e1b585e358, as that revision creates it (frozen here too).
ORIGINAL_SCHEMA = (
    """
    CREATE TYPE status AS ENUM (
        'CREATED', 'STARTED', 'PREPROCESSING', 'TRANSCRIBING', 'EVALUATING', 'COMPLETED', 'FAILED'
    )
    """,
    """
    CREATE TABLE tasks (
        id uuid NOT NULL,
        status status NOT NULL,
        user_id uuid NOT NULL,
        text_id uuid NOT NULL,
        result text,
        created_at timestamp with time zone NOT NULL,
        completed_at timestamp with time zone,
        comment text,
        title varchar(50) NOT NULL,
        accuracy real,
        mistakes json,
        CONSTRAINT tasks_pkey PRIMARY KEY (id),
        CONSTRAINT check_accuracy CHECK (accuracy >= 0.0 AND accuracy <= 100.0)
    )
    """,
    "CREATE INDEX task_text_id_idx ON tasks USING hash (text_id)",
    "CREATE INDEX task_user_id_idx ON tasks USING hash (user_id)",
)
_HAND_BACK_TASKS = sa.text(
    """
    INSERT INTO tasks (id, status, user_id, text_id, result, created_at, completed_at,
                       comment, title, accuracy, mistakes)
    SELECT id,
           CAST(CASE WHEN finished THEN upper(status) ELSE 'FAILED' END AS status),
           user_id, text_id, result, created_at,
           CASE WHEN finished THEN completed_at ELSE now() END,
           CASE WHEN finished THEN comment
                ELSE concat_ws(' ', CAST(:note AS text), 'Earlier note: ' || comment) END,
           title, accuracy::text::real, mistakes::json
    FROM (
        SELECT *, status IN ('completed', 'failed') AS finished FROM tasks_0001
    ) AS ours
    """
)
_COUNT_OURS = sa.text(
    """
    SELECT count(*) AS kept,
           count(*) FILTER (WHERE status NOT IN ('completed', 'failed')) AS unfinished
    FROM tasks_0001
    """
)


def downgrade() -> None:
    op.drop_table("task_events")
    op.drop_table("task_audio")
    # Our other names (pk_tasks, ix_tasks_*) differ from the original's.
    _set_aside("tasks", "tasks_0001")
    for statement in ORIGINAL_SCHEMA:
        op.execute(statement)
    bind = op.get_bind()
    counts = bind.execute(_COUNT_OURS).one()
    bind.execute(_HAND_BACK_TASKS, {"note": DOWNGRADE_NOTE})
    op.drop_table("tasks_0001")
    log.info(
        "Handed the tasks back to the original task manager's schema: %d kept, %d unfinished "
        "failed; audio, history and leases dropped",
        counts.kept,
        counts.unfinished,
    )
