"""The lock table: one row per lock space, one JSON document, one version number (`lockman`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.types import JSONDoc


class LockRow(Base):
    """Written only by `UPDATE ... SET version = version + 1 WHERE id = :id AND version = :seen`."""

    __tablename__ = "locks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
