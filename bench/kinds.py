"""Task kinds for `bench/task_rates.py`, declared with the production decorator.

Workers load them with `celery -A tasks worker -I bench.kinds`. Every kind takes its queue from
`enqueue(..., queue=...)`, so one bench run uses queues nobody else consumes.

Bodies return wall-clock stamps (`time.time()`, one host) of where they began and ended, so the
bench can measure hand-off and recovery from inside the body, not from the record around it.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from celery import Task
from celery.backends.database import DatabaseBackend
from celery.signals import worker_init

from config import get_settings
from models import TaskState, get_engine, records
from models.engine import driver_connect_args
from tasks.celery import app
from tasks.locking import locked_task
from tasks.runner import RunContext

#: An apptask's plan (DESIGN.md "Locks").
APP_PLAN = {"platform": "S", "app:{app_id}": "X"}
#: The old way: one lock for everything.
GLOBAL_PLAN = {"global": "X"}
#: A full backup's plan; it then takes `app:<id>` X per app while copying it.
BACKUP_PLAN = {"task:fullbackup": "X", "platform": "S"}
#: How often a working body reports progress (a row write and a Celery event, like a real task).
STEP = 0.25


def _work(ctx: RunContext, seconds: float, label: str) -> dict[str, float]:
    start = time.time()
    steps = max(1, round(seconds / STEP))
    for i in range(steps):
        ctx.progress(1 + 98 * i // steps, f"{label} step {i + 1}/{steps}")
        time.sleep(seconds / steps)
    return {"start": start, "end": time.time()}


@app.task(name="bench.bare", ignore_result=True)  # type: ignore[untyped-decorator]
def bench_bare() -> None:
    """The baseline of (a): a bare Celery task that writes nothing anywhere."""


@functools.cache
def _database_backend() -> DatabaseBackend:
    """Celery's database result backend on the bench's own database, set up as a deployment would:
    made in the worker's main process (so each pool process gets a pooled engine after the fork,
    not a new connection per task) and with the driver arguments our own engines use."""
    url = get_settings().effective_database_url
    return DatabaseBackend(url=url, app=app, engine_options={"connect_args": driver_connect_args(url)})


@worker_init.connect  # type: ignore[untyped-decorator]
def _make_backend_before_the_fork(**_: Any) -> None:
    _database_backend()


class _RecordedByCelery(Task):  # type: ignore[misc]
    """A task whose state Celery itself keeps in the database: STARTED (track_started) and SUCCESS
    rows in `celery_taskmeta`, as Celery does when given a database result backend (boxtasks's
    own configuration keeps none: its record is the tasks table)."""

    @property
    def backend(self) -> DatabaseBackend:
        return _database_backend()


@app.task(name="bench.celery_db", base=_RecordedByCelery, ignore_result=False)  # type: ignore[untyped-decorator]
def bench_celery_db() -> None:
    """A Celery no-op that Celery records in the same database: a reference for (a)."""


@app.task(name="boxtasks.bench_row_only", bind=True)  # type: ignore[untyped-decorator]
def bench_row_only(self: Task) -> None:
    """The task row and nothing else: claimed and finished as a locked task's row is, with no locks.

    Sent with `tasks.client.enqueue` (which writes the row first), like the locked kinds: the part of
    a locked task's cost that any design keeping a durable record of each task pays.
    """
    engine = get_engine()
    if records.claim(engine, self.request.id, worker=self.request.hostname or "", pid=os.getpid()).claimed:
        records.finish(engine, self.request.id, TaskState.SUCCEEDED, message="Done")


@locked_task(kind="bench_noop", plan=APP_PLAN)
def bench_noop(ctx: RunContext, *, app_id: str) -> None:
    """A locked apptask whose body does nothing."""


@locked_task(kind="bench_app", plan=APP_PLAN)
def bench_app(ctx: RunContext, *, app_id: str, seconds: float = 0.0) -> dict[str, float]:
    if seconds <= 0:
        now = time.time()
        return {"start": now, "end": now}
    return _work(ctx, seconds, f"app {app_id}")


@locked_task(kind="bench_backup", plan=BACKUP_PLAN)
def bench_backup(ctx: RunContext, *, app_ids: list[str], seconds_per_app: float) -> dict[str, Any]:
    from hosting.backups.fullbackup import back_up_apps

    # The body runs again after each park for a busy app: its first start is kept in the checkpoint.
    start = ctx.checkpoint.setdefault("start", time.time())

    def copy(inner: Any, app_id: str) -> dict[str, float]:
        return _work(ctx, seconds_per_app, f"backup {app_id}")

    report = back_up_apps(ctx, app_ids, copy, resumable=True)
    return {"start": start, "end": time.time(), "copied": report.copied, "deferred": report.deferred}


@locked_task(kind="bench_global_app", plan=GLOBAL_PLAN)
def bench_global_app(ctx: RunContext, *, app_id: str, seconds: float = 0.0) -> dict[str, float]:
    return _work(ctx, seconds, f"app {app_id}")


@locked_task(kind="bench_global_backup", plan=GLOBAL_PLAN)
def bench_global_backup(ctx: RunContext, *, app_ids: list[str], seconds_per_app: float) -> dict[str, Any]:
    start = time.time()
    for app_id in app_ids:
        _work(ctx, seconds_per_app, f"backup {app_id}")
    return {"start": start, "end": time.time(), "copied": list(app_ids), "deferred": []}
