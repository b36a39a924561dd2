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


class DuplicateTaskError(TaskError):
    """A task of a kind that runs once at a time was asked for while one is queued, waiting or running."""

    def __init__(self, kind: str, task_id: str) -> None:
        super().__init__(f"a {kind} task is already under way: task {task_id}; follow it instead of starting another")
        self.kind = kind
        self.task_id = task_id


class TaskStopped(BaseException):
    """Raised in a running task's process when it is asked to stop (SIGTERM); unwinds to cleanup."""


class LeaseLost(BaseException):
    """Raised in a running task that lost its locks: its row was ended under it, or no heartbeat of
    it reached the database for nearly the lease (others may take its locks). Unwinds to cleanup.

    A BaseException, like TaskStopped, so that an operation's `except Exception` does not swallow it.
    """


class TaskTimedOut(TaskError):
    """A task ran past its soft time limit: raised in its body, which cleans up; the task ends `failed`."""
