"""Backups and archives: an archive points at a backup and keeps what only an archive needs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import db_utcnow
from models.types import JSONDoc, UTCDateTime

_Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


class Backup(Base):
    __tablename__ = "backups"

    #: Usable in REST routes (no "/"), e.g. app_<appid>_<UTC stamp>_v<version>.
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Where the archive lives in the backup target, kept apart from the id.
    path: Mapped[str] = mapped_column(String(1024), nullable=False)
    type: Mapped[str] = mapped_column(String(8), nullable=False)  # app | box
    app_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="creating")  # creating|normal|error
    format: Mapped[str] = mapped_column(String(16), nullable=False, default="tgz")
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(80), nullable=True)
    #: A box backup lists the app backups it depends on.
    depends_on: Mapped[list[str]] = mapped_column(JSONDoc, nullable=False, default=list)
    #: The app's config as of the backup (notes, operators, checklist, ports, resources).
    app_config: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    #: The task that writes it while `creating`: a stale one whose task is gone is cleaned up.
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    discard_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())


class Archive(Base):
    __tablename__ = "archives"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    backup_id: Mapped[str] = mapped_column(String(128), ForeignKey("backups.id"), nullable=False, index=True)
    app_id: Mapped[str] = mapped_column(String(64), nullable=False)
    icon: Mapped[bytes | None] = mapped_column(_Blob, nullable=True)
    app_store_icon: Mapped[bytes | None] = mapped_column(_Blob, nullable=True)
    app_config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())
