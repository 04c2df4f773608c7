"""completion webhooks: tasks.callback_url and the delivery outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TERMINAL = "('completed', 'failed')"
STATES = "('pending', 'delivered', 'disabled', 'expired', 'refused')"

# The outbox: a task with a callback that becomes terminal gets its delivery row from
# this trigger, inside the transaction that wrote the terminal status. It commits with
# the status or not at all, and costs the pipeline no statement of its own. The WHEN
# clause keeps every other update (claims, renewals, stage moves) away from the function.
ENQUEUE_FUNCTION = """
CREATE FUNCTION webhook_deliveries_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (task_id, event_type, callback_url)
    VALUES (NEW.id, 'task.' || NEW.status, NEW.callback_url);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column("tasks", sa.Column("callback_url", sa.String(length=2048), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("callback_url", sa.String(length=2048), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN {STATES}", name=op.f("ck_webhook_deliveries_state_known")),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_webhook_deliveries_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_task_id", "webhook_deliveries", ["task_id"])
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", "attempt", name=op.f("pk_webhook_attempts")),
    )
    op.execute(ENQUEUE_FUNCTION)
    op.execute(
        f"""
        CREATE TRIGGER webhook_deliveries_on_finish AFTER UPDATE OF status ON tasks
        FOR EACH ROW WHEN (
            NEW.callback_url IS NOT NULL
            AND NEW.status IN {TERMINAL} AND OLD.status NOT IN {TERMINAL}
        )
        EXECUTE FUNCTION webhook_deliveries_enqueue()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER webhook_deliveries_on_finish ON tasks")
    op.execute("DROP FUNCTION webhook_deliveries_enqueue()")
    op.drop_table("webhook_attempts")
    op.drop_index(
        "ix_webhook_deliveries_due",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_index("ix_webhook_deliveries_task_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_column("tasks", "callback_url")
