"""One app's backup: its data directory, a dump of each of its databases and its config (`AppConfig`) as of
now, in one checksummed archive; and the `backup` operation.

The dumps (`hosting.apps.databases.dump`: mysqldump `--single-transaction`, pg_dump, of the app's own
database only) are written by the tools straight to a 0600 file in a private temporary directory beside
the archive, which the archive writer then adds under `addons/` like any file: no dump is held in
memory. The config records which addons were dumped (`databaseDumps`).

The caller holds `app:<id>` X. Every backup *run* end (one app backup task, one full backup task)
goes through `notify.backup_run_finished`, whose rule counts the latest runs ("the last 5 backups failed").
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from config import Settings
from config.filemodes import private_dir
from hosting.apps import addons, databases, ports
from hosting.apps import state as appstate
from hosting.apps.manifest import parse_manifest
from hosting.apps.options import NoOptions, check_app_id, parse
from hosting.backups import fileformat
from hosting.backups.appconfig import AppConfig, PortBindingConfig, ResourcesConfig
from hosting.backups.store import (
    ADDONS,
    APP_CONFIG,
    DATA,
    BackupRecord,
    BackupState,
    backup_id,
    dumps_prefix,
    file_of,
    finish,
    storage_path,
    write_or_fail,
)
from hosting.box import Box, resolve
from hosting.context import TaskContext
from hosting.errors import BackupError, BackupNotFoundError
from hosting.events import notify
from hosting.operations import operation
from lockman import LockLostError
from models import App, Backup

logger = logging.getLogger(__name__)


def app_config(conn: Connection, app_id: str) -> AppConfig:
    """Everything clone and restore need besides the data: as the app is now, inside the caller's transaction."""
    app = conn.execute(select(App.__table__).where(App.id == app_id)).first()
    if app is None:
        raise BackupNotFoundError(f"no app {app_id!r} to back up; check the id")
    manifest = parse_manifest(app.manifest)
    bound = ports.bindings_of(conn, app_id, manifest)
    return AppConfig(
        app_id=app_id,
        app_store_id=app.app_store_id,
        manifest=dict(app.manifest),
        version=app.version,
        location=app.location,
        run_state=app.run_state,
        notes=app.notes,
        operators=list(app.operators or []),
        checklist=dict(app.checklist or {}),
        ports=ports.as_ports(bound),
        port_bindings={b.env_var: PortBindingConfig(host_port=b.host_port, count=b.count, type=b.type) for b in bound},
        resources=ResourcesConfig(cpu_shares=app.cpu_shares, cpu_quota=app.cpu_quota, memory_limit=app.memory_limit),
        env=dict(app.env or {}),
        enable_backup=bool(app.enable_backup),
        enable_mailbox=bool(app.enable_mailbox),
        database_dumps=[a for a in databases.DUMPABLE if a in addons.stored(conn, app_id)],
    )


# ---------------------------------------------------------------------------- making one


def create_app_backup(
    ctx: TaskContext, box: Box, app_id: str, *, percent: tuple[int, int] | None = None
) -> BackupRecord:
    """Archive the app's data and config; the caller holds `app:<id>` X. Raises BackupError (row: error)."""
    data_dir = box.app_dir(app_id) / DATA
    with ctx.fenced() as conn:
        config = app_config(conn, app_id)
        version = str(config.version)
        bid = backup_id("app", app_id, version)
        path = storage_path("app", app_id, bid)
        conn.execute(
            insert(Backup).values(
                id=bid,
                path=path,
                type="app",
                app_id=app_id,
                version=version,
                state=BackupState.CREATING,
                format=fileformat.FORMAT,
                depends_on=[],
                app_config=config.to_json(),
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
    with contextlib.ExitStack() as stack:
        files: dict[str, Path] = {}
        if config.database_dumps:
            if percent:
                ctx.progress(percent[0], f"Dumping the databases of app {app_id}")
            try:
                dumped = _dump(ctx, box, app_id, config.database_dumps, bid, path, stack)
            except LockLostError:
                raise
            except Exception as err:
                message = f"cannot dump the databases of app {app_id}: {err}"
                finish(ctx, box.settings, bid, error=message, source=source)
                raise BackupError(message) from err
            files = {f"{ADDONS}/{p.name}": p for p in dumped.values()}
        if percent:
            ctx.progress(percent[0], f"Backing up the data of app {app_id}")
        contents = fileformat.Contents(dirs={DATA: data_dir}, files=files, documents={APP_CONFIG: config.to_json()})
        written = write_or_fail(ctx, box.settings, bid, path, contents, source=source)
    if percent:
        ctx.progress(percent[1], f"Backup {bid} written ({written.size} bytes)")
    return BackupRecord(bid, path, written.size, written.sha256, config)


def _dump(
    ctx: TaskContext, box: Box, app_id: str, wanted: list[str], bid: str, path: str, stack: contextlib.ExitStack
) -> dict[str, Path]:
    """Each wanted database dumped into a private temporary directory beside the archive (same filesystem,
    0700, removed when `stack` closes; one a killed task left goes with its stale row, `store.cleanup_stale`)."""
    archive = file_of(box.settings, path)
    private_dir(archive.parent)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=archive.parent, prefix=dumps_prefix(bid))))
    with ctx.fenced() as conn:
        configs = addons.stored(conn, app_id)
    missing = [a for a in wanted if a not in configs]
    if missing:
        raise BackupError(f"the credentials of its {', '.join(missing)} database are gone; repair the app")
    return databases.dump(box.settings, {a: configs[a] for a in wanted}, tmp)


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
