"""the original task manager's schema

The service replaces an older task manager whose Alembic chain ends at this revision id.
Its live databases are stamped `c7e1b585e358`, so this chain starts there: on such a
database Alembic finds this revision applied and goes on with `0001`, which converts its
table in place. On an empty database this revision creates that schema (empty), so every
database takes the same path. `alembic downgrade c7e1b585e358` hands a database back to
the original in exactly this shape.

The original's older revisions (defd820781f5 … 7c8979e05723) are not part of this chain:
migrations/env.py refuses such a database with one line.

Revision ID: c7e1b585e358
Revises:
Create Date: 2026-11-27 20:24:17.529391
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c7e1b585e358"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The original's schema at its head, object for object (names, enum labels and their
# order, column types, hash indexes). Frozen: the downgrade of 0001 recreates the same.
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


def upgrade() -> None:
    for statement in ORIGINAL_SCHEMA:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE tasks")
    op.execute("DROP TYPE status")
