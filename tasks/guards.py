"""One task at a time for the platform kinds: a second request answers with the task under way.

A full backup, an update or a platformstart asked for while one of its kind is queued, waiting or
running must not queue a second copy. The check and the insert are one transaction on a guard row
per kind (`task_guards`), so two concurrent requests record one task on every backend:

    UPDATE task_guards SET task_id = task_id WHERE kind = :kind   -- the row lock (SQLite: the write lock)
    SELECT task_id ... ; SELECT state FROM tasks WHERE id = :holder
      -> holder queued/waiting/running: DuplicateTaskError(holder), nothing written
      -> else: the guard names the new task, the task row is inserted, commit

The second request's first statement waits for the first's commit, and everything it reads after
that is the committed state (MariaDB: locking read, no snapshot taken before the lock; PostgreSQL:
a fresh snapshot per statement; SQLite: one writer). Nothing clears the guard when a task ends:
a guard whose task is final is simply taken over.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from models import Task, TaskGuard, TaskState
from tasks import records
from tasks.errors import DuplicateTaskError, TaskError

logger = logging.getLogger(__name__)

#: Kinds of which at most one task is queued, waiting or running.
GUARDED_KINDS = frozenset({"fullbackup", "update", "platformstart"})
_ACTIVE = frozenset({TaskState.QUEUED.value, TaskState.WAITING.value, TaskState.RUNNING.value})


def create_guarded(engine: Engine, *, kind: str, queue: str, args: dict[str, Any], retry_of: str | None = None) -> str:
    """Record a new `queued` task of `kind`, or raise DuplicateTaskError naming the one under way."""
    if kind not in GUARDED_KINDS:
        raise ValueError(f"{kind!r} is not a guarded kind ({', '.join(sorted(GUARDED_KINDS))})")
    task_id = records.new_task_id()
    row = records.new_row(task_id=task_id, kind=kind, queue=queue, args=args, app_id=None, retry_of=retry_of)
    for _ in range(3):
        try:
            with engine.begin() as conn:
                conn.execute(update(TaskGuard).where(TaskGuard.kind == kind).values(task_id=TaskGuard.task_id))
                holder = conn.execute(
                    select(TaskGuard.task_id).where(TaskGuard.kind == kind).with_for_update()
                ).scalar_one_or_none()
                if holder:
                    state = conn.execute(select(Task.state).where(Task.id == holder)).scalar_one_or_none()
                    if state in _ACTIVE:
                        raise DuplicateTaskError(kind, holder)
                if holder is None:
                    # First of its kind on this database: two first requests race on the key; the
                    # loser's insert fails and it goes round again, finding the winner's guard.
                    conn.execute(insert(TaskGuard).values(kind=kind, task_id=task_id))
                else:
                    conn.execute(update(TaskGuard).where(TaskGuard.kind == kind).values(task_id=task_id))
                conn.execute(insert(Task).values(row))
        except IntegrityError:
            logger.info("guard of %s made by a concurrent request; looking again", kind)
            continue
        return task_id
    raise TaskError(f"could not take the {kind} guard after 3 tries; ask again")
