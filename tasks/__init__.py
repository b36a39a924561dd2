"""The Celery app, the locking decorator and the four task kinds.

Clients (`api`, `cli`) import only `tasks.client`, which sends by task name (the task rows are
`models.records`, Celery-free); the worker imports `tasks.kinds` and `tasks.signals`.
"""

from __future__ import annotations

from tasks.celery import app
from tasks.errors import (
    BrokerUnavailableError,
    DuplicateTaskError,
    LeaseLost,
    TaskDefinitionError,
    TaskError,
    TaskNotFoundError,
    TaskStopped,
    TaskTimedOut,
)

__all__ = [
    # the Celery app
    "app",
    # errors
    "BrokerUnavailableError",
    "DuplicateTaskError",
    "LeaseLost",
    "TaskDefinitionError",
    "TaskError",
    "TaskNotFoundError",
    "TaskStopped",
    "TaskTimedOut",
]
