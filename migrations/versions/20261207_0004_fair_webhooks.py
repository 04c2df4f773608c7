"""fair webhooks: each delivery's receiver host and user, a per-user cap on pending ones

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = "('pending', 'delivered', 'disabled', 'expired', 'refused')"
STATES = "('pending', 'delivered', 'disabled', 'expired', 'refused', 'dropped')"
DEFAULT_MAX_PENDING_PER_USER = 100

# The authority of the URL (host[:port], lower case): the key of the per-host limits.
RECEIVER_HOST = "lower(substring({url} from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)'))"

# The outbox trigger's function, now with the per-user cap: a user who already has
# `max_pending_per_user` deliveries pending gets the new one written `dropped` (with an
# attempt 0 saying why), never sent. The count stops at the cap through the partial
# index on pending rows by user, so it costs at most that many index entries. Two
# transactions ending tasks of one user at the same moment may both pass at cap - 1:
# the cap is a bound on a flood, not an exact quota.
ENQUEUE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION webhook_deliveries_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cap integer := (SELECT max_pending_per_user FROM webhook_limits LIMIT 1);
    pending integer := 0;
    dropped uuid;
BEGIN
    IF cap IS NOT NULL THEN
        SELECT count(*) INTO pending FROM (
            SELECT 1 FROM webhook_deliveries
            WHERE user_id = NEW.user_id AND state = 'pending' LIMIT cap
        ) AS waiting;
    END IF;
    IF cap IS NULL OR pending < cap THEN
        INSERT INTO webhook_deliveries (task_id, user_id, event_type, callback_url, receiver_host)
        VALUES (NEW.id, NEW.user_id, 'task.' || NEW.status, NEW.callback_url,
                {RECEIVER_HOST.format(url="NEW.callback_url")});
    ELSE
        INSERT INTO webhook_deliveries
            (task_id, user_id, event_type, callback_url, receiver_host, state)
        VALUES (NEW.id, NEW.user_id, 'task.' || NEW.status, NEW.callback_url,
                {RECEIVER_HOST.format(url="NEW.callback_url")}, 'dropped')
        RETURNING id INTO dropped;
        INSERT INTO webhook_attempts
            (delivery_id, attempt, started_at, duration_seconds, outcome, detail)
        VALUES (dropped, 0, now(), 0, 'dropped',
                'the user already has ' || cap || ' deliveries pending');
    END IF;
    RETURN NULL;
END
$$
"""

OLD_ENQUEUE_FUNCTION = """
CREATE OR REPLACE FUNCTION webhook_deliveries_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (task_id, event_type, callback_url)
    VALUES (NEW.id, 'task.' || NEW.status, NEW.callback_url);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column("webhook_deliveries", sa.Column("user_id", sa.UUID(), nullable=True))
    op.add_column(
        "webhook_deliveries", sa.Column("receiver_host", sa.String(length=2048), nullable=True)
    )
    op.execute(
        "UPDATE webhook_deliveries AS d SET user_id = t.user_id, "
        f"receiver_host = coalesce({RECEIVER_HOST.format(url='d.callback_url')}, '') "
        "FROM tasks AS t WHERE t.id = d.task_id"
    )
    op.alter_column("webhook_deliveries", "user_id", nullable=False)
    op.alter_column("webhook_deliveries", "receiver_host", nullable=False)
    op.drop_constraint(
        op.f("ck_webhook_deliveries_state_known"), "webhook_deliveries", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_webhook_deliveries_state_known"), "webhook_deliveries", f"state IN {STATES}"
    )
    op.create_index(
        "ix_webhook_deliveries_due_by_host",
        "webhook_deliveries",
        ["receiver_host", "next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_pending_by_user",
        "webhook_deliveries",
        ["user_id"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_dropped_unreported",
        "webhook_deliveries",
        ["created_at"],
        postgresql_where=sa.text("state = 'dropped' AND finished_at IS NULL"),
    )
    op.create_table(
        "webhook_limits",
        sa.Column("id", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("max_pending_per_user", sa.Integer(), nullable=True),
        sa.CheckConstraint("id", name=op.f("ck_webhook_limits_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_limits")),
    )
    op.execute(
        "INSERT INTO webhook_limits (id, max_pending_per_user) "
        f"VALUES (true, {DEFAULT_MAX_PENDING_PER_USER})"
    )
    op.execute(ENQUEUE_FUNCTION)


def downgrade() -> None:
    op.execute(OLD_ENQUEUE_FUNCTION)
    op.drop_table("webhook_limits")
    op.drop_index(
        "ix_webhook_deliveries_dropped_unreported",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("state = 'dropped' AND finished_at IS NULL"),
    )
    op.drop_index(
        "ix_webhook_deliveries_pending_by_user",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_index(
        "ix_webhook_deliveries_due_by_host",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("state = 'pending'"),
    )
    # A dropped delivery was never to be sent: the old schema has no word for it.
    op.execute("UPDATE webhook_deliveries SET state = 'expired' WHERE state = 'dropped'")
    op.drop_constraint(
        op.f("ck_webhook_deliveries_state_known"), "webhook_deliveries", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_webhook_deliveries_state_known"), "webhook_deliveries", f"state IN {OLD_STATES}"
    )
    op.drop_column("webhook_deliveries", "receiver_host")
    op.drop_column("webhook_deliveries", "user_id")
