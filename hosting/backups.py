"""App backups: a row per backup (creating -> normal | error) and its archive in the backup directory.

The row is written `creating` before the first byte, and marked `normal` (with size and sha256)
only after the archive is complete, fsynced, read back and renamed into place (`hosting.archive`).
A task killed half-way leaves a `creating` row and at most a temp file: `cleanup_stale` turns it
into `error` once its task is gone. Every backup end, success included, is written to the eventlog
(`notify.backup_finished`); every backup *run* end (one app backup task, one full backup task) goes
through `notify.backup_run_finished`, whose rule counts the latest runs ("the last 5 backups failed").

Also here: the `backup` app operation and the full backup's three steps that `tasks.kinds` calls.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from config import Settings
from hosting import appstate, archive, notify, ports
from hosting.appstate import InstallState
from hosting.box import Box, resolve
from hosting.context import TaskContext
from hosting.errors import BackupError, BackupNotFoundError, CorruptBackupError, HostingError
from hosting.fullbackup import FullBackupReport
from hosting.manifest import parse_manifest
from hosting.operations import operation
from hosting.options import NoOptions, check_app_id, parse
from lockman import LockLostError
from models import App, Backup, Task, TaskState, db_utcnow

logger = logging.getLogger(__name__)

#: Inside an app backup: the app's data directory and its config as of the backup.
DATA = "data"
APP_CONFIG = "app.json"


class BackupState:
    CREATING = "creating"
    NORMAL = "normal"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class BackupRecord:
    id: str
    path: str
    size: int
    sha256: str
    app_config: dict[str, Any] | None = None
    depends_on: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- ids and places


def backup_id(kind: str, app_id: str | None, version: str, *, now: dt.datetime | None = None) -> str:
    """`app_<appid>_<UTC stamp>_v<version>` (or `box_<stamp>_v<version>`): no "/", usable in a REST route."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    safe_version = "".join(c if c.isalnum() or c in ".-" else "-" for c in version)[:24]
    return f"{kind}_{app_id}_{stamp}_v{safe_version}" if app_id else f"{kind}_{stamp}_v{safe_version}"


def storage_path(kind: str, app_id: str | None, bid: str) -> str:
    """Where the archive lives, relative to the backup directory (kept apart from the id)."""
    return f"apps/{app_id}/{bid}{archive.SUFFIX}" if kind == "app" else f"box/{bid}{archive.SUFFIX}"


def file_of(settings: Settings, relative: str) -> Path:
    """The archive's host path; a stored path that would leave the backup directory is refused."""
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise CorruptBackupError(f"backup path {relative!r} leaves the backup directory; the row is damaged")
    return settings.resolved_backup_dir / rel


# ---------------------------------------------------------------------------- the app's config


def app_config(conn: Connection, app_id: str) -> dict[str, Any]:
    """Everything clone and restore need besides the data: as the app is now, inside the caller's transaction."""
    app = conn.execute(select(App.__table__).where(App.id == app_id)).first()
    if app is None:
        raise BackupNotFoundError(f"no app {app_id!r} to back up; check the id")
    manifest = parse_manifest(app.manifest)
    bound = ports.bindings_of(conn, app_id, manifest)
    return {
        "appId": app_id,
        "appStoreId": app.app_store_id,
        "manifest": dict(app.manifest),
        "version": app.version,
        "location": app.location,
        "runState": app.run_state,
        "notes": app.notes,
        "operators": list(app.operators or []),
        "checklist": dict(app.checklist or {}),
        "ports": ports.as_ports(bound),
        "portBindings": {b.env_var: {"hostPort": b.host_port, "count": b.count, "type": b.type} for b in bound},
        "resources": {"cpuShares": app.cpu_shares, "cpuQuota": app.cpu_quota, "memoryLimit": app.memory_limit},
        "env": dict(app.env or {}),
        "enableBackup": bool(app.enable_backup),
        "enableMailbox": bool(app.enable_mailbox),
    }


# ---------------------------------------------------------------------------- making one


