"""The `tasks` table: the record of every task. Celery-free (importing it builds no Celery app), so
the front doors, the worker and the tests share it.

Every state change is a conditional UPDATE: a task is claimed only from `queued`/`waiting`, and a
final state is never overwritten. That is what keeps a redelivered or doubly woken message from
running a second copy.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Executable,
    Row,
    Table,
    bindparam,
    case,
    func,
    insert,
    null,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from models import FINAL_STATES, Task, TaskState, db_utcnow, liveness
from models.engine import autocommit_engine

_tasks: Table = Task.__table__  # type: ignore[assignment]
_FINAL = tuple(s.value for s in FINAL_STATES)
_CLAIMABLE = (TaskState.QUEUED.value, TaskState.WAITING.value)


def _param(name: str, column: str) -> Any:
    return bindparam(name, type_=_tasks.c[column].type)


# The hot statements (every task runs each once or more) are built once, with bound parameters:
# a statement built per call costs more CPU in SQLAlchemy than its round trip to the database.
_INSERT = insert(_tasks)
_BY_ID = _tasks.c.id == bindparam("task_id")
_CLAIM_VALUES = {
    "state": TaskState.RUNNING.value,
    "worker": _param("worker", "worker"),
    "pid": _param("pid", "pid"),
    "heartbeat_at": db_utcnow(),
    # A task's work begins with the claim that gets its locks: a task that waited had its earlier
    # claim's time cleared by `to_waiting`; a parked one (which already worked) keeps its own.
    "started_at": func.coalesce(_tasks.c.started_at, db_utcnow()),
    "message": "Starting",
}
_CLAIMED = update(_tasks).where(_BY_ID, _tasks.c.state.in_(_CLAIMABLE), _tasks.c.stop_requested_at.is_(None))
#: With and without the record of the lock plan (JSON: a bound None would be stored as `null`).
_CLAIM = {
    True: _CLAIMED.values(**_CLAIM_VALUES, locks=_param("locks", "locks")),
    False: _CLAIMED.values(**_CLAIM_VALUES),
}
_RUNNING = _tasks.c.state == TaskState.RUNNING.value
#: Only the running process's own row: pids repeat across hosts (containers), so the node too.
_OURS = (_tasks.c.worker == bindparam("running_worker"), _tasks.c.pid == bindparam("running_pid"))
_PROGRESS_VALUES = {"percent": _param("percent", "percent"), "message": _param("message", "message")}
#: Without and with the check that the row is still the running task of the writing process.
_PROGRESS = {
    False: update(_tasks).where(_BY_ID, _RUNNING).values(**_PROGRESS_VALUES),
    True: update(_tasks).where(_BY_ID, _RUNNING, *_OURS).values(**_PROGRESS_VALUES),
}
_BEAT = update(_tasks).where(_BY_ID, _RUNNING, *_OURS).values(heartbeat_at=db_utcnow())
_TO_WAITING_BASE = update(_tasks).where(_BY_ID, _RUNNING, *_OURS)
_TO_WAITING_VALUES = {
    "state": TaskState.WAITING.value,
    "message": _param("message", "message"),
    "locks": _param("locks", "locks"),
}
#: Without and with the checkpoint a parked task resumes from. A task that waits before its work
#: began (no checkpoint saved) has not started: the claim that gets its locks stamps `started_at`.
_TO_WAITING = {
    False: _TO_WAITING_BASE.values(
        **_TO_WAITING_VALUES,
        started_at=case((_tasks.c.checkpoint.is_(None), null()), else_=_tasks.c.started_at),
    ),
    True: _TO_WAITING_BASE.values(**_TO_WAITING_VALUES, checkpoint=_param("checkpoint", "checkpoint")),
}
_FINISH_VALUES = {
    "state": _param("state", "state"),
    "message": _param("message", "message"),
    "finished_at": db_utcnow(),
    "locks": _param("locks", "locks"),
    "error": func.coalesce(_param("error", "error"), _tasks.c.error),
}
_FINISH = {
    # Only a success sets percent and result: a failed task keeps the percent it reached.
    True: update(_tasks)
    .where(_BY_ID, _tasks.c.state.not_in(_FINAL))
    .values(**_FINISH_VALUES, percent=100, result=_param("result", "result")),
    False: update(_tasks).where(_BY_ID, _tasks.c.state.not_in(_FINAL)).values(**_FINISH_VALUES),
}


def _write(engine: Engine, stmt: Executable, values: dict[str, Any], *, again_if_dropped: bool) -> CursorResult[Any]:
    """Run one statement that commits by itself: one round trip (see `models.engine.autocommit_engine`).

    `again_if_dropped`: the statement is idempotent, so a connection the server had dropped
    (restart, wait_timeout) is replaced and the statement sent once more. Writes whose callers
    must tell "applied twice" from "moved under us" (the INSERT, claim, waiting) sort that out
    themselves.
    """
    for attempt in (1, 2):
        try:
            with autocommit_engine(engine).connect() as conn:
                return conn.execute(stmt, values)
        except DBAPIError as err:
            if attempt == 2 or not again_if_dropped or not err.connection_invalidated:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of trying to start a task: claimed, or why not (the row as it stands)."""

    claimed: bool
    row: Row[Any] | None


