"""/backups and /archives: read them; restore or forget an archive."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Response
from sqlalchemy import Engine

from api import auth
from api.routes._common import ItemId, errors
from frontdoor import actions, queries
from frontdoor.schemas import APP_ID_PATTERN, ArchiveOut, BackupOut, NoOptions, StartedOut

router = APIRouter(tags=["backups"])
Db = Annotated[Engine, Depends(auth.engine_of)]


@router.get("/backups", response_model=list[BackupOut], dependencies=[Depends(auth.read)], responses=errors(422))
def list_backups(
    db: Db,
    app_id: Annotated[str | None, Query(pattern=APP_ID_PATTERN)] = None,
    type: Literal["app", "box"] | None = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 100,
) -> list[BackupOut]:
    return queries.list_backups(db, app_id=app_id, type=type, limit=limit)


@router.get(
    "/backups/{backup_id}", response_model=BackupOut, dependencies=[Depends(auth.read)], responses=errors(404, 422)
)
def get_backup(backup_id: ItemId, db: Db) -> BackupOut:
    return queries.get_backup(db, backup_id)


@router.get("/archives", response_model=list[ArchiveOut], dependencies=[Depends(auth.read)], responses=errors(422))
def list_archives(db: Db, limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 100) -> list[ArchiveOut]:
    return queries.list_archives(db, limit=limit)


@router.post(
    "/archives/{archive_id}/restore",
    status_code=202,
    response_model=StartedOut,
    dependencies=[Depends(auth.write)],
    responses=errors(404, 409, 422, 503),
)
def restore_archive(archive_id: ItemId, db: Db, body: Annotated[NoOptions | None, Body()] = None) -> StartedOut:
    """Bring an uninstalled app back from its archive (an app `restore` from the archive's backup)."""
    archive = queries.get_archive(db, archive_id)
    options = {"backupId": archive.backup_id, "archiveId": archive_id}
    return actions.app_operation(db, archive.app_id, "restore", options, precheck=False)


@router.delete(
    "/archives/{archive_id}", status_code=204, dependencies=[Depends(auth.admin)], responses=errors(404, 422)
)
def delete_archive(archive_id: ItemId, db: Db) -> Response:
    """Forget the archive, and its backup unless another archive or a box backup still needs it."""
    queries.delete_archive(db, archive_id)
    return Response(status_code=204)
