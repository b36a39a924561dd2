"""The lock table: one row per lock space, one JSON document, one version number; and the requests
that writers waiting for that row post for its current writer to apply (`lockman.manager`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.types import JSONDoc


class LockRow(Base):
    """Written only by `UPDATE ... SET version = version + 1 WHERE id = :id AND version = :seen`."""

    __tablename__ = "locks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class LockRequest(Base):
    """A lock operation posted by a writer that waits for the lock row, never committed.

    The row lives only inside its writer's transaction: whoever holds the lock row reads it
    uncommitted, applies it in its own compare-and-swap and leaves the answer in the document;
    the writer's transaction then ends, and the row with it (also when the writer dies).
    """

    __tablename__ = "lock_requests"
    __table_args__ = (Index("ix_lock_requests_row_id_id", "row_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    row_id: Mapped[str] = mapped_column(String(64), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
