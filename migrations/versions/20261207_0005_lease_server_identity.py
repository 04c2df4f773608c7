"""lease server identity: tasks.leased_on

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: existing leases are judged by the clock alone until renewed.
    op.add_column("tasks", sa.Column("leased_on", sa.String(length=96), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "leased_on")
