"""task_logs: each task's own log lines, written by the worker that runs it, read by the API and CLI.

A table, not files: the API and the workers may be on different hosts, and the database is the one
thing they share. Bounded per task by the writer (the first lines and a rolling last part); a gap in
`seq` is where lines were dropped.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.types import LongText, UTCDateTime


class TaskLogLine(Base):
    __tablename__ = "task_logs"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: 1, 2, 3, ... per task, across every run of it (a task woken from `waiting` goes on numbering).
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: When the record was made, on the worker's clock (UTC).
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    level: Mapped[str] = mapped_column(String(10), nullable=False)
    line: Mapped[str] = mapped_column(LongText, nullable=False)
