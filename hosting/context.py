"""What an operation in `hosting` needs from the task that runs it, and nothing about Celery.

The Celery task (in `tasks/`) implements this protocol; tests implement it with a real
LockManager grant (`LocalContext`), so hosting code is tested without Celery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from sqlalchemy import Connection

from lockman import Grant, Granted, LockManager, lock_set

logger = logging.getLogger(__name__)


class TaskContext(Protocol):
    """The running task, as seen by domain code."""

    @property
    def task_id(self) -> str: ...

    def progress(self, percent: int, message: str) -> None:
        """Report how far the operation is (0-100) and what it does now, in words for a person."""

    def fenced(self) -> AbstractContextManager[Connection]:
        """A transaction that commits only while the task still holds its locks (its fencing token).

        Every change to app state made under the task's locks goes through here, so a task that
        was paused past its lease and lost its locks cannot commit.
        """

    def acquire_more(self, plan: Mapping[str, str], *, timeout: float | None = None) -> Grant:
        """Take more locks while holding some (never queued behind waiters); blocks until granted."""

    def wait_for_more(self, plan: Mapping[str, str]) -> Grant:
        """Take more locks while holding some; when they are busy the task may park: give its
        process back, keep its locks, and run the body again from `checkpoint` once they are free.

        A body that calls this must be safe to run again: it skips what `checkpoint` says is done.
        """

    @property
    def checkpoint(self) -> dict[str, Any]:
        """What the body has done so far (JSON values), kept across parking; filled in place."""

    def try_acquire_more(self, plan: Mapping[str, str]) -> Grant | None:
        """Take more locks only if they are free now."""

    def release_some(self, names: Sequence[str]) -> None:
        """Give back some locks before the task ends (fullbackup, app by app)."""


class LocalContext:
    """A TaskContext on a LockManager grant, for tests and for running an operation from a shell."""

    def __init__(
        self,
        manager: LockManager,
        grant: Grant,
        *,
        on_progress: Callable[[int, str], None] | None = None,
    ) -> None:
        self._manager = manager
        self._grant = grant
        self._on_progress = on_progress
        self.reports: list[tuple[int, str]] = []
        self._checkpoint: dict[str, Any] = {}

    @property
    def task_id(self) -> str:
        return self._grant.owner

    def progress(self, percent: int, message: str) -> None:
        self.reports.append((percent, message))
        logger.info("task %s: %d%% %s", self._grant.owner, percent, message)
        if self._on_progress is not None:
            self._on_progress(percent, message)

    @contextmanager
    def fenced(self) -> Iterator[Connection]:
        with self._manager.fenced(self._grant) as conn:
            yield conn

    def acquire_more(self, plan: Mapping[str, str], *, timeout: float | None = None) -> Grant:
        return self._manager.acquire(self._grant.owner, plan, timeout=timeout)

    def wait_for_more(self, plan: Mapping[str, str], *, timeout: float | None = None) -> Grant:
        """Here there is no process to give back: it waits in place."""
        return self.acquire_more(plan, timeout=timeout)

    @property
    def checkpoint(self) -> dict[str, Any]:
        return self._checkpoint

    def try_acquire_more(self, plan: Mapping[str, str]) -> Grant | None:
        decision = self._manager.try_acquire(self._grant.owner, plan)
        if isinstance(decision, Granted):
            return Grant(self._grant.owner, decision.token, lock_set(plan))
        self._manager.withdraw(self._grant.owner)
        return None

    def release_some(self, names: Sequence[str]) -> None:
        self._manager.release(self._grant.owner, names)
