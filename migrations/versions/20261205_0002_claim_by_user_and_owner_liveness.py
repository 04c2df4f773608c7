"""claim by user (queue_users) and lease owner liveness (leased_at)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = "status NOT IN ('completed', 'failed')"

# Keeps `queue_users.oldest_unfinished_at` equal to the created_at of the user's oldest
# unfinished task (NULL when there is none), so the claim can visit users in that order
# without reading their backlogs. It runs only when a task starts or stops being
# unfinished: claims, renewals and stage transitions do not fire it.
#
# The order of the two statements on the way out matters. The row lock is taken first,
# and the minimum is read by a second statement, which in READ COMMITTED (a VOLATILE
# function) gets a fresh snapshot: a creation of the same user that holds the row lock
# (its upsert below, which locks the row even when its WHERE leaves it unchanged) has
# committed by then and is counted. A single UPDATE would compute the minimum from the
# snapshot it took before waiting for the lock and could set NULL over a task committed
# meanwhile, leaving it unclaimable. The WHERE spares a row version per creation.
TRACK_FUNCTION = f"""
CREATE FUNCTION queue_users_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO queue_users AS q (user_id, oldest_unfinished_at)
        VALUES (NEW.user_id, NEW.created_at)
        ON CONFLICT (user_id) DO UPDATE
            SET oldest_unfinished_at = EXCLUDED.oldest_unfinished_at
            WHERE q.oldest_unfinished_at IS NULL
               OR q.oldest_unfinished_at > EXCLUDED.oldest_unfinished_at;
        RETURN NULL;
    END IF;
    PERFORM 1 FROM queue_users WHERE user_id = OLD.user_id FOR UPDATE;
    UPDATE queue_users SET oldest_unfinished_at = (
        SELECT min(created_at) FROM tasks WHERE user_id = OLD.user_id AND {UNFINISHED}
    ) WHERE user_id = OLD.user_id;
    RETURN NULL;
END
$$
"""

CLEAR_FUNCTION = """
CREATE FUNCTION queue_users_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE queue_users;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column("tasks", sa.Column("leased_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_tasks_user_unfinished",
        "tasks",
        ["user_id", "created_at", "id"],
        unique=False,
        postgresql_where=sa.text(UNFINISHED),
    )
    op.create_table(
        "queue_users",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("oldest_unfinished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_queue_users")),
    )
    op.create_index(
        "ix_queue_users_oldest",
        "queue_users",
        ["oldest_unfinished_at", "user_id"],
        unique=False,
        postgresql_where=sa.text("oldest_unfinished_at IS NOT NULL"),
    )
    op.execute(
        f"""
        INSERT INTO queue_users (user_id, oldest_unfinished_at)
        SELECT user_id, min(created_at) FROM tasks WHERE {UNFINISHED} GROUP BY user_id
        """
    )
    op.execute(TRACK_FUNCTION)
    op.execute(CLEAR_FUNCTION)
    op.execute(
        f"""
        CREATE TRIGGER queue_users_on_insert AFTER INSERT ON tasks
        FOR EACH ROW WHEN (NEW.{UNFINISHED}) EXECUTE FUNCTION queue_users_track()
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER queue_users_on_finish AFTER UPDATE OF status ON tasks
        FOR EACH ROW WHEN (OLD.{UNFINISHED} AND NOT NEW.{UNFINISHED})
        EXECUTE FUNCTION queue_users_track()
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER queue_users_on_delete AFTER DELETE ON tasks
        FOR EACH ROW WHEN (OLD.{UNFINISHED}) EXECUTE FUNCTION queue_users_track()
        """
    )
    op.execute(
        """
        CREATE TRIGGER queue_users_on_truncate AFTER TRUNCATE ON tasks
        FOR EACH STATEMENT EXECUTE FUNCTION queue_users_clear()
        """
    )


def downgrade() -> None:
    for trigger in ("on_truncate", "on_delete", "on_finish", "on_insert"):
        op.execute(f"DROP TRIGGER queue_users_{trigger} ON tasks")
    op.execute("DROP FUNCTION queue_users_clear()")
    op.execute("DROP FUNCTION queue_users_track()")
    op.drop_index(
        "ix_queue_users_oldest",
        table_name="queue_users",
        postgresql_where=sa.text("oldest_unfinished_at IS NOT NULL"),
    )
    op.drop_table("queue_users")
    op.drop_index(
        "ix_tasks_user_unfinished", table_name="tasks", postgresql_where=sa.text(UNFINISHED)
    )
    op.drop_column("tasks", "leased_at")
