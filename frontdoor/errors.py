"""The front doors' error tree: one base, one class per answer a caller can get.

HTTP-free on purpose: the CLI raises and prints the same errors (one line, non-zero exit); the API
turns each into its status code and `{"error": code, "message": ...}`. Every message says what to fix.
"""

from __future__ import annotations


class FrontError(Exception):
    """Base of every error the API and the CLI answer with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def extra(self) -> dict[str, str]:
        """Fields the answer carries besides `error` and `message` (none by default)."""
        return {}


class BadRequestError(FrontError):
    """The request is malformed in a way the schema cannot say (a bad manifest, a reserved port)."""

    status = 422
    code = "invalid"


class AuthError(FrontError):
    """No token, or a token that is not known."""

    status = 401
    code = "unauthorized"


class ScopeError(FrontError):
    """A known token without the scope the call needs."""

    status = 403
    code = "forbidden"


class MissingError(FrontError, LookupError):
    """No app, task, backup, archive or notification by that id."""

    status = 404
    code = "not_found"


class StateError(FrontError):
    """The request is valid, but the box says no right now (app state, location or port taken)."""

    status = 409
    code = "conflict"


class DuplicateError(StateError):
    """A platform task of a kind that runs once at a time is already under way: the answer names it."""

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id

    def extra(self) -> dict[str, str]:
        return {"task_id": self.task_id}


class BrokerDownError(FrontError):
    """The task was recorded but its message could not be sent: the broker is unreachable."""

    status = 503
    code = "broker_unavailable"
