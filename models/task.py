"""The task record: Celery's task id is this row's id, so every front door names a task alike."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.clock import db_utcnow
from models.types import JSONDoc, LongText, UTCDateTime


class TaskState(enum.StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


#: States a task never leaves.
FINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.INTERRUPTED})
#: States in which no process runs the task, so no heartbeat is expected.
PROCESSLESS_STATES = frozenset({TaskState.QUEUED, TaskState.WAITING})


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_state_type", "state", "type"),
        Index("ix_tasks_app_id_created_at", "app_id", "created_at"),
        Index("ix_tasks_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    #: The Celery queue the task was sent to (a wake-up goes back to the same queue).
    queue: Mapped[str] = mapped_column(String(32), nullable=False, default="apptask")
    args: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    app_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=TaskState.QUEUED.value)
    percent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    message: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    error: Mapped[str | None] = mapped_column(LongText, nullable=True)
    result: Mapped[Any | None] = mapped_column(JSONDoc, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The locks this task holds or waits for: {"holds": {name: mode}, "waits": {name: mode}, "token": n}.
    locks: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    #: What a parked task (waiting for more locks while holding some) has done so far: it runs
    #: again from here when woken. Empty for tasks that never park.
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, server_default=db_utcnow())
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Set by `boxtasks task stop`: a task that dies after this ends `cancelled`, not `interrupted`.
    stop_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The failed, interrupted or cancelled task this one retries (`boxtasks task retry`).
    retry_of: Mapped[str | None] = mapped_column(String(64), nullable=True)


class TaskGuard(Base):
    """One row per task kind that may run only once at a time: the task that last claimed it.

    Written in the transaction that records the task; the guard is taken over only when its task
    is final, so two concurrent requests of the kind record one task (`tasks.guards`).
    """

    __tablename__ = "task_guards"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64), nullable=False)
