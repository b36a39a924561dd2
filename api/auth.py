"""Bearer-token auth: 401 without a known token, 403 without the scope a route needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from frontdoor import tokens
from frontdoor.errors import AuthError, ScopeError
from frontdoor.tokens import TokenInfo

_bearer = HTTPBearer(auto_error=False, description="an API token: `boxtasks token create --name NAME`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def engine_of(request: Request) -> Engine:
    """The process-wide engine, made on the first request (never at import)."""
    engine: Engine = request.app.state.engine()
    return engine


def _token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> TokenInfo:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("no API token: send 'Authorization: Bearer <token>' (make one with `boxtasks token create`)")
    info = tokens.verify(engine_of(request), credentials.credentials)
    if info is None:
        raise AuthError("unknown API token: check it, or make a new one with `boxtasks token create`")
    return info


def require(scope: str) -> Callable[..., TokenInfo]:
    """A dependency that lets through only tokens with `scope` (admin > write > read)."""

    def check(request: Request, credentials: Credentials) -> TokenInfo:
        info = _token(request, credentials)
        if not info.allows(scope):
            raise ScopeError(
                f"token {info.name!r} has scopes {', '.join(info.scopes) or 'none'}; this call needs {scope!r}"
            )
        return info

    return check


read = require("read")
write = require("write")
admin = require("admin")
