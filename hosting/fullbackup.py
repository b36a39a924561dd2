"""The lock choreography of a full backup: every app's lock one at a time, busy apps last.

The task holds `task:fullbackup` X and `platform` S; here it takes `app:<id>` X for one app
while that app is copied. An app busy with its own task does not hold up the others: the free
ones are copied first, then the task returns to the busy ones and waits for them in turn (a
nested request: it never queues behind waiters, so it cannot deadlock with the FIFO queue).
Under Celery that wait parks the task (`TaskContext.wait_for_more`): its worker process runs
other tasks meanwhile, and the task resumes from its checkpoint, skipping the apps it copied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hosting.context import TaskContext

logger = logging.getLogger(__name__)

BackupOne = Callable[[TaskContext, str], Any]


@dataclass
class FullBackupReport:
    copied: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    #: Apps that were busy when first tried, and copied after the others.
    deferred: list[str] = field(default_factory=list)


def back_up_apps(
    ctx: TaskContext,
    app_ids: Sequence[str],
    backup_one: BackupOne,
    *,
    start: int = 0,
    end: int = 90,
    resumable: bool = False,
) -> FullBackupReport:
    """Copy each app under its own lock; percent grows from `start` to `end` app by app.

    `resumable`: the caller's body may run again from its start (a full backup task is just this
    loop and what follows it), so a busy app parks the task instead of holding its process;
    what was copied is in `ctx.checkpoint` and is skipped on the next run. Otherwise (the backup
    inside an update, whose body must not run twice) the task waits for a busy app in place.
    """
    done = ctx.checkpoint.setdefault("fullbackup", {"copied": [], "results": {}, "deferred": []})
    # The report's lists are the checkpoint's: every copy is recorded there as it happens.
    report = FullBackupReport(copied=done["copied"], results=done["results"], deferred=done["deferred"])
    total = max(1, len(app_ids))

    def copy(app_id: str) -> None:
        ctx.progress(start + (end - start) * len(report.copied) // total, f"Backing up app {app_id}")
        try:
            report.results[app_id] = backup_one(ctx, app_id)
        finally:
            ctx.release_some([f"app:{app_id}"])
        report.copied.append(app_id)

    busy: list[str] = []
    for app_id in app_ids:
        if app_id in report.results:
            continue  # copied before the task parked
        if ctx.try_acquire_more({f"app:{app_id}": "X"}) is None:
            logger.info("app %s is busy; backing it up after the others", app_id)
            busy.append(app_id)
            if app_id not in report.deferred:
                report.deferred.append(app_id)
            continue
        copy(app_id)
    for app_id in busy:
        ctx.progress(start + (end - start) * len(report.copied) // total, f"Waiting for app {app_id} to be free")
        if resumable:  # parks when the app is still busy: the process goes to other tasks meanwhile
            ctx.wait_for_more({f"app:{app_id}": "X"})
        else:
            ctx.acquire_more({f"app:{app_id}": "X"})
        copy(app_id)
    ctx.progress(end, f"Backed up {len(report.copied)} apps")
    return report
