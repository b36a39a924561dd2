"""tasks.retry_of (a retry names the task it retries) and task_guards (one active task per platform kind)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retry_of", sa.String(64), nullable=True))
    op.create_table(
        "task_guards",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("task_id", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_guards")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("retry_of")