def new_task_id() -> str:
    return str(uuid.uuid4())


def create(
    engine: Engine,
    *,
    kind: str,
    queue: str,
    args: dict[str, Any],
    app_id: str | None,
    task_id: str | None = None,
    claim: Callable[[Connection, str], None] | None = None,
    retry_of: str | None = None,
) -> str:
    """Record a queued task; its id.

    `claim(conn, task_id)` runs in the same transaction, after the row is written (a first write
    also takes SQLite's write lock before any read): what it raises rolls the row back with it,
    so a request the claim refuses leaves no task behind.
    """
    task_id = task_id or new_task_id()
    row = {
        "id": task_id,
        "type": kind,
        "queue": queue,
        "args": args,
        "app_id": app_id,
        "state": TaskState.QUEUED.value,
        "percent": 0,
        "message": "Queued",
        "locks": {},
        "retry_of": retry_of,
    }
    if claim is not None:
        with engine.begin() as conn:
            conn.execute(_INSERT, row)
            claim(conn, task_id)
        return task_id
    for attempt in (1, 2):
        try:
            _write(engine, _INSERT, row, again_if_dropped=False)
            return task_id
        except IntegrityError:
            # Only a second attempt may find its own row: the first one landed, then its
            # connection dropped before the answer came back.
            found = get(engine, task_id) if attempt == 2 else None
            if found is not None and (found.type, found.args) == (kind, args):
                return task_id
            raise
        except DBAPIError as err:
            if attempt == 2 or not err.connection_invalidated:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def get(engine: Engine, task_id: str) -> Row[Any] | None:
    with engine.connect() as conn:
        return conn.execute(select(_tasks, db_utcnow().label("db_now")).where(_tasks.c.id == task_id)).first()


def claim(engine: Engine, task_id: str, *, worker: str, pid: int, plan: dict[str, str] | None = None) -> Claim:
    """Mark the task running in this process, only if it is queued or waiting (one winner).

    One UPDATE (one commit) when it wins; the row is read only when it loses, to say why.
    """
    values: dict[str, Any] = {"task_id": task_id, "worker": worker, "pid": pid}
    if plan is not None:
        values["locks"] = {"plan": plan}
    result = _write(engine, _CLAIM[plan is not None], values, again_if_dropped=False)
    if result.rowcount == 1:
        return Claim(True, None)
    return Claim(False, get(engine, task_id))


def to_waiting(
    engine: Engine,
    task_id: str,
    *,
    worker: str,
    pid: int,
    message: str,
    waits: dict[str, str],
    checkpoint: dict[str, Any] | None = None,
) -> bool:
    """Give up the process: the task waits for locks, and a release will wake it.

    With `checkpoint` the task *parks*: it keeps the locks it holds and, woken, resumes from what
    `checkpoint` says it has done. Without it the task's work has not begun: its `started_at` is
    cleared, and the claim that gets its locks stamps it. False when the row is no longer the
    running task of this process (`worker`, `pid`).
    """
    values: dict[str, Any] = {
        "task_id": task_id,
        "running_worker": worker,
        "running_pid": pid,
        "message": message[:512],
        "locks": {"waits": waits},
    }
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    return _write(engine, _TO_WAITING[checkpoint is not None], values, again_if_dropped=False).rowcount == 1


def checkpoint_of(engine: Engine, task_id: str) -> dict[str, Any]:
    """What the task saved when it last parked ({} if it never did)."""
    with engine.connect() as conn:
        saved = conn.execute(select(_tasks.c.checkpoint).where(_tasks.c.id == task_id)).scalar()
    return dict(saved) if isinstance(saved, dict) else {}


def set_message(engine: Engine, task_id: str, message: str, *, locks: dict[str, Any] | None = None) -> None:
    values: dict[str, Any] = {"message": message[:512]}
    if locks is not None:
        values["locks"] = locks
    _write(engine, update(_tasks).where(_tasks.c.id == task_id).values(**values), {}, again_if_dropped=True)


def progress(
    engine: Engine, task_id: str, percent: int, message: str, *, worker: str | None = None, pid: int | None = None
) -> bool:
    """Write how far the task is; False when no running row matched (with `worker`, `pid`: none of
    that process's), which tells a running task that it is no longer the one running it."""
    values: dict[str, Any] = {"task_id": task_id, "percent": max(0, min(100, percent)), "message": message[:512]}
    ours = worker is not None and pid is not None
    if ours:
        values.update(running_worker=worker, running_pid=pid)
    return _write(engine, _PROGRESS[ours], values, again_if_dropped=True).rowcount == 1


