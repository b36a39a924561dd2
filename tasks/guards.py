"""One task at a time for the platform kinds: a second request answers with the task under way.

A full backup, an update or a platformstart asked for while one of its kind is queued, waiting or
running must not queue a second copy. The check is a claim (`records.create(claim=...)`) on the
kind's guard row (`task_guards`, one row per kind, made by the migration), in the transaction that
inserts the task row, so two concurrent requests record one task on every backend:

    INSERT the task row; UPDATE task_guards SET task_id = task_id WHERE kind = :kind  -- the row lock
    SELECT the guard's task, and its state
      -> queued/waiting/running: DuplicateTaskError(holder): the transaction, task row and all, rolls back
      -> else: the guard names the new task, commit

The second request's UPDATE waits for the first's commit, and everything it reads after that is
the committed state (MariaDB: locking read; PostgreSQL: a fresh snapshot per statement; SQLite:
one writer). Nothing clears the guard when a task ends: a guard whose task is final is taken over.
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from models import Task, TaskGuard, TaskState
from tasks.errors import DuplicateTaskError

#: Kinds of which at most one task is queued, waiting or running.
GUARDED_KINDS = frozenset({"fullbackup", "update", "platformstart"})
_ACTIVE = frozenset({TaskState.QUEUED.value, TaskState.WAITING.value, TaskState.RUNNING.value})


def take(conn: Connection, kind: str, task_id: str) -> None:
    """Make `task_id` the guard's task, or raise DuplicateTaskError naming the one under way."""
    locked = conn.execute(update(TaskGuard).where(TaskGuard.kind == kind).values(task_id=TaskGuard.task_id))
    if locked.rowcount != 1:
        raise ValueError(f"no guard row for {kind!r}: run `boxtasks db upgrade`")
    holder = conn.execute(select(TaskGuard.task_id).where(TaskGuard.kind == kind).with_for_update()).scalar()
    if holder:
        state = conn.execute(select(Task.state).where(Task.id == holder)).scalar_one_or_none()
        if state in _ACTIVE:
            raise DuplicateTaskError(kind, holder)
    conn.execute(update(TaskGuard).where(TaskGuard.kind == kind).values(task_id=task_id))