def create_app_backup(
    ctx: TaskContext, box: Box, app_id: str, *, percent: tuple[int, int] | None = None
) -> BackupRecord:
    """Archive the app's data and config; the caller holds `app:<id>` X. Raises BackupError (row: error)."""
    data_dir = box.app_dir(app_id) / DATA
    with ctx.fenced() as conn:
        config = app_config(conn, app_id)
        bid = backup_id("app", app_id, config["version"])
        path = storage_path("app", app_id, bid)
        conn.execute(
            insert(Backup).values(
                id=bid,
                path=path,
                type="app",
                app_id=app_id,
                version=config["version"],
                state=BackupState.CREATING,
                format=archive.FORMAT,
                depends_on=[],
                app_config=config,
                task_id=ctx.task_id,
            )
        )
    source = {"taskId": ctx.task_id, "appId": app_id}
    if not data_dir.is_dir():
        # Every installed app has one (made on install and repair): backing up nothing would let
        # retention drop the good backups. Refuse, and say how to get it back.
        message = (
            f"the data directory of app {app_id} ({data_dir}) is missing: not backing up nothing; "
            "restore the app from its last backup, or repair it to start afresh"
        )
        finish(ctx, box.settings, bid, error=message, source=source)
        raise BackupError(message)
    if percent:
        ctx.progress(percent[0], f"Backing up the data of app {app_id}")
    contents = archive.Contents(dirs={DATA: data_dir}, files={}, documents={APP_CONFIG: config})
    written = write_or_fail(ctx, box.settings, bid, path, contents, source=source)
    if percent:
        ctx.progress(percent[1], f"Backup {bid} written ({written.size} bytes)")
    return BackupRecord(bid, path, written.size, written.sha256, config)


def write_or_fail(
    ctx: TaskContext, settings: Settings, bid: str, path: str, contents: archive.Contents, *, source: dict[str, Any]
) -> archive.Written:
    """Write the archive, then mark the row normal; on failure mark it error. Either way, tell notify."""
    try:
        written = archive.write(file_of(settings, path), contents)
    except LockLostError:
        raise
    except Exception as err:
        message = str(err) or err.__class__.__name__
        finish(ctx, settings, bid, error=message, source=source)
        if isinstance(err, HostingError):
            raise
        raise BackupError(f"backup {bid} failed: {message}") from err
    try:
        finish(ctx, settings, bid, written=written, source=source)
    except LockLostError:
        # We may not write: the row stays `creating` and stale cleanup turns it into `error`.
        archive.remove(file_of(settings, path))
        raise
    return written


def finish(
    ctx: TaskContext,
    settings: Settings,
    bid: str,
    *,
    written: archive.Written | None = None,
    error: str | None = None,
    source: dict[str, Any] | None = None,
) -> None:
    """End a backup: `normal` with size and checksum, or `error` with the reason; one backup.finish event."""
    try:
        with ctx.fenced() as conn:
            if written is not None:
                values: dict[str, Any] = {"state": BackupState.NORMAL, "size": written.size, "checksum": written.sha256}
            else:
                values = {"state": BackupState.ERROR, "error": (error or "failed")[:1024]}
            conn.execute(update(Backup).where(Backup.id == bid, Backup.state == BackupState.CREATING).values(**values))
            outcome = notify.backup_finished(conn, settings, backup_id=bid, error=error, source=source)
    except LockLostError:
        raise
    except Exception:
        if written is not None:
            raise
        logger.exception("backup %s: could not record that it failed", bid)
        return
    notify.deliver(settings, outcome)


# ---------------------------------------------------------------------------- reading one


def load(conn: Connection, bid: str) -> Any:
    row = conn.execute(select(Backup.__table__).where(Backup.id == bid)).first()
    if row is None:
        raise BackupNotFoundError(f"no backup {bid!r}; list the backups with `boxtasks backup list`")
    return row


def usable(conn: Connection, settings: Settings, bid: str, *, kind: str = "app") -> tuple[Any, Path]:
    """A normal backup of `kind` and its archive, checksum verified; CorruptBackupError before anything else."""
    row = load(conn, bid)
    if row.type != kind:
        raise BackupNotFoundError(f"backup {bid} is a {row.type} backup, not an {kind} backup")
    if row.state != BackupState.NORMAL:
        raise BackupError(f"backup {bid} is {row.state}, not normal: it cannot be restored; choose another backup")
    return row, file_of(settings, row.path)


def verify(settings: Settings, row: Any) -> Path:
    """The archive of `row`, read in full against its recorded checksum and size, every member inside
    its target; an app backup's `data` is a directory (it becomes the app's data directory)."""
    path = file_of(settings, row.path)
    members = archive.verify(path, sha256=row.checksum, size=row.size)
    if row.type == "app":
        for member in members:
            if member.name.rstrip("/") in (DATA, f"./{DATA}") and not member.isdir():
                raise CorruptBackupError(
                    f"backup archive {path} is corrupt: its {DATA!r} is not a directory; "
                    "it is refused and nothing was restored"
                )
    return path


