"""task_logs: each task's own log lines (what its process logged while it ran), bounded per task

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# Types spelled once; frozen here so later model changes never rewrite this migration.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_logs",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("line", LONG_TEXT, nullable=False),
        sa.PrimaryKeyConstraint("task_id", "seq", name="pk_task_logs"),
    )


def downgrade() -> None:
    op.drop_table("task_logs")
