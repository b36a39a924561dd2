"""backups and the platform: the task writing a backup, and the platform's own state row

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from models.clock import db_utcnow

# Types spelled once; frozen here so later model changes never rewrite this migration.
JSON_ = sa.JSON().with_variant(mysql.JSON(), "mysql", "mariadb")
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task_id", sa.String(length=64), nullable=True))
    op.create_table(
        "platform_state",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("infra", JSON_, nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("ready_at", UTC_DATETIME, nullable=True),
        sa.Column("updated_at", UTC_DATETIME, server_default=db_utcnow(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_state")),
    )


def downgrade() -> None:
    op.drop_table("platform_state")
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.drop_column("task_id")
