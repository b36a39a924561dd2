"""The task kinds, each with its lock plan (DESIGN.md "Locks"), and the periodic sweep.

Thin by design: unpack arguments, let the decorator take the locks, call `hosting`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery import Task

from config import get_settings
from hosting import operations
from hosting.apps import scheduler
from hosting.backups import fullbackup as full_backup
from tasks import broker
from tasks.celery import app
from tasks.locking import locked_task, process_runtime
from tasks.maintenance import Requeue
from tasks.maintenance import sweep as sweep_once
from tasks.runner import RunContext


@locked_task(kind="apptask", plan={"platform": "S", "app:{app_id}": "X"})
def apptask(ctx: RunContext, *, app_id: str, operation: str, options: dict[str, Any] | None = None) -> Any:
    ctx.progress(0, f"Starting {operation}")
    return operations.run(ctx, app_id, operation, options or {})


@locked_task(kind="fullbackup", plan={"task:fullbackup": "X", "platform": "S"})
def fullbackup(ctx: RunContext, *, app_ids: list[str] | None = None) -> Any:
    # Runs again from here after parking for a busy app (`back_up_apps`): nothing before the loop
    # changes anything, and the loop skips the apps its checkpoint lists.
    ids = app_ids if app_ids is not None else full_backup.apps_to_back_up(ctx)
    report = full_backup.back_up_apps(ctx, ids, full_backup.backup_app_for_full_backup, resumable=True)
    return full_backup.finish_full_backup(ctx, report)


@locked_task(kind="update", plan={"task:update": "X"})
def update(ctx: RunContext, *, release_url: str | None = None) -> Any:
    from hosting.platformops import update as platform_update

    prepared = platform_update.prepare(ctx, release_url)
    backup = platform_update.back_up(ctx, prepared)  # platform S and app locks one at a time, then given back
    ctx.progress(60, "Waiting for running app tasks to finish")
    ctx.acquire_more({"platform": "X"})
    return platform_update.apply(ctx, prepared, backup=backup)


@locked_task(kind="platformstart", plan={"task:platformstart": "X", "platform": "X"})
def platformstart(ctx: RunContext) -> Any:
    from hosting.platformops import start as platform_start

    return platform_start.start(ctx)


#: One run of an app's cron job: shared with the app's other jobs, never inside an apptask (X).
APPCRON_PLAN = {"platform": "S", "app:{app_id}": "S"}


@locked_task(kind=scheduler.KIND, plan=APPCRON_PLAN)
def appcron(ctx: RunContext, *, app_id: str, job: str, minute: str | None = None) -> Any:
    # `minute`: the one the run was sent for (part of its id and shown with its args).
    return scheduler.run_job(ctx, app_id, job)


@app.task(name="boxtasks.sweep", bind=True, ignore_result=True)
def sweep(self: Task) -> dict[str, list[str]]:
    requeue = Requeue(
        after=dt.timedelta(seconds=get_settings().requeue_after_seconds),
        ready_count=broker.ready_count,
        resend=broker.resend,
    )
    return sweep_once(process_runtime(self.request.hostname or "beat"), requeue).as_dict()
