"""Eventlog (everything), notifications (system-wide, for specific events) and alerts (one per kind)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import db_utcnow
from models.types import JSONDoc, LongText, UTCDateTime


class Event(Base):
    __tablename__ = "eventlog"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    source: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow(), index=True)


class Notification(Base):
    """A notification; with `alert_kind` set it is the one alert of that kind, cleared when resolved."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("eventlog.id", ondelete="SET NULL"), nullable=True, index=True
    )
    alert_kind: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    message: Mapped[str] = mapped_column(LongText, nullable=False, default="")
    acknowledged: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())
