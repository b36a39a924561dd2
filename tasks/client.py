"""Enqueue, wake and stop tasks by name: what the API and the CLI call. Imports no worker code."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import Connection, Engine

from config import get_settings
from config.celery import TASK_QUEUES
from lockman import LockManager
from models import FINAL_STATES, TaskState, get_engine, records
from models.secrets import redact
from tasks import guards
from tasks.celery import app
from tasks.errors import BrokerUnavailableError, TaskNotFoundError

logger = logging.getLogger(__name__)


def task_name(kind: str) -> str:
    return f"boxtasks.{kind}"


def queue_for(kind: str) -> str:
    return TASK_QUEUES.get(task_name(kind), "apptask")


def enqueue(
    kind: str,
    args: dict[str, Any] | None = None,
    *,
    app_id: str | None = None,
    queue: str | None = None,
    engine: Engine | None = None,
    claim: Callable[[Connection, str], None] | None = None,
    retry_of: str | None = None,
    task_id: str | None = None,
) -> str:
    """Record the task (`queued`), then send its message; the row's id is the Celery task id.

    `task_id`: the id to record it under (a new one by default). A row with that id already there
    raises sqlalchemy's IntegrityError and sends nothing: how a scheduler tick sends a run once.

    `claim`: what the request takes in the same transaction as the row (`records.create`). A kind
    that runs once at a time (`guards.GUARDED_KINDS`) also takes its guard there, and raises
    DuplicateTaskError, naming the task under way, instead of recording a second.

    The message carries the args with their secrets masked (`models.secrets`): the broker and
    Flower see which env names are set, never their values; the worker reads the whole args from
    the row (`tasks.locking`).
    """
    engine = engine or get_engine()
    args = dict(args or {})
    queue = queue or queue_for(kind)
    if kind in guards.GUARDED_KINDS:
        claim = _guarded(kind, claim)
    task_id = records.create(
        engine, kind=kind, queue=queue, args=args, app_id=app_id, claim=claim, retry_of=retry_of, task_id=task_id
    )
    try:
        app.send_task(task_name(kind), kwargs=redact(args), task_id=task_id, queue=queue)
    except (KombuOperationalError, OSError) as err:
        records.finish(engine, task_id, TaskState.FAILED, message="Could not reach the broker", error=str(err))
        raise BrokerUnavailableError(f"task {task_id} recorded but not sent: broker unreachable ({err})") from err
    return task_id


def _guarded(kind: str, claim: Callable[[Connection, str], None] | None) -> Callable[[Connection, str], None]:
    def guarded(conn: Connection, task_id: str) -> None:
        guards.take(conn, kind, task_id)
        if claim is not None:
            claim(conn, task_id)

    return guarded


def wake(task_ids: Sequence[str], *, engine: Engine | None = None) -> list[str]:
    """Send a waiting task its message again: it re-asks for its locks at its place in the queue."""
    engine = engine or get_engine()
    sent = []
    for row in records.waiting(engine, task_ids):
        app.send_task(task_name(row.type), kwargs=redact(row.args), task_id=row.id, queue=row.queue)
        sent.append(row.id)
    return sent


def stop(task_id: str, *, grace: float | None = None, engine: Engine | None = None, wait: bool = True) -> str:
    """Stop a task in any state; return the state it ends in (or is in, with wait=False).

    Queued: it never starts. Waiting: it leaves the lock queue. Running: SIGTERM (the task cleans
    up and ends `cancelled`), then SIGKILL after `grace` seconds; its locks are freed by the worker
    once the process is gone, never before.
    """
    engine = engine or get_engine()
    grace = get_settings().stop_grace_seconds if grace is None else grace
    row = records.get(engine, task_id)
    if row is None:
        raise TaskNotFoundError(f"no task with id {task_id!r}")
    if row.state in {s.value for s in FINAL_STATES}:
        return str(row.state)
    records.request_stop(engine, task_id)
    left = records.cancel_if_idle(engine, task_id)
    if left is not None:
        app.control.revoke(task_id)
        if left == TaskState.WAITING.value:
            _leave_lock_queue(task_id, engine)
        return TaskState.CANCELLED.value
    app.control.revoke(task_id, terminate=True, signal="SIGTERM")
    if not wait:
        return TaskState.RUNNING.value
    state = _wait_final(engine, task_id, grace)
    if state is None:
        logger.warning("task %s did not stop within %.1fs of SIGTERM: sending SIGKILL", task_id, grace)
        current = records.get(engine, task_id)
        if current is not None and current.worker and current.pid:
            app.control.broadcast(
                "boxtasks_kill", arguments={"task_id": task_id, "pid": current.pid}, destination=[current.worker]
            )
        state = _wait_final(engine, task_id, max(10.0, grace))
    return state or TaskState.RUNNING.value


def _leave_lock_queue(task_id: str, engine: Engine) -> None:
    manager = LockManager.from_settings()
    try:
        release = manager.release(task_id)
    finally:
        manager.dispose()
    if release.ready:
        wake([w.owner for w in release.ready], engine=engine)


def _wait_final(engine: Engine, task_id: str, seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    while True:
        row = records.get(engine, task_id)
        if row is not None and row.state in {s.value for s in FINAL_STATES}:
            return str(row.state)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)
