"""Restore and clone: an app's data and config back from a backup (or an archive).

- `restore` (an existing app, from one of its own backups): the archive is read in full against its
  checksum *before* the app is touched, so a corrupt one is refused with the app as it was. Then the
  container goes, the data directory is swapped for the backup's (extracted beside it, then renamed),
  the manifest, resources and env of the backup come back, and the container is rebuilt.
- `restore` of an app that is gone, with `archiveId`: the app comes back under its old id, like a clone.
- `clone` (a new app id, which is this task's lock): a new app from a backup of another app, with its
  own location and ports, and the notes, operators and checklist as they were *at backup time*
  (the backup's `app_config`), not as the source app has them now. Reading a backup needs no app lock.

Databases: an app backup holds a dump of each database of the app (`addons/`). Before anything changes,
restore and clone check that the backup has a dump of every database the app needs (`check_dumps`),
and refuse, naming them, if not. Then each of the app's own databases is dropped and made afresh
(user/role and password kept) and the dump loaded into it: the app's own on restore, the new app's
on clone, so a clone has the databases as of the backup, whatever the source did since.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from config import Settings
from config.filemodes import private_dir
from hosting.apps import addons, claims, databases, ports, steps
from hosting.apps import state as appstate
from hosting.apps.capabilities import check_addons
from hosting.apps.manifest import Manifest, parse_manifest
from hosting.apps.options import CloneOptions, RestoreOptions, check_app_id, check_env, check_location, parse
from hosting.apps.resources import check_limits
from hosting.apps.state import RunState
from hosting.backups import fileformat, store
from hosting.backups.appconfig import AppConfig
from hosting.box import Box, resolve
from hosting.context import TaskContext
from hosting.errors import BackupError, BackupNotFoundError, CorruptBackupError
from hosting.operations import operation
from models import App, Archive

logger = logging.getLogger(__name__)

Result = dict[str, Any]


@operation("restore")
def restore(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    """Put the app's data and config back as they were in a backup; a corrupt backup changes nothing."""
    box = resolve(box)
    check_app_id(app_id)
    opts = parse(RestoreOptions, "restore", options)
    with ctx.fenced() as conn:
        exists = conn.execute(select(App.id).where(App.id == app_id)).first() is not None
        bid = opts.backup_id or _archive(conn, str(opts.archive_id)).backup_id
    if not exists:
        if not opts.archive_id:
            raise BackupNotFoundError(f"no app {app_id!r} to restore; to bring back an uninstalled app give archiveId")
        return _create_from(ctx, box, app_id, "restore", bid, opts.archive_id, opts.location, opts.ports)

    with ctx.fenced() as conn:
        row, _ = store.usable(conn, box.settings, bid)
    if row.app_id != app_id:
        raise BackupNotFoundError(f"backup {bid} is of app {row.app_id}, not {app_id}: clone it to make a new app")
    ctx.progress(5, f"Verifying backup {bid}")
    path, dumps = store.verify_app(box.settings, row)  # CorruptBackupError here: the app was not touched
    config = AppConfig.from_json(row.app_config)  # likewise
    with ctx.fenced() as conn:
        current = steps.load(conn, app_id).manifest
    # Likewise: an addon this server no longer provides, or a missing dump, changes nothing.
    check_addons(parse_manifest(config.manifest or current), box.settings)
    check_dumps(bid, config.manifest or current, dumps, box.settings)
    with ctx.fenced() as conn:
        appstate.begin(conn, app_id, "restore")
        app = steps.load(conn, app_id)
    with steps.failures_leave_error(ctx, app_id, "restore"):
        ctx.progress(30, "Removing the container")
        box.docker.remove_app_containers(app_id, stop_timeout=box.settings.app_stop_timeout_seconds)
        ctx.progress(40, "Restoring the app's data")
        with restored_data(box, app_id, path) as dump_dir:
            with ctx.fenced() as conn:
                _restore_config(conn, box, app_id, app.location, config)
            own = steps.provision_databases(ctx, box, app_id, percent=45)
            _load_dumps(ctx, box, own, dumps, dump_dir, percent=47)
        container_id = steps.build(ctx, box, app_id, start=app.run_state == RunState.RUNNING, percent=50)
        with ctx.fenced() as conn:
            steps.finish(ctx, conn, app_id, "restore", container_id=container_id, backupId=bid)
    ctx.progress(100, f"Restored from {bid}")
    return {**steps.summary(ctx, app_id), "backupId": bid}


