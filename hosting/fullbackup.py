"""The lock choreography of a full backup: every app's lock one at a time, busy apps last.

The task holds `task:fullbackup` X and `platform` S; here it takes `app:<id>` X for one app
while that app is copied. An app busy with its own task does not hold up the others: the free
ones are copied first, then the task returns to the busy ones and waits for them in turn (a
nested request: it never queues behind waiters, so it cannot deadlock with the FIFO queue).
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
    #: Apps that were busy on the first pass and copied after waiting for them.
    deferred: list[str] = field(default_factory=list)


def back_up_apps(
    ctx: TaskContext,
    app_ids: Sequence[str],
    backup_one: BackupOne,
    *,
    start: int = 0,
    end: int = 90,
    wait_timeout: float | None = None,
) -> FullBackupReport:
    """Copy each app under its own lock; percent grows from `start` to `end` app by app."""
    report = FullBackupReport()
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
        if ctx.try_acquire_more({f"app:{app_id}": "X"}) is None:
            logger.info("app %s is busy; backing it up after the others", app_id)
            busy.append(app_id)
            continue
        copy(app_id)
    for app_id in busy:
        ctx.progress(start + (end - start) * len(report.copied) // total, f"Waiting for app {app_id} to be free")
        ctx.acquire_more({f"app:{app_id}": "X"}, timeout=wait_timeout)
        report.deferred.append(app_id)
        copy(app_id)
    ctx.progress(end, f"Backed up {len(report.copied)} apps")
    return report
