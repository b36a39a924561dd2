"""/apps: list and read apps; start app operations (202 with the task to follow)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from sqlalchemy import Engine

from api import auth
from api.routes._common import AppId, errors
from frontdoor import actions, queries
from frontdoor.schemas import (
    AppOut,
    CloneRequest,
    ConfigureRequest,
    InstallRequest,
    NoOptions,
    RestoreRequest,
    StartedOut,
    UpdateRequest,
)

router = APIRouter(prefix="/apps", tags=["apps"])
Db = Annotated[Engine, Depends(auth.engine_of)]
_STARTS = errors(404, 409, 422, 503)


def _options(body: Any) -> dict[str, Any]:
    return {} if body is None else dict(body.model_dump(by_alias=True, exclude_unset=True))


@router.get("", response_model=list[AppOut], dependencies=[Depends(auth.read)], responses=errors())
def list_apps(db: Db) -> list[AppOut]:
    return queries.list_apps(db)


@router.post(
    "/install", status_code=202, response_model=StartedOut, dependencies=[Depends(auth.write)], responses=_STARTS
)
def install(body: InstallRequest, db: Db) -> StartedOut:
    """Install an app: checks the manifest, location, ports and resources, then starts the task."""
    options = body.model_dump(by_alias=True, exclude_unset=True, exclude={"app_id"})
    if options.get("appStoreId") is None:
        options.pop("appStoreId", None)
    return actions.install(db, options, app_id=body.app_id)


@router.get("/{app_id}", response_model=AppOut, dependencies=[Depends(auth.read)], responses=errors(404, 422))
def get_app(app_id: AppId, db: Db) -> AppOut:
    return queries.get_app(db, app_id)


@router.post(
    "/{app_id}/configure",
    status_code=202,
    response_model=StartedOut,
    dependencies=[Depends(auth.write)],
    responses=_STARTS,
)
def configure(app_id: AppId, body: ConfigureRequest, db: Db) -> StartedOut:
    """Change ports, resources or env; what is left out stays."""
    return actions.configure(db, app_id, _options(body))


@router.post(
    "/{app_id}/update",
    status_code=202,
    response_model=StartedOut,
    dependencies=[Depends(auth.write)],
    responses=_STARTS,
)
def update(app_id: AppId, body: UpdateRequest, db: Db) -> StartedOut:
    return actions.app_operation(db, app_id, "update", _options(body))


@router.post(
    "/{app_id}/restore",
    status_code=202,
    response_model=StartedOut,
    dependencies=[Depends(auth.write)],
    responses=_STARTS,
)
def restore(app_id: AppId, body: RestoreRequest, db: Db) -> StartedOut:
    return actions.app_operation(db, app_id, "restore", _options(body))


@router.post(
    "/{app_id}/clone", status_code=202, response_model=StartedOut, dependencies=[Depends(auth.write)], responses=_STARTS
)
def clone(app_id: AppId, body: CloneRequest, db: Db) -> StartedOut:
    """Make a new app from a backup of this one."""
    return actions.clone(db, app_id, _options(body))


def _simple(operation: str, doc: str) -> None:
    def start_operation(app_id: AppId, db: Db, body: Annotated[NoOptions | None, Body()] = None) -> StartedOut:
        return actions.app_operation(db, app_id, operation, _options(body))

    start_operation.__doc__ = doc
    router.add_api_route(
        f"/{{app_id}}/{operation}",
        start_operation,
        methods=["POST"],
        status_code=202,
        response_model=StartedOut,
        dependencies=[Depends(auth.write)],
        responses=_STARTS,
        name=operation,
        operation_id=f"app_{operation}",
    )


for _operation, _doc in (
    ("backup", "Back up the app."),
    ("uninstall", "Remove the app, its container, data, ports and credentials."),
    ("start", "Start the app's container."),
    ("stop", "Stop the app's container; it stays stopped until started."),
    ("restart", "Restart the app's container."),
    ("repair", "Rebuild the app's container from its record, whatever state the app is in."),
):
    _simple(_operation, _doc)
