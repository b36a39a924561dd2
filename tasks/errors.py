"""The tasks package's error tree."""

from __future__ import annotations


class TaskError(Exception):
    """Base of every error raised by `tasks`."""


class TaskNotFoundError(TaskError):
    """No task has that id."""


class TaskDefinitionError(TaskError, ValueError):
    """A task kind was declared wrongly (its lock plan or its name); raised when it is defined."""


class BrokerUnavailableError(TaskError):
    """The task was recorded but its message could not be sent; it is marked failed."""


class TaskStopped(BaseException):
    """Raised in a running task's process when it is asked to stop (SIGTERM); unwinds to cleanup."""


class TaskTimedOut(TaskError):
    """A task ran past its soft time limit: raised in its body, which cleans up; the task ends `failed`."""
