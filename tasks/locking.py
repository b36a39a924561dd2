"""`locked_task`: a Celery task that takes its lock plan before work and gives its process back to wait.

    @locked_task(kind="apptask", plan={"platform": "S", "app:{app_id}": "X"})
    def apptask(ctx: RunContext, *, app_id: str, operation: str) -> object: ...

The plan is checked when the task is defined: modes, names (with sample values in the
`{placeholders}`), and that every placeholder is a keyword argument of the function. The body
runs in `tasks.runner.execute`, which knows nothing of Celery; this module only adapts it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import signal
import string
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task
from celery.exceptions import Ignore

from config import get_settings
from lockman import LockManager, LockPlanError, LockSet, lock_set
from models import TaskState, get_engine, records
from models.secrets import is_masked
from tasks.celery import app
from tasks.errors import TaskDefinitionError, TaskNotFoundError, TaskStopped, TaskTimedOut
from tasks.runner import Outcome, RunContext, Runtime, execute
from tasks.timelimits import limits_for

logger = logging.getLogger(__name__)

Body = Callable[..., Any]
F = TypeVar("F", bound=Body)

#: Kinds defined in this process, name -> queue (a wake-up goes back to the task's queue).
KINDS: dict[str, str] = {}


def _placeholders(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def check_plan(kind: str, plan: Mapping[str, str], fn: Body) -> None:
    """Refuse a wrong plan now, with a message that names the fix."""
    if not plan:
        raise TaskDefinitionError(
            f"task {kind!r}: empty lock plan; declare at least one lock, e.g. {{'platform': 'S'}}"
        )
    params = inspect.signature(fn).parameters
    sample: dict[str, str] = {}
    for template in plan:
        for field in _placeholders(template):
            if field not in params:
                raise TaskDefinitionError(
                    f"task {kind!r}: lock {template!r} names {{{field}}}, which is not an argument of "
                    f"{fn.__name__}(); add the argument or fix the lock name"
                )
            sample[field] = "sample"
    try:
        lock_set({t.format(**sample): m for t, m in plan.items()})
    except LockPlanError as err:
        raise TaskDefinitionError(f"task {kind!r}: {err}") from err


def render_plan(plan: Mapping[str, str], kwargs: Mapping[str, Any]) -> LockSet:
    """The concrete locks for one call; an argument that makes a bad lock name is refused."""
    values = {f: str(kwargs[f]) for t in plan for f in _placeholders(t) if f in kwargs}
    missing = {f for t in plan for f in _placeholders(t)} - set(values)
    if missing:
        raise LockPlanError(f"missing argument(s) for the lock plan: {', '.join(sorted(missing))}")
    return lock_set({t.format(**values): m for t, m in plan.items()})


@functools.cache
def _process_runtime(pid: int, worker: str) -> Runtime:
    """One Runtime per worker process (keyed by pid: a forked child builds its own)."""
    from tasks.client import wake

    settings = get_settings()
    manager = LockManager.from_settings()
    return Runtime(
        manager=manager,
        engine=get_engine(),
        worker=worker,
        pid=pid,
        lease=manager.lease,
        heartbeat_interval=settings.heartbeat_interval,
        wake=wake,
    )


def process_runtime(worker: str) -> Runtime:
    return _process_runtime(os.getpid(), worker)


@contextmanager
def stop_on_sigterm(*, ignore_after: float | None = None) -> Iterator[None]:
    """Turn the first SIGTERM (a stop) into TaskStopped in the task's thread; later ones are ignored.

    `ignore_after` (a `time.monotonic()` instant, the soft time limit): a SIGTERM after it is the pool
    killing the task at its hard limit (SIGTERM, SIGKILL a moment later), not a stop: it is ignored,
    so the task never ends `cancelled` for it; the worker marks it once the process is gone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if fired or (ignore_after is not None and time.monotonic() >= ignore_after):
            return
        fired = True
        raise TaskStopped(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def task_args(ctx: RunContext, sent: Mapping[str, Any]) -> dict[str, Any]:
    """The args the body runs with: the message's, or, when it masked secrets, the task row's.

    `tasks.client` sends args with their secrets masked, so the broker and Flower never hold
    them; the row keeps them whole. Read once the task runs (claimed, locks granted), so a
    waiting task costs no read; a message without a mask is the args as they are.
    """
    if not is_masked(sent):
        return dict(sent)
    row = records.get(ctx.runtime.engine, ctx.task_id)
    if row is None or not isinstance(row.args, dict):
        raise TaskNotFoundError(f"task {ctx.task_id}: its row has no args to run with")
    return dict(row.args)


def _timed(body: Callable[[RunContext], Any], soft: float | None) -> Callable[[RunContext], Any]:
    """`body`, with the pool's soft time limit turned into TaskTimedOut (the task ends `failed`, and says why)."""

    def run(ctx: RunContext) -> Any:
        try:
            return body(ctx)
        except SoftTimeLimitExceeded as err:
            raise TaskTimedOut(f"timed out after {soft:g}s (soft time limit)") from err

    return run


class LockedTask(Task):  # type: ignore[misc]
    """Base for locked tasks: runs the body through `tasks.runner`, mirrors progress to Flower."""

    kind: str = ""
    plan: Mapping[str, str] = {}
    body: Body
    #: The worker's request class: time limits by kind and app operation, from settings.
    Request = "tasks.timelimits:LimitedRequest"
    #: Acknowledged when a process takes it, not when it ends (hours later): see config.celery.
    acks_late = False

    def run(self, **kwargs: Any) -> Any:
        task_id = self.request.id
        runtime = process_runtime(self.request.hostname or "local")
        try:
            locks = render_plan(self.plan, kwargs)
        except LockPlanError as err:
            # Arguments no lock can be named from: the task can never run. Say so in its row, which
            # would otherwise stay `queued` for good.
            records.finish(runtime.engine, task_id, TaskState.FAILED, message=f"Bad arguments: {err}", error=str(err))
            raise
        runtime.mirror = functools.partial(self._mirror, kwargs=kwargs)
        limits = limits_for(self.kind, kwargs)
        soft = limits[0] if limits is not None else None
        body = _timed(lambda ctx: type(self).body(ctx, **task_args(ctx, kwargs)), soft)
        with stop_on_sigterm(ignore_after=None if soft is None else time.monotonic() + soft):
            result = execute(runtime, task_id, self.kind, locks, body)
        if result.outcome is Outcome.WAITING:
            self.send_event("task-waiting", message=result.message, kind=self.kind, result=result.message)
            raise Ignore()
        if result.outcome is Outcome.SKIPPED:
            logger.info("task %s skipped: %s", task_id, result.message)
            raise Ignore()
        if result.outcome is Outcome.CANCELLED:
            self.send_event("task-cancelled", message=result.message, kind=self.kind, result=result.message)
            raise Ignore()
        if result.outcome is Outcome.FAILED:
            assert result.error is not None
            raise result.error
        return result.value

    def _mirror(self, percent: int, message: str, *, kwargs: Mapping[str, Any]) -> None:
        # Flower applies any `task-*` event to its task record: custom fields show its progress.
        # `result` is one of the fields Flower's API returns, so the progress is shown there too.
        self.send_event(
            "task-progress",
            percent=percent,
            message=message,
            kind=self.kind,
            app_id=kwargs.get("app_id"),
            result=f"{percent}% {message}",
        )


def locked_task(
    *, kind: str, plan: Mapping[str, str], queue: str | None = None, **options: Any
) -> Callable[[F], LockedTask]:
    """Declare a task kind with its lock plan; the body is `fn(ctx: RunContext, **kwargs)`."""
    if not kind.isidentifier():
        raise TaskDefinitionError(f"task kind {kind!r} must be a Python identifier, like 'apptask'")

    def decorate(fn: F) -> LockedTask:
        check_plan(kind, plan, fn)
        from tasks.client import queue_for, task_name

        chosen = queue or queue_for(kind)
        KINDS[kind] = chosen
        task = app.task(
            name=task_name(kind),
            base=LockedTask,
            bind=True,
            queue=chosen,
            kind=kind,
            plan=dict(plan),
            body=staticmethod(fn),
            **options,
        )(LockedTask.run)
        return task  # type: ignore[no-any-return]

    return decorate


__all__ = ["KINDS", "LockedTask", "RunContext", "check_plan", "locked_task", "render_plan", "task_args"]
