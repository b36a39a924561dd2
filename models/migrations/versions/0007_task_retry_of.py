"""tasks.retry_of (a retry names the task it retries), task_guards (one active task per platform kind),
and the indexes history retention reads by (tasks and eventlog by age, notifications by event)

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
    guards = op.create_table(
        "task_guards",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("task_id", sa.String(64), nullable=True),
    )
    # One row per guarded kind from the start, so a request only ever locks an existing row.
    op.bulk_insert(guards, [{"kind": k, "task_id": None} for k in ("fullbackup", "update", "platformstart")])
    op.create_index("ix_tasks_created_at", "tasks", ["created_at"])
    op.create_index("ix_eventlog_created_at", "eventlog", ["created_at"])
    if _fk_indexed():
        # The foreign key's own index serves; it takes the name the models give it.
        op.execute("ALTER TABLE notifications RENAME INDEX fk_notifications_event_id_eventlog TO ix_notifications_event_id")
    else:
        op.create_index("ix_notifications_event_id", "notifications", ["event_id"])


def downgrade() -> None:
    if _fk_indexed():
        op.execute("ALTER TABLE notifications RENAME INDEX ix_notifications_event_id TO fk_notifications_event_id_eventlog")
    else:
        op.drop_index("ix_notifications_event_id", table_name="notifications")
    op.drop_index("ix_eventlog_created_at", table_name="eventlog")
    op.drop_index("ix_tasks_created_at", table_name="tasks")
    op.drop_table("task_guards")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("retry_of")


def _fk_indexed() -> bool:
    """MySQL and MariaDB index every foreign key column already (and keep that index for the key: a
    second index on the column could not be dropped again)."""
    return op.get_bind().dialect.name in ("mysql", "mariadb")
