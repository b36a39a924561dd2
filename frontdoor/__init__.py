"""The front door: what the REST API and the CLI share, HTTP-free.

- `frontdoor.actions`: check a request and start its task (`StartedOut`).
- `frontdoor.queries`: read tasks, apps, backups, archives, the eventlog, locks, as typed views.
- `frontdoor.schemas`: the request and response models (the API's OpenAPI document says them).
- `frontdoor.tasklines`: a task's own log lines; `frontdoor.tokens`: API tokens.
- `frontdoor.errors`: one error per answer; the API maps each to its status, the CLI to one line.

Importing it imports no web framework and no Celery app: `api` and `cli` sit on top of it.
"""

from __future__ import annotations

from frontdoor.errors import (
    AuthError,
    BadRequestError,
    BrokerDownError,
    DuplicateError,
    FrontError,
    MissingError,
    ScopeError,
    StateError,
)

__all__ = [
    # errors
    "AuthError",
    "BadRequestError",
    "BrokerDownError",
    "DuplicateError",
    "FrontError",
    "MissingError",
    "ScopeError",
    "StateError",
]
