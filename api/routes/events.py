"""/eventlog and /notifications."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import Engine

from api import auth
from api.routes._common import errors
from frontdoor import queries
from frontdoor.schemas import EventOut, NotificationOut

router = APIRouter(tags=["events"])
Db = Annotated[Engine, Depends(auth.engine_of)]


@router.get("/eventlog", response_model=list[EventOut], dependencies=[Depends(auth.read)], responses=errors(422))
def eventlog(
    db: Db,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$", description="like app.install")] = None,
    before: Annotated[int | None, Query(ge=1, le=1 << 62, description="only events older than this id")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 100,
) -> list[EventOut]:
    """Newest first."""
    return queries.eventlog(db, action=action, before=before, limit=limit)


@router.get(
    "/notifications", response_model=list[NotificationOut], dependencies=[Depends(auth.read)], responses=errors(422)
)
def notifications(
    db: Db,
    acknowledged: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 100,
) -> list[NotificationOut]:
    return queries.notifications(db, acknowledged=acknowledged, limit=limit)


@router.post(
    "/notifications/{notification_id}/acknowledge",
    response_model=NotificationOut,
    dependencies=[Depends(auth.write)],
    responses=errors(404, 422),
)
def acknowledge(notification_id: Annotated[int, Path(ge=1, le=1 << 62)], db: Db) -> NotificationOut:
    return queries.acknowledge(db, notification_id)
