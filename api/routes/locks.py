"""/locks: who holds what, who waits, and why."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from api import auth
from api.routes._common import errors
from frontdoor import queries
from frontdoor.schemas import LocksOut

router = APIRouter(tags=["locks"])


@router.get("/locks", response_model=LocksOut, dependencies=[Depends(auth.read)], responses=errors())
def locks(request: Request, db: Annotated[Engine, Depends(auth.engine_of)]) -> LocksOut:
    snap = request.app.state.lock_manager().snapshot()
    return queries.locks_report(snap.table, snap.version, db)
