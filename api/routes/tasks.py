"""/tasks: list with filters, read one, its log, stop it, retry it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy import Engine

from api import auth
from api.routes._common import TaskId, errors
from frontdoor import actions, queries, tasklines
from frontdoor.errors import ScopeError
from frontdoor.schemas import APP_ID_PATTERN, LogEntryOut, StartedOut, StopOut, TaskOut, TaskState
from frontdoor.tokens import TokenInfo

router = APIRouter(prefix="/tasks", tags=["tasks"])
Db = Annotated[Engine, Depends(auth.engine_of)]


@router.get("", response_model=list[TaskOut], dependencies=[Depends(auth.read)], responses=errors(422))
def list_tasks(
    db: Db,
    state: Annotated[list[TaskState] | None, Query(description="repeat for several states")] = None,
    type: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$", description="apptask, ...")] = None,
    app_id: Annotated[str | None, Query(pattern=APP_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 100,
) -> list[TaskOut]:
    """Newest first."""
    return queries.list_tasks(db, state=state or (), type=type, app_id=app_id, limit=limit)


@router.get("/{task_id}", response_model=TaskOut, dependencies=[Depends(auth.read)], responses=errors(404, 422))
def get_task(task_id: TaskId, db: Db) -> TaskOut:
    return queries.get_task(db, task_id)


@router.get(
    "/{task_id}/log",
    response_model=list[LogEntryOut],
    dependencies=[Depends(auth.read)],
    responses={**errors(404, 422), 200: {"content": {"text/plain": {}}}},
)
def task_log(
    task_id: TaskId,
    db: Db,
    request: Request,
    follow: Annotated[bool, Query(description="text: stream new lines until the task ends")] = False,
) -> Any:
    """The task's own log lines as text/plain (`Accept: text/plain`, or `follow=1`, which streams them
    while the task runs); else, as JSON, its milestones with what its operations wrote to the eventlog."""
    if not (follow or _wants_text(request.headers.get("accept", ""))):
        return queries.task_log(db, task_id)
    queries.get_task(db, task_id)  # 404 for a task that does not exist
    if not follow:
        return PlainTextResponse("".join(tasklines.text(db, task_id)))
    return StreamingResponse(_follow(tasklines.Follower(db, task_id)), media_type="text/plain; charset=utf-8")


async def _follow(follower: tasklines.Follower) -> AsyncIterator[str]:
    # Async, so that a client that hangs up ends the loop at its next sleep.
    while not follower.done:
        chunk = await anyio.to_thread.run_sync(follower.poll)
        if chunk:
            yield chunk
        await anyio.sleep(tasklines.POLL_SECONDS)


def _wants_text(accept: str) -> bool:
    """Whether text/plain comes before JSON in the Accept header (in the order given; q ignored)."""
    kinds = [part.split(";")[0].strip() for part in accept.split(",")]
    text = kinds.index("text/plain") if "text/plain" in kinds else None
    json = kinds.index("application/json") if "application/json" in kinds else None
    return text is not None and (json is None or text < json)


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
    responses=errors(404, 409, 422, 503),
)
def retry_task(task_id: TaskId, db: Db, token: Annotated[TokenInfo, Depends(auth.write)]) -> StartedOut:
    """Start a failed, interrupted or cancelled task again with the same arguments, checked again.

    The new task's `retry_of` names this one. 409 when the task is not retryable, or when a platform
    task of its kind is under way (the answer's `task_id` names it). Platform tasks need an admin token.
    """
    kind = queries.get_task(db, task_id).type
    if kind in actions.PLATFORM_KINDS and not token.allows("admin"):
        raise ScopeError(f"token {token.name!r} may not retry a {kind} task; this call needs 'admin'")
    return actions.retry(db, task_id)
