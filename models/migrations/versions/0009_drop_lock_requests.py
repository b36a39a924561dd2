"""drop lock_requests: writers waiting for a lock row no longer post their operations

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Types spelled once; frozen here so later model changes never rewrite this migration.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_lock_requests_row_id_id", table_name="lock_requests")
    op.drop_table("lock_requests")


def downgrade() -> None:
    # As 0006 made it.
    op.create_table(
        "lock_requests",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("row_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )
    op.create_index("ix_lock_requests_row_id_id", "lock_requests", ["row_id", "id"])
