"""The REST API's factory: `uvicorn api.app:create_app --factory` (what `boxtasks api` runs).

Everything is under /api/v1 (OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs), and
Prometheus text at /metrics. Nothing is made at import: the engine and the lock manager are made
on first use and closed at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import auth, metrics
from api.limits import BodyLimit
from api.routes import ROUTERS
from config import Settings, get_settings
from frontdoor import actions
from frontdoor.errors import FrontError
from lockman import LockError, LockManager
from models import get_engine
from models.secrets import describe_db_error, where

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    actions.import_deferred()  # before the first request: no two threads import one module cycle at once
    manager_cache: dict[str, LockManager] = {}

    def lock_manager() -> LockManager:
        if "m" not in manager_cache:
            manager_cache["m"] = LockManager.from_settings()
        return manager_cache["m"]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if "m" in manager_cache:
            manager_cache.pop("m").dispose()

    app = FastAPI(
        title="boxtasks",
        version="1",
        description="Tasks of a self-hosting box: start app and platform operations, follow and stop them.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.engine = get_engine
    app.state.lock_manager = lock_manager
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)
    _add_metrics(app, settings, lock_manager)
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(_QuietErrors)  # outermost: whatever escapes is logged without its text
    return app


def _add_metrics(app: FastAPI, settings: Settings, manager: Any) -> None:
    reg = metrics.registry(get_engine, manager)
    deps = [] if settings.metrics_public else [Depends(auth.read)]

    @app.get("/metrics", include_in_schema=False, dependencies=deps)
    def prometheus() -> Response:
        body, headers = metrics.render(reg)
        return Response(body, headers=headers)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, extra: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **(extra or {})}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FrontError)
    async def front_error(_: Request, err: FrontError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return _error(err.status, err.code, err.message, headers, err.extra())

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid", describe(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        message = str(err.detail)
        if err.status_code == 404 and message == "Not Found":
            message = f"no such route; the API is under {PREFIX} (OpenAPI: {PREFIX}/openapi.json)"
        return _error(
            err.status_code, _HTTP_CODES.get(err.status_code, "error"), message, dict(err.headers or {}) or None
        )

    # Never `str(err)` of a database error: it carries the statement's parameters (task args, env).
    @app.exception_handler(OperationalError)
    async def database_down(request: Request, err: OperationalError) -> JSONResponse:
        logger.warning("database error in %s %s: %s", request.method, request.url.path, describe_db_error(err))
        return _error(503, "database_unavailable", "the database does not answer; try again shortly")

    @app.exception_handler(LockError)
    async def lock_error(_: Request, err: LockError) -> JSONResponse:
        logger.warning("lock row error: %s", err)
        return _error(503, "locks_unavailable", str(err))

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, err: SQLAlchemyError) -> JSONResponse:
        logger.error(
            "database error in %s %s: %s\n%s", request.method, request.url.path, describe_db_error(err), where(err)
        )
        return _error(500, "database_error", "the database refused the request; see the API's log")


class _QuietErrors:
    """Any other exception: a 500 and a log line with its class and where it was raised, not its text.

    Left to Starlette, the server would log the exception's text, which may quote the request's
    data (a validation error quotes its input, env and all).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as err:
            logger.error(
                "unexpected %s in %s %s\n%s", type(err).__name__, scope.get("method"), scope.get("path"), where(err)
            )
            if not started:
                await _error(500, "internal_error", "the server failed; see the API's log")(scope, receive, send)


def describe(errors: Any) -> str:
    """Pydantic/FastAPI errors as one line: `body.location: Field required; query.limit: ...`."""
    parts = []
    for item in errors:
        loc = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{loc}: {str(item.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts) or "invalid request"
