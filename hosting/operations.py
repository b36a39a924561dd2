"""The registry of app operations: name -> function(ctx, app_id, **options).

`apptask` looks operations up here by name, so the Celery layer needs no change when an
operation is added, and the API and CLI can list what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hosting.context import TaskContext

Operation = Callable[..., Any]
F = TypeVar("F", bound=Operation)

_OPERATIONS: dict[str, Operation] = {}
#: The modules whose operations register here.
_MODULES = ("hosting.apps.lifecycle", "hosting.apps.update", "hosting.backups.appbackup", "hosting.backups.restore")


class UnknownOperationError(LookupError):
    """No app operation by that name; the message lists the known ones."""


def operation(name: str) -> Callable[[F], F]:
    """Register `fn(ctx, app_id, **options)` as the app operation `name`."""

    def register(fn: F) -> F:
        if name in _OPERATIONS and _OPERATIONS[name] is not fn:
            raise ValueError(f"app operation {name!r} is registered twice")
        _OPERATIONS[name] = fn
        return fn

    return register


def known() -> list[str]:
    _load()
    return sorted(_OPERATIONS)


def run(ctx: TaskContext, app_id: str, name: str, options: dict[str, Any]) -> Any:
    _load()
    try:
        fn = _OPERATIONS[name]
    except KeyError:
        raise UnknownOperationError(
            f"unknown app operation {name!r}; known: {', '.join(sorted(_OPERATIONS)) or 'none yet'}"
        ) from None
    return fn(ctx, app_id, **options)


def _load() -> None:
    """Import the modules that register operations (kept lazy: they import this registry)."""
    import importlib

    for module in _MODULES:
        importlib.import_module(module)
