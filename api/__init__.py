"""The REST API (FastAPI) and the HTTP-free layer the CLI shares with it.

- `api.app.create_app`: the FastAPI app (`uvicorn api.app:create_app --factory`).
- `api.actions`: check a request and start its task; `api.queries`: read tasks, apps, locks, ...
- `api.tokens`: bearer tokens (made, hashed, checked).

Importing `api` imports no web framework: the CLI uses `actions` and `queries` without FastAPI.
"""

from __future__ import annotations

from api.errors import (
    AuthError,
    BadRequestError,
    BrokerDownError,
    FrontError,
    MissingError,
    NotAvailableError,
    ScopeError,
    StateError,
)

__all__ = [
    # errors
    "AuthError",
    "BadRequestError",
    "BrokerDownError",
    "FrontError",
    "MissingError",
    "NotAvailableError",
    "ScopeError",
    "StateError",
]
