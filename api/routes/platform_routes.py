"""/platform: update, full backup, start (admin tokens only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from sqlalchemy import Engine

from api import auth
from api.routes._common import errors
from frontdoor import actions
from frontdoor.schemas import CapabilitiesOut, FullBackupRequest, NoOptions, PlatformUpdateRequest, StartedOut

router = APIRouter(prefix="/platform", tags=["platform"])
Db = Annotated[Engine, Depends(auth.engine_of)]
_STARTS = errors(404, 409, 422, 503)


@router.get("/capabilities", response_model=CapabilitiesOut, dependencies=[Depends(auth.read)], responses=errors())
def capabilities() -> dict[str, Any]:
    """What this server can run now (app operations and platform tasks come as hosting provides them),
    the addons it provides to apps and the manifest versions it reads."""
    return actions.capabilities()


@router.post(
    "/update", status_code=202, response_model=StartedOut, dependencies=[Depends(auth.admin)], responses=_STARTS
)
def update(db: Db, body: Annotated[PlatformUpdateRequest | None, Body()] = None) -> StartedOut:
    args = {"release_url": body.release_url} if body is not None and body.release_url else {}
    return actions.platform_task(db, "update", args)


@router.post(
    "/backup", status_code=202, response_model=StartedOut, dependencies=[Depends(auth.admin)], responses=_STARTS
)
def full_backup(db: Db, body: Annotated[FullBackupRequest | None, Body()] = None) -> StartedOut:
    args = {"app_ids": body.app_ids} if body is not None and body.app_ids is not None else {}
    return actions.platform_task(db, "fullbackup", args)


@router.post(
    "/start", status_code=202, response_model=StartedOut, dependencies=[Depends(auth.admin)], responses=_STARTS
)
def start(db: Db, body: Annotated[NoOptions | None, Body()] = None) -> StartedOut:
    """Bring the platform up; it takes no options (a body with any is refused, not ignored)."""
    return actions.platform_task(db, "platformstart")
