"""The full backup: every app backed up under its own lock, then the box backup, retention and stale cleanup.

`tasks.kinds.fullbackup` calls `apps_to_back_up`, `back_up_apps` and `finish_full_backup`; the
platform update uses the first two for the backup it makes before updating.

The lock choreography: every app's lock one at a time, busy apps last.

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

from sqlalchemy import select

from hosting.apps import state as appstate
from hosting.apps.state import InstallState
from hosting.backups import boxbackup, retention
from hosting.backups.appbackup import create_app_backup, run_ended
from hosting.backups.store import cleanup_stale
from hosting.box import Box, resolve
from hosting.context import TaskContext
from hosting.errors import BackupError, HostingError
from hosting.events import notify
from lockman import LockLostError
from models import App

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


# ---------------------------------------------------------------------------- the steps `tasks.kinds` calls


def apps_to_back_up(ctx: TaskContext) -> list[str]:
    """Every app with backups enabled, in a stable order."""
    with ctx.fenced() as conn:
        return list(conn.execute(select(App.id).where(App.enable_backup.is_(True)).order_by(App.id)).scalars())


def backup_app_for_full_backup(ctx: TaskContext, app_id: str, *, box: Box | None = None) -> dict[str, Any]:
    """One app of a full backup, under its lock; a failure is reported and the full backup goes on."""
    box = resolve(box)
    with ctx.fenced() as conn:
        state = conn.execute(select(App.installation_state).where(App.id == app_id)).scalar()
    if state is None:
        return {"skipped": "the app was uninstalled meanwhile"}
    if state not in (InstallState.INSTALLED, InstallState.PENDING_BACKUP):
        return {"skipped": f"the app is {state}"}
    try:
        with ctx.fenced() as conn:
            appstate.begin(conn, app_id, "backup")
        try:
            record = create_app_backup(ctx, box, app_id)
        finally:
            with ctx.fenced() as conn:
                appstate.succeed(conn, app_id, "backup")
    except LockLostError:
        raise
    except HostingError as err:
        logger.warning("full backup: app %s failed: %s", app_id, err)
        return {"error": str(err)}
    return {"backupId": record.id, "size": record.size}


def finish_full_backup(ctx: TaskContext, report: FullBackupReport, *, box: Box | None = None) -> dict[str, Any]:
    """The box backup (listing the app backups it depends on), then retention and stale cleanup.

    This is where a full backup run ends, failed (an app or the box backup failed) or not.
    """
    box = resolve(box)
    try:
        result = _finish_full_backup(ctx, report, box)
    except LockLostError:
        raise
    except Exception as err:
        run_ended(ctx, box.settings, notify.FULL_BACKUP_SERIES, error=str(err) or err.__class__.__name__, app_id=None)
        raise
    run_ended(ctx, box.settings, notify.FULL_BACKUP_SERIES, error=None, app_id=None)
    return result


def _finish_full_backup(ctx: TaskContext, report: FullBackupReport, box: Box) -> dict[str, Any]:
    depends = [r["backupId"] for r in report.results.values() if isinstance(r, dict) and "backupId" in r]
    failed = {a: r["error"] for a, r in report.results.items() if isinstance(r, dict) and "error" in r}
    ctx.progress(90, "Backing up the platform's database")
    box_record = boxbackup.create_box_backup(ctx, box, depends_on=depends)
    ctx.progress(96, "Removing old backups")
    with ctx.fenced() as conn:
        stale = cleanup_stale(conn, box.settings)
    discarded = retention.apply(ctx, box.settings)
    result = {
        "boxBackupId": box_record.id,
        "appBackups": depends,
        "failed": failed,
        "skipped": {a: r["skipped"] for a, r in report.results.items() if isinstance(r, dict) and "skipped" in r},
        "staleCleaned": stale,
        "discarded": discarded,
    }
    if failed:
        names = ", ".join(f"{a} ({e})" for a, e in sorted(failed.items()))
        raise BackupError(f"full backup {box_record.id} made, but these apps could not be backed up: {names}")
    ctx.progress(100, f"Full backup {box_record.id} done")
    return result
