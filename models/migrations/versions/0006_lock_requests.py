"""lock_requests: operations that writers waiting for a lock row post for its current writer to apply

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Types spelled once; frozen here so later model changes never rewrite this migration.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lock_requests",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("row_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )
    op.create_index("ix_lock_requests_row_id_id", "lock_requests", ["row_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_lock_requests_row_id_id", table_name="lock_requests")
    op.drop_table("lock_requests")
