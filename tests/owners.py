"""Task rows that stand for lock owners in tests that run without Celery."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, insert, update

from models import Task, TaskState, db_utcnow


def add_owner(engine: Engine, owner: str | None = None, *, state: str = TaskState.RUNNING, kind: str = "test") -> str:
    """Insert a task row for `owner` (a fresh id when None), with a heartbeat of now on the db clock."""
    owner = owner or uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(
            insert(Task).values(
                id=owner,
                type=kind,
                args={},
                state=str(state),
                percent=0,
                message="",
                locks={},
                heartbeat_at=db_utcnow(),
            )
        )
    return owner


def set_state(engine: Engine, owner: str, state: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(Task).where(Task.id == owner).values(state=str(state)))
