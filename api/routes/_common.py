"""What the route modules share: error responses for the OpenAPI document, the path id types."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from frontdoor.schemas import APP_ID_PATTERN, ITEM_ID_PATTERN, TASK_ID_PATTERN, ErrorOut


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error answers: 401 and 403 on every route (all need a token), 422 on every route
    (it replaces FastAPI's default 422 shape: this API answers `{"error", "message"}` everywhere)."""
    words = {
        401: "no token, or an unknown one",
        403: "the token lacks the scope this call needs",
        404: "no such item",
        409: "valid, but the box says no right now",
        422: "the request is malformed; the message says what to fix",
        503: "the broker is unreachable",
    }
    return {c: {"model": ErrorOut, "description": words[c]} for c in sorted({401, 403, 422, *codes})}


AppId = Annotated[str, Path(pattern=APP_ID_PATTERN, description="the app's id")]
TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="the task's id (Celery's task id)")]
ItemId = Annotated[str, Path(pattern=ITEM_ID_PATTERN)]
