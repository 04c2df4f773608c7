"""queue_users follows a finished task that becomes unfinished again (a retry)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 04:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = "status NOT IN ('completed', 'failed')"


def _track_function(enters_when: str) -> str:
    """`queue_users_track` with the condition under which a row makes its user wait.

    The rest is migration 0002's: on the way out, lock the user's row first, then read
    the minimum in a second statement, which sees every creation committed meanwhile.
    """
    return f"""
    CREATE OR REPLACE FUNCTION queue_users_track() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF {enters_when} THEN
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


def upgrade() -> None:
    # A task enters the queue when it is created unfinished or a finished one is put back.
    op.execute(_track_function(f"TG_OP <> 'DELETE' AND NEW.{UNFINISHED}"))
    op.execute(
        f"""
        CREATE TRIGGER queue_users_on_reopen AFTER UPDATE OF status ON tasks
        FOR EACH ROW WHEN (NOT OLD.{UNFINISHED} AND NEW.{UNFINISHED})
        EXECUTE FUNCTION queue_users_track()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER queue_users_on_reopen ON tasks")
    op.execute(_track_function("TG_OP = 'INSERT'"))