def beat(engine: Engine, task_id: str, *, worker: str, pid: int) -> bool:
    """Stamp the heartbeat of the task that process (`worker`, `pid`) runs, on the database clock.

    False when the row is no longer that process's running task (ended, interrupted, claimed by
    another): the process has lost whatever the task held, and must stop working.
    """
    values = {"task_id": task_id, "running_worker": worker, "running_pid": pid}
    return _write(engine, _BEAT, values, again_if_dropped=True).rowcount == 1


def finish(
    engine: Engine,
    task_id: str,
    state: TaskState,
    *,
    message: str,
    result: Any = None,
    error: str | None = None,
    locks: dict[str, Any] | None = None,
) -> bool:
    """Move a task to a final state; a task already final is left as it is.

    `locks` is what the task held and how its acquire went (kept for /metrics); by default the
    record of its locks is cleared.
    """
    values: dict[str, Any] = {
        "task_id": task_id,
        "state": state.value,
        "message": message[:512],
        "locks": locks or {},
        "error": error,
    }
    succeeded = state is TaskState.SUCCEEDED
    if succeeded:
        values["result"] = result
    return _write(engine, _FINISH[succeeded], values, again_if_dropped=True).rowcount == 1


def interrupt(engine: Engine, task_ids: Iterable[str], *, reason: str) -> list[str]:
    """Mark tasks whose process died `interrupted` (or `cancelled` if a stop was asked for)."""
    changed = []
    for task_id in task_ids:
        row = get(engine, task_id)
        if row is None or row.state in _FINAL:
            continue
        state = TaskState.CANCELLED if row.stop_requested_at is not None else TaskState.INTERRUPTED
        message = "Stopped" if state is TaskState.CANCELLED else f"Interrupted: {reason}"
        if finish(engine, task_id, state, message=message, error=None if state is TaskState.CANCELLED else reason):
            changed.append(task_id)
    return changed


def request_stop(engine: Engine, task_id: str) -> bool:
    with engine.begin() as conn:
        result = conn.execute(
            update(_tasks)
            .where(_tasks.c.id == task_id, _tasks.c.state.not_in(_FINAL), _tasks.c.stop_requested_at.is_(None))
            .values(stop_requested_at=db_utcnow())
        )
    return result.rowcount == 1


def cancel_if_idle(engine: Engine, task_id: str) -> str | None:
    """Cancel a task that has no process (queued or waiting); return the state it left, else None."""
    for state in _CLAIMABLE:
        with engine.begin() as conn:
            result = conn.execute(
                update(_tasks)
                .where(_tasks.c.id == task_id, _tasks.c.state == state)
                .values(
                    state=TaskState.CANCELLED.value,
                    message="Stopped before it ran" if state == TaskState.QUEUED.value else "Stopped while waiting",
                    finished_at=db_utcnow(),
                    locks={},
                )
            )
        if result.rowcount == 1:
            return state
    return None


def running_on(engine: Engine, worker: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(_tasks.c.id).where(_tasks.c.worker == worker, _tasks.c.state == TaskState.RUNNING.value)
        ).all()
    return [r.id for r in rows]


def stale_running(engine: Engine, lease: dt.timedelta) -> list[str]:
    """Running tasks silent for longer than the lease, on the database clock (`models.liveness`)."""
    with engine.connect() as conn:
        now = conn.execute(select(db_utcnow())).scalar_one()
        rows = conn.execute(
            select(_tasks.c.id, _tasks.c.heartbeat_at).where(_tasks.c.state == TaskState.RUNNING.value)
        ).all()
        beats = [(r.id, r.heartbeat_at) for r in rows]
        silent = [(i, beat) for i, beat in beats if beat is None or beat + lease < now]
        if not silent:
            return []
        started = liveness.server_started_at(conn, now)
    return [i for i, beat in silent if liveness.silent_too_long(beat, now=now, lease=lease, server_started=started)]


def waiting(engine: Engine, task_ids: Sequence[str] | None = None) -> Sequence[Any]:
    stmt = select(_tasks.c.id, _tasks.c.type, _tasks.c.queue, _tasks.c.args).where(
        _tasks.c.state == TaskState.WAITING.value
    )
    if task_ids is not None:
        stmt = stmt.where(_tasks.c.id.in_(list(task_ids)))
    with engine.connect() as conn:
        return conn.execute(stmt).all()


def heartbeat_is_fresh(engine: Engine, row: Row[Any], lease: dt.timedelta) -> bool:
    """Whether the task of `row` (read by `get`) counts as alive (`models.liveness`)."""
    beat, now = row.heartbeat_at, row.db_now
    if beat is not None and beat + lease >= now:
        return True
    with engine.connect() as conn:
        started = liveness.server_started_at(conn, now)
    return not liveness.silent_too_long(beat, now=now, lease=lease, server_started=started)
