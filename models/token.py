"""API tokens: the REST API's bearer tokens, kept as hashes only."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import db_utcnow
from models.types import JSONDoc, UTCDateTime


class ApiToken(Base):
    """A bearer token: its SHA-256 (hex) and what it may do; the token itself is shown once and never kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    #: "read", "write", "admin" (each includes the ones before it).
    scopes: Mapped[list[str]] = mapped_column(JSONDoc, nullable=False, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
