"""Apps, their port bindings (the seed's `portBindings`; the REST API takes `ports`), and addon credentials."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import db_utcnow
from models.types import JSONDoc, LongText, UTCDateTime


class App(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_store_id: Mapped[str] = mapped_column(String(255), nullable=False)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    location: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    installation_state: Mapped[str] = mapped_column(String(32), nullable=False, default="pending_install")
    run_state: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    #: The operation that failed, while `installation_state` is `error`: issuing it again is a retry.
    error_operation: Mapped[str | None] = mapped_column(String(32), nullable=True)
    container_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: Relative CPU weight under contention (docker --cpu-shares).
    cpu_shares: Mapped[int] = mapped_column(Integer, nullable=False, default=512)
    #: Hard CPU limit in percent of one CPU (docker --cpu-quota / --cpu-period); 100 = one core.
    cpu_quota: Mapped[int] = mapped_column(Integer, nullable=False, default=100)
    memory_limit: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    env: Mapped[dict[str, str]] = mapped_column(JSONDoc, nullable=False, default=dict)
    notes: Mapped[str] = mapped_column(LongText, nullable=False, default="")
    operators: Mapped[list[str]] = mapped_column(JSONDoc, nullable=False, default=list)
    checklist: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    enable_backup: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    enable_mailbox: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())


class PortBinding(Base):
    """One env var of an app bound to `count` host ports from `host_port`, of one protocol."""

    __tablename__ = "port_bindings"
    __table_args__ = (UniqueConstraint("type", "host_port", name="uq_port_bindings_type_host_port"),)

    app_id: Mapped[str] = mapped_column(String(64), ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    env_var: Mapped[str] = mapped_column(String(128), primary_key=True)
    host_port: Mapped[int] = mapped_column(Integer, nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    type: Mapped[str] = mapped_column(String(3), nullable=False, default="tcp")


class PortReservation(Base):
    """One row per host port an app holds: the primary key is what stops two apps getting one port.

    A binding of `count` ports from `host_port` reserves each of them, in the same transaction as
    the binding, so overlapping ranges collide in the database, not in a check-then-write.
    """

    __tablename__ = "port_reservations"
    __table_args__ = (
        CheckConstraint("port BETWEEN 1 AND 65535", name="port_range"),
        CheckConstraint("type IN ('tcp', 'udp')", name="port_type"),
    )

    type: Mapped[str] = mapped_column(String(3), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    app_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True
    )
    env_var: Mapped[str] = mapped_column(String(128), nullable=False)


class AppAddon(Base):
    """What an addon set up for an app (e.g. sendmail's SMTP user and password); gone on uninstall."""

    __tablename__ = "app_addons"

    app_id: Mapped[str] = mapped_column(String(64), ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    addon: Mapped[str] = mapped_column(String(32), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())
