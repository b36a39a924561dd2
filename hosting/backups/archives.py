"""Archives: what is left of an uninstalled app to bring it back, pointing at its last backup.

Kept apart from backups (the seed: icon, app store icon and app config are only an archive's), so
a backup row stays small. Uninstall with `archive=True` makes one; `restore` with `archiveId` (same
app id) or `clone` with `archiveId` (a new id) brings the app back; `delete_archive` forgets it,
and its backup too unless something else needs that backup (another archive, or a box backup
that lists it in `depends_on`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from config import Settings
from hosting.backups import fileformat
from hosting.backups.appbackup import create_app_backup
from hosting.backups.store import file_of
from hosting.box import Box
from hosting.context import TaskContext
from hosting.errors import BackupNotFoundError, OptionsError
from models import Archive, Backup

logger = logging.getLogger(__name__)


def archive_app(
    ctx: TaskContext, box: Box, app_id: str, *, icon: str | None = None, app_store_icon: str | None = None
) -> dict[str, Any]:
    """Back the app up and keep an archive row for it; the caller holds `app:<id>` X."""
    icon_bytes, store_icon_bytes = _decode(icon, "icon"), _decode(app_store_icon, "appStoreIcon")
    record = create_app_backup(ctx, box, app_id, percent=(6, 15))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    archive_id = f"archive_{app_id}_{stamp}"
    with ctx.fenced() as conn:
        conn.execute(
            insert(Archive).values(
                id=archive_id,
                backup_id=record.id,
                app_id=app_id,
                icon=icon_bytes,
                app_store_icon=store_icon_bytes,
                app_config=record.app_config.to_json() if record.app_config else {},
            )
        )
    logger.info("app %s archived as %s (backup %s)", app_id, archive_id, record.id)
    return {"archiveId": archive_id, "backupId": record.id}


def list_archives(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Archive.__table__).order_by(Archive.created_at.desc(), Archive.id)).all()
    return [
        {
            "id": r.id,
            "appId": r.app_id,
            "backupId": r.backup_id,
            "appConfig": r.app_config,
            "hasIcon": r.icon is not None,
            "hasAppStoreIcon": r.app_store_icon is not None,
            "createdAt": r.created_at,
        }
        for r in rows
    ]


def delete_archive(engine: Engine, settings: Settings, archive_id: str) -> dict[str, Any]:
    """Forget the archive, and its backup unless another archive or a box backup still needs it."""
    with engine.begin() as conn:
        row = conn.execute(select(Archive.backup_id).where(Archive.id == archive_id)).first()
        if row is None:
            raise BackupNotFoundError(f"no archive {archive_id!r}; list them with GET /api/v1/archives")
        conn.execute(delete(Archive).where(Archive.id == archive_id))
        bid = row.backup_id
        needed_by = [f"archive {a}" for a in conn.execute(select(Archive.id).where(Archive.backup_id == bid)).scalars()]
        for box_id, depends in conn.execute(select(Backup.id, Backup.depends_on).where(Backup.type == "box")).all():
            if bid in (depends or []):
                needed_by.append(f"box backup {box_id}")
        path = None
        if not needed_by:
            path = conn.execute(select(Backup.path).where(Backup.id == bid)).scalar()
            conn.execute(delete(Backup).where(Backup.id == bid))
    if path is not None:
        fileformat.remove(file_of(settings, path))
    kept = bool(needed_by)
    logger.info(
        "archive %s deleted; backup %s %s", archive_id, bid, f"kept ({', '.join(needed_by)})" if kept else "deleted"
    )
    return {"archiveId": archive_id, "backupId": bid, "backupDeleted": not kept, "backupNeededBy": needed_by}


def _decode(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise OptionsError(f"{name} must be base64 (a PNG or SVG file's bytes): {err}") from err