@operation("clone")
def clone(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    """A new app `app_id` from a backup or an archive, at its own location with its own ports."""
    box = resolve(box)
    with steps.refusal_gives_back(ctx, app_id, "clone"):
        check_app_id(app_id)
        opts = parse(CloneOptions, "clone", options)
        bid = opts.backup_id
        if bid is None:
            with ctx.fenced() as conn:
                bid = _archive(conn, str(opts.archive_id)).backup_id
    return _create_from(ctx, box, app_id, "clone", bid, opts.archive_id, opts.location, opts.ports)


# ---------------------------------------------------------------------------- a new app from a backup


def _create_from(
    ctx: TaskContext,
    box: Box,
    app_id: str,
    op: str,
    bid: str,
    archive_id: str | None,
    location: str | None,
    wanted_ports: dict[str, int] | None,
) -> Result:
    with steps.refusal_gives_back(ctx, app_id, op):
        with ctx.fenced() as conn:
            row, _ = store.usable(conn, box.settings, bid)
            archived = _archive(conn, archive_id).app_config if archive_id else None
        # An archive's own config first; an empty one (older archives) falls back to the backup's.
        config = AppConfig.from_json(archived or row.app_config)
        if not config.manifest:
            raise BackupError(f"backup {bid} holds no app config (made by an older version): it cannot make a new app")
        manifest = parse_manifest(config.manifest)
        check_addons(manifest, box.settings)
        location = check_location(location if location is not None else config.location)
        if wanted_ports is None:
            wanted_ports = dict(config.ports) if op == "restore" else {}
        bindings = ports.check_ports(manifest, wanted_ports)
        env = check_env(dict(config.env or {}), manifest)
        res = config.resources
        limits = check_limits(
            manifest,
            box.docker.capacity(),
            cpu_shares=res.cpu_shares,
            cpu_quota=res.cpu_quota,
            memory_limit=res.memory_limit,
        )
        ctx.progress(5, f"Verifying backup {bid}")
        path, dumps = store.verify_app(box.settings, row)  # a corrupt backup: refused before anything exists
        check_dumps(bid, config.manifest, dumps, box.settings)  # and one without the dumps the app needs

        run_state = RunState.RUNNING if config.run_state == "running" else RunState.STOPPED
        values: dict[str, Any] = {
            "app_store_id": config.app_store_id or manifest.id,
            "manifest": dict(config.manifest),
            "version": manifest.version,
            "location": location,
            "run_state": run_state.value,
            "cpu_shares": limits.cpu_shares,
            "cpu_quota": limits.cpu_quota,
            "memory_limit": limits.memory_limit,
            "env": env,
            "notes": config.notes,
            "operators": list(config.operators),
            "checklist": dict(config.checklist),
            "enable_backup": config.enable_backup,
            "enable_mailbox": config.enable_mailbox,
        }
        ctx.progress(10, "Recording the new app")
        with steps.busy_is_retryable(op), ctx.fenced() as conn:
            claims.take_app_row(conn, app_id, op, values)
            ports.reserve(conn, app_id, bindings)
            addons.set_up(conn, app_id=app_id, location=location, manifest=manifest, settings=box.settings)
            databases.set_up(conn, app_id=app_id, manifest=manifest, settings=box.settings)
    with steps.failures_leave_error(ctx, app_id, op):
        ctx.progress(20, "Restoring the data")
        with restored_data(box, app_id, path) as dump_dir:
            own = steps.provision_databases(ctx, box, app_id, percent=25)
            _load_dumps(ctx, box, own, dumps, dump_dir, percent=30)  # the backup's databases, not the source's now
        container_id = steps.build(ctx, box, app_id, start=run_state == RunState.RUNNING, percent=40)
        with ctx.fenced() as conn:
            steps.finish(
                ctx,
                conn,
                app_id,
                op,
                container_id=container_id,
                run_state=run_state,
                backupId=bid,
                archiveId=archive_id,
                fromApp=config.app_id,
            )
    ctx.progress(100, f"{'Cloned' if op == 'clone' else 'Restored'} {app_id} from {bid}")
    return {**steps.summary(ctx, app_id), "backupId": bid, "fromApp": config.app_id}


def _restore_config(conn: Connection, box: Box, app_id: str, location: str, config: AppConfig) -> None:
    """The backup's manifest, resources and env (what its data goes with); notes, ports stay as they are."""
    if not config.manifest:
        return
    manifest: Manifest = parse_manifest(config.manifest)
    values: dict[str, Any] = {"manifest": dict(config.manifest), "version": manifest.version}
    values.update(config.resources.as_columns())
    if config.env is not None:
        values["env"] = dict(config.env)
    conn.execute(update(App).where(App.id == app_id).values(**values))
    addons.set_up(conn, app_id=app_id, location=location, manifest=manifest, settings=box.settings)
    databases.set_up(conn, app_id=app_id, manifest=manifest, settings=box.settings)


def check_dumps(bid: str, manifest: dict[str, Any] | None, dumps: Mapping[str, str], settings: Settings) -> None:
    """Refuse (BackupError, nothing changed yet) a backup without a dump of every database the app needs.

    What the app needs is what the manifest it will run with asks for: the backup's own (restore puts
    it back), so a backup from before an update that added a database still restores that version.
    """
    if not manifest:
        return
    missing = [a for a in databases.needed(parse_manifest(manifest), settings) if a not in dumps]
    if missing:
        raise BackupError(
            f"backup {bid} holds no dump of the app's {', '.join(missing)} database"
            f"{'s' if len(missing) > 1 else ''}, which the app needs (a backup made before backups held "
            "databases, or one damaged): nothing was changed; choose a backup that holds them"
        )


def _load_dumps(
    ctx: TaskContext,
    box: Box,
    own: Mapping[str, Mapping[str, Any]],
    dumps: Mapping[str, str],
    directory: Path,
    *,
    percent: int,
) -> None:
    """The backup's dumps into the app's own databases, each emptied first (`databases.load`)."""
    wanted = {a: own[a] for a in dumps if a in own}
    if wanted:
        ctx.progress(percent, f"Loading the backup's {', '.join(sorted(wanted))} database into the app's own")
        databases.load(box.settings, wanted, directory)


def _archive(conn: Connection, archive_id: str | None) -> Any:
    row = conn.execute(select(Archive.__table__).where(Archive.id == archive_id)).first()
    if row is None:
        raise BackupNotFoundError(f"no archive {archive_id!r}; list them with GET /api/v1/archives")
    return row


# ---------------------------------------------------------------------------- the data directory


def swap_data(box: Box, app_id: str, source: Path) -> None:
    """Replace the app's data directory by the archive's (`restored_data`, its dumps left unused)."""
    with restored_data(box, app_id, source):
        pass


@contextmanager
def restored_data(box: Box, app_id: str, source: Path) -> Iterator[Path]:
    """Replace the app's data directory by the archive's, extracted beside it first (a rename swaps them);
    yields the directory of the archive's database dumps (`addons/`), removed with the rest on leaving.

    `fileformat.extract` checks every member before it writes one, so a refused archive leaves the data as it was.
    """
    app_dir = private_dir(box.app_dir(app_id))
    stage = box.apps_dir / f".restore-{app_id}-{os.getpid()}"
    trash = box.apps_dir / f".replaced-{app_id}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)
    try:
        fileformat.extract(source, stage)
        restored = stage / store.DATA
        if restored.is_symlink() or (restored.exists() and not restored.is_dir()):
            raise CorruptBackupError(f"backup archive {source} is corrupt: its {store.DATA!r} is not a directory")
        restored.mkdir(exist_ok=True)
        current = app_dir / store.DATA
        if current.exists():
            os.rename(current, trash)
        os.rename(restored, current)
        shutil.rmtree(trash, ignore_errors=True)
        yield stage / store.ADDONS
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)
