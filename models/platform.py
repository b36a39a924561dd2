"""The platform's own state: one row with its version, its infra manifest and whether it is ready."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import db_utcnow
from models.types import JSONDoc, UTCDateTime


class PlatformState(Base):
    """One row (`id = "main"`): written by update (version, infra) and platformstart (ready)."""

    __tablename__ = "platform_state"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    #: The infra containers the platform should run: [{"name", "image", "version"}].
    infra: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, nullable=False, default=list)
    #: True once platformstart brought infra and apps up; apptasks may rely on the platform then.
    ready: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    ready_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())