# ---------------------------------------------------------------------------- the `backup` app operation


@operation("backup")
def backup(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> dict[str, Any]:
    """Back up one app. The app stays usable; a failed backup leaves it `installed` and the row `error`."""
    box = resolve(box)
    check_app_id(app_id)
    parse(NoOptions, "backup", options)
    with ctx.fenced() as conn:
        appstate.begin(conn, app_id, "backup")
    series = notify.app_series(app_id)
    try:
        record = create_app_backup(ctx, box, app_id, percent=(10, 90))
    except LockLostError:
        raise
    except Exception as err:
        run_ended(ctx, box.settings, series, error=str(err) or err.__class__.__name__, app_id=app_id)
        raise
    finally:
        # A backup changes nothing in the app, so whatever happened it is as it was: installed.
        try:
            with ctx.fenced() as conn:
                appstate.succeed(conn, app_id, "backup")
        except LockLostError:
            pass
    run_ended(ctx, box.settings, series, error=None, app_id=app_id)
    ctx.progress(100, f"Backed up as {record.id}")
    return {"appId": app_id, "backupId": record.id, "size": record.size, "checksum": record.sha256}


# ---------------------------------------------------------------------------- the full backup (tasks.kinds)


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


def run_ended(ctx: TaskContext, settings: Settings, series: str, *, error: str | None, app_id: str | None) -> None:
    """Record the end of this task's backup run (`notify.backup_run_finished`), then send its email."""
    source = {"taskId": ctx.task_id, "appId": app_id} if app_id else {"taskId": ctx.task_id}
    try:
        with ctx.fenced() as conn:
            outcome = notify.backup_run_finished(
                conn, settings, task_id=ctx.task_id, series=series, error=error, source=source
            )
    except LockLostError:  # the task lost its locks: it may write nothing; the run goes unrecorded
        logger.warning("task %s lost its locks: the end of its backup run is not recorded", ctx.task_id)
        return
    notify.deliver(settings, outcome)


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
    from hosting import boxbackup, retention

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


# ---------------------------------------------------------------------------- stale `creating` backups


def cleanup_stale(conn: Connection, settings: Settings, *, older_than: dt.timedelta | None = None) -> list[str]:
    """`creating` backups older than the threshold whose task is gone: `error`, and their files removed."""
    now = conn.execute(select(db_utcnow())).scalar_one()
    cutoff = now - (older_than if older_than is not None else dt.timedelta(hours=settings.backup_stale_hours))
    lease_cutoff = now - dt.timedelta(seconds=settings.lock_lease_seconds)
    live_task = and_(
        Task.id == Backup.task_id,
        or_(
            Task.state.in_([TaskState.QUEUED.value, TaskState.WAITING.value]),
            and_(Task.state == TaskState.RUNNING.value, Task.heartbeat_at >= lease_cutoff),
        ),
    )
    rows = conn.execute(
        select(Backup.id, Backup.path, Backup.task_id, Backup.app_id).where(
            Backup.state == BackupState.CREATING,
            Backup.created_at <= cutoff,
            ~select(Task.id).where(live_task).exists(),
        )
    ).all()
    cleaned = []
    for row in rows:
        archive.remove(file_of(settings, row.path))
        changed = conn.execute(
            update(Backup)
            .where(Backup.id == row.id, Backup.state == BackupState.CREATING)
            .values(state=BackupState.ERROR, error=f"abandoned: its task {row.task_id} ended before it finished")
        ).rowcount
        if changed:
            cleaned.append(row.id)
            logger.warning("backup %s was abandoned by task %s: marked error", row.id, row.task_id)
            if row.app_id:
                _unstick(conn, row.app_id)
    return cleaned


def _unstick(conn: Connection, app_id: str) -> None:
    """An app left `pending_backup` by a dead backup is `installed` again (a backup changed nothing in it).

    Only when no task of the app is under way; one that starts right after finds it `installed`,
    which a backup may start from as well.
    """
    busy = (
        select(Task.id)
        .where(
            Task.app_id == app_id,
            Task.state.in_([TaskState.QUEUED.value, TaskState.WAITING.value, TaskState.RUNNING.value]),
        )
        .exists()
    )
    conn.execute(
        update(App)
        .where(App.id == app_id, App.installation_state == InstallState.PENDING_BACKUP.value, ~busy)
        .values(installation_state=InstallState.INSTALLED.value, updated_at=db_utcnow())
    )
