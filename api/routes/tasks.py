"""/tasks: list with filters, read one, its log, stop it, retry it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query
from sqlalchemy import Engine

from api import actions, auth, queries
from api.errors import ScopeError
from api.routes._common import TaskId, errors
from api.schemas import APP_ID_PATTERN, LogEntryOut, StartedOut, StopOut, TaskOut, TaskState
from api.tokens import TokenInfo

router = APIRouter(prefix="/tasks", tags=["tasks"])
Db = Annotated[Engine, Depends(auth.engine_of)]


@router.get("", response_model=list[TaskOut], dependencies=[Depends(auth.read)], responses=errors(422))
def list_tasks(
    db: Db,
    state: Annotated[list[TaskState] | None, Query(description="repeat for several states")] = None,
    type: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$", description="apptask, ...")] = None,
    app_id: Annotated[str | None, Query(pattern=APP_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 100,
) -> list[dict[str, Any]]:
    """Newest first."""
    return queries.list_tasks(db, state=state or (), type=type, app_id=app_id, limit=limit)


@router.get("/{task_id}", response_model=TaskOut, dependencies=[Depends(auth.read)], responses=errors(404, 422))
def get_task(task_id: TaskId, db: Db) -> dict[str, Any]:
    return queries.get_task(db, task_id)


@router.get(
    "/{task_id}/log", response_model=list[LogEntryOut], dependencies=[Depends(auth.read)], responses=errors(404, 422)
)
def task_log(task_id: TaskId, db: Db) -> list[dict[str, Any]]:
    """The task's milestones from its row, with what its operations wrote to the eventlog."""
    return queries.task_log(db, task_id)


@router.post(
    "/{task_id}/stop",
    status_code=202,
    response_model=StopOut,
    dependencies=[Depends(auth.write)],
    responses=errors(404, 422),
)
def stop_task(task_id: TaskId, db: Db, background: BackgroundTasks) -> dict[str, Any]:
    """Stop a task. Queued or waiting: it is cancelled now. Running: SIGTERM now, SIGKILL after the grace."""
    state = actions.stop(db, task_id, wait=False)
    if state == "running":
        # The escalation to SIGKILL waits for the grace period: do it after answering.
        background.add_task(actions.stop, db, task_id, wait=True)
    return {"task_id": task_id, "state": state}


@router.post(
    "/{task_id}/retry",
    status_code=202,
    response_model=StartedOut,
    responses=errors(404, 409, 422, 501, 503),
)
def retry_task(task_id: TaskId, db: Db, token: Annotated[TokenInfo, Depends(auth.write)]) -> dict[str, Any]:
    """Start a failed, interrupted or cancelled task again with the same arguments, checked again.

    The new task's `retry_of` names this one. 409 when the task is not retryable, or when a platform
    task of its kind is under way (the answer's `task_id` names it). Platform tasks need an admin token.
    """
    kind = queries.get_task(db, task_id)["type"]
    if kind in actions.PLATFORM_KINDS and not token.allows("admin"):
        raise ScopeError(f"token {token.name!r} may not retry a {kind} task; this call needs 'admin'")
    return actions.retry(db, task_id).as_dict()
