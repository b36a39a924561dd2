"""app hosting: port reservations, addon credentials, the failed operation of an app in error

Revision ID: 0002
Revises: 0001
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

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per reserved host port: the primary key keeps two apps off one port, even when
    # two installs commit at the same moment.
    op.create_table(
        "port_reservations",
        sa.Column("type", sa.String(length=3), nullable=False),
        sa.Column("port", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("env_var", sa.String(length=128), nullable=False),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name=op.f("ck_port_reservations_port_range")),
        sa.CheckConstraint("type IN ('tcp', 'udp')", name=op.f("ck_port_reservations_port_type")),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_port_reservations_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("type", "port", name=op.f("pk_port_reservations")),
    )
    with op.batch_alter_table("port_reservations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_port_reservations_app_id"), ["app_id"], unique=False)

    op.create_table(
        "app_addons",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("addon", sa.String(length=32), nullable=False),
        sa.Column("config", JSON_, nullable=False),
        sa.Column("created_at", UTC_DATETIME, server_default=db_utcnow(), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name=op.f("fk_app_addons_app_id_apps"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("app_id", "addon", name=op.f("pk_app_addons")),
    )

    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("error_operation", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("error_operation")
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key still uses.
    op.drop_table("app_addons")
    op.drop_table("port_reservations")
