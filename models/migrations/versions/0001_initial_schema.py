"""initial schema

Revision ID: 0001
Revises: 
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
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('apps',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('app_store_id', sa.String(length=255), nullable=False),
    sa.Column('manifest', JSON_, nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('location', sa.String(length=255), nullable=False),
    sa.Column('installation_state', sa.String(length=32), nullable=False),
    sa.Column('run_state', sa.String(length=16), nullable=False),
    sa.Column('error', JSON_, nullable=True),
    sa.Column('container_id', sa.String(length=128), nullable=True),
    sa.Column('cpu_shares', sa.Integer(), nullable=False),
    sa.Column('cpu_quota', sa.Integer(), nullable=False),
    sa.Column('memory_limit', sa.BigInteger(), nullable=False),
    sa.Column('env', JSON_, nullable=False),
    sa.Column('notes', LONG_TEXT, nullable=False),
    sa.Column('operators', JSON_, nullable=False),
    sa.Column('checklist', JSON_, nullable=False),
    sa.Column('enable_backup', sa.Boolean(), nullable=False),
    sa.Column('enable_mailbox', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTC_DATETIME, server_default=db_utcnow(), nullable=False),
    sa.Column('updated_at', UTC_DATETIME, server_default=db_utcnow(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_apps')),
    sa.UniqueConstraint('location', name=op.f('uq_apps_location'))
    )
    op.create_table('backups',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('type', sa.String(length=8), nullable=False),
    sa.Column('app_id', sa.String(length=64), nullable=True),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('checksum', sa.String(length=80), nullable=True),
    sa.Column('depends_on', JSON_, nullable=False),
    sa.Column('app_config', JSON_, nullable=True),
    sa.Column('error', sa.String(length=1024), nullable=True),
    sa.Column('discard_reason', sa.String(length=255), nullable=True),
    sa.Column('created_at', UTC_DATETIME, server_default=db_utcnow(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backups'))
    )
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backups_app_id'), ['app_id'], unique=False)

    op.create_table('eventlog',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('source', JSON_, nullable=False),
    sa.Column('data', JSON_, nullable=False),
    sa.Column('created_at', UTC_DATETIME, server_default=db_utcnow(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_eventlog'))
    )
    with op.batch_alter_table('eventlog', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eventlog_action'), ['action'], unique=False)

    op.create_table('locks',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('data', JSON_, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_locks'))
    )
    locks = sa.table("locks", sa.column("id", sa.String), sa.column("data", JSON_), sa.column("version", sa.BigInteger))
    op.bulk_insert(locks, [{"id": "main", "data": {"holders": [], "waiters": [], "seq": 0}, "version": 0}])
    op.create_table('tasks',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('queue', sa.String(length=32), nullable=False, server_default='apptask'),
    sa.Column('args', JSON_, nullable=False),
    sa.Column('app_id', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('percent', sa.Integer(), nullable=False),
    sa.Column('message', sa.String(length=512), nullable=False),
    sa.Column('error', LONG_TEXT, nullable=True),
    sa.Column('result', JSON_, nullable=True),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('locks', JSON_, nullable=False),
    sa.Column('heartbeat_at', UTC_DATETIME, nullable=True),
    sa.Column('created_at', UTC_DATETIME, server_default=db_utcnow(), nullable=False),
    sa.Column('started_at', UTC_DATETIME, nullable=True),
    sa.Column('finished_at', UTC_DATETIME, nullable=True),
    sa.Column('stop_requested_at', UTC_DATETIME, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_app_id_created_at', ['app_id', 'created_at'], unique=False)
        batch_op.create_index('ix_tasks_state_type', ['state', 'type'], unique=False)

    op.create_table('archives',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('backup_id', sa.String(length=128), nullable=False),
    sa.Column('app_id', sa.String(length=64), nullable=False),
    sa.Column('icon', BLOB, nullable=True),
    sa.Column('app_store_icon', BLOB, nullable=True),
    sa.Column('app_config', JSON_, nullable=False),
    sa.Column('created_at', UTC_DATETIME, server_default=db_utcnow(), nullable=False),
    sa.ForeignKeyConstraint(['backup_id'], ['backups.id'], name=op.f('fk_archives_backup_id_backups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_archives'))
    )
    with op.batch_alter_table('archives', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_archives_backup_id'), ['backup_id'], unique=False)

    op.create_table('notifications',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('event_id', BIG_ID, nullable=True),
    sa.Column('alert_kind', sa.String(length=64), nullable=True),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('message', LONG_TEXT, nullable=False),
    sa.Column('acknowledged', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTC_DATETIME, server_default=db_utcnow(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['eventlog.id'], name=op.f('fk_notifications_event_id_eventlog'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('alert_kind', name=op.f('uq_notifications_alert_kind'))
    )
    op.create_table('port_bindings',
    sa.Column('app_id', sa.String(length=64), nullable=False),
    sa.Column('env_var', sa.String(length=128), nullable=False),
    sa.Column('host_port', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=3), nullable=False),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_port_bindings_app_id_apps'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('app_id', 'env_var', name=op.f('pk_port_bindings')),
    sa.UniqueConstraint('type', 'host_port', name='uq_port_bindings_type_host_port')
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key still uses.
    for table in ("port_bindings", "notifications", "archives", "tasks", "locks", "eventlog", "backups", "apps"):
        op.drop_table(table)
