"""Backup rows and their files: the piece app, box and full backups, restore and retention share.

A row per backup (creating -> normal | error) and its archive in the backup directory. The row is
written `creating` before the first byte, and marked `normal` (with size and sha256) only after the
archive is complete, fsynced, read back and renamed into place (`hosting.backups.fileformat`).
A task killed half-way leaves a `creating` row and at most a temp file: `cleanup_stale` turns it
into `error` once its task is gone. Every backup end, success included, is written to the eventlog
(`notify.backup_finished`).

What makes one: `appbackup` (one app), `boxbackup` (the platform's database), `fullbackup` (both).
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from config import Settings
from hosting.apps import databases
from hosting.apps.state import InstallState
from hosting.backups import fileformat
from hosting.backups.appconfig import AppConfig
from hosting.context import TaskContext
from hosting.errors import BackupError, BackupNotFoundError, CorruptBackupError, HostingError
from hosting.events import notify
from lockman import LockLostError
from models import App, Backup, Task, TaskState, db_utcnow

logger = logging.getLogger(__name__)

#: Inside an app backup: the app's data directory, its config as of the backup, and (reserved, apart from
#: the data) the dumps of its databases, `addons/<hosting.apps.databases.DUMP_FILES[addon]>`.
DATA = "data"
APP_CONFIG = "app.json"
ADDONS = "addons"


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
    app_config: AppConfig | None = None
    depends_on: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- ids and places


def backup_id(kind: str, app_id: str | None, version: str, *, now: dt.datetime | None = None) -> str:
    """`app_<appid>_<UTC stamp>_v<version>` (or `box_<stamp>_v<version>`): no "/", usable in a REST route."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    safe_version = "".join(c if c.isalnum() or c in ".-" else "-" for c in version)[:24]
    return f"{kind}_{app_id}_{stamp}_v{safe_version}" if app_id else f"{kind}_{stamp}_v{safe_version}"


def storage_path(kind: str, app_id: str | None, bid: str) -> str:
    """Where the archive lives, relative to the backup directory (kept apart from the id)."""
    return f"apps/{app_id}/{bid}{fileformat.SUFFIX}" if kind == "app" else f"box/{bid}{fileformat.SUFFIX}"


def dumps_prefix(bid: str) -> str:
    """The name of the temporary directory an app backup dumps its databases into starts so (beside its archive)."""
    return f".dumps-{bid}-"


def file_of(settings: Settings, relative: str) -> Path:
    """The archive's host path; a stored path that would leave the backup directory is refused."""
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise CorruptBackupError(f"backup path {relative!r} leaves the backup directory; the row is damaged")
    return settings.resolved_backup_dir / rel


# ---------------------------------------------------------------------------- writing one


def write_or_fail(
    ctx: TaskContext, settings: Settings, bid: str, path: str, contents: fileformat.Contents, *, source: dict[str, Any]
) -> fileformat.Written:
    """Write the archive, then mark the row normal; on failure mark it error. Either way, tell notify."""
    try:
        written = fileformat.write(file_of(settings, path), contents)
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
        fileformat.remove(file_of(settings, path))
        raise
    return written


def finish(
    ctx: TaskContext,
    settings: Settings,
    bid: str,
    *,
    written: fileformat.Written | None = None,
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
    return verify_app(settings, row)[0]


def verify_app(settings: Settings, row: Any) -> tuple[Path, dict[str, str]]:
    """`verify`, and the database dumps the archive holds: addon -> member name (`addons/…`, regular files)."""
    path = file_of(settings, row.path)
    members = fileformat.verify(path, sha256=row.checksum, size=row.size)
    dumps: dict[str, str] = {}
    if row.type == "app":
        names = {file: addon for addon, file in databases.DUMP_FILES.items()}
        for member in members:
            name = posixpath.normpath(member.name)
            if name == DATA and not member.isdir():
                raise CorruptBackupError(
                    f"backup archive {path} is corrupt: its {DATA!r} is not a directory; "
                    "it is refused and nothing was restored"
                )
            if name == ADDONS and not member.isdir():
                raise CorruptBackupError(f"backup archive {path} is corrupt: its {ADDONS!r} is not a directory")
            top, _, rest = name.partition("/")
            if top == ADDONS and rest:
                if rest not in names or not member.isreg():
                    raise CorruptBackupError(
                        f"backup archive {path} is corrupt: {member.name!r} is not a database dump it can hold"
                    )
                dumps[names[rest]] = name
    return path, dumps


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
        archive = file_of(settings, row.path)
        fileformat.remove(archive)
        for leftover in archive.parent.glob(f"{dumps_prefix(row.id)}*"):  # its database dumps, if it got that far
            shutil.rmtree(leftover, ignore_errors=True)
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
