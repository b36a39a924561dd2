"""Time limits per task kind and app operation (`Settings.time_limits_for`), applied by the prefork pool.

Soft: the pool raises SoftTimeLimitExceeded in the task's process; `tasks.locking` turns it into
TaskTimedOut, the body's cleanup runs and the task ends `failed`, "timed out after N s". Hard (soft +
grace): the pool kills the process. Celery calls the hard-timeout handler *before* the kill, so the
task is marked `interrupted` (and the admin told) and its locks freed only once its process is gone,
never while it may still write (`tasks.signals.after_exit`). A limit counts one run of the task:
time spent waiting for locks is not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery.worker.request import Request

from config import get_settings
from tasks import flow

logger = logging.getLogger(__name__)


def limits_for(kind: str, kwargs: Mapping[str, Any]) -> tuple[float, float] | None:
    """(soft, hard) seconds for one run of a task of `kind` called with `kwargs`, or None."""
    if not kind:
        return None
    return get_settings().time_limits_for(kind, kwargs.get("operation"))


class LimitedRequest(Request):  # type: ignore[misc]
    """The worker's request of a locked task: its time limits from settings, and what a hard limit leaves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Limits sent with the message win; else the kind's (and the app operation's) from settings.
        sent: Any = getattr(self, "time_limits", None)
        if not any(sent or ()):
            limits = limits_for(getattr(self.task, "kind", ""), self.kwargs or {})
            if limits is not None:
                soft, hard = limits
                self.time_limits = (hard, soft)

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        # Shrink the node's window before the acknowledgement frees a place in it (`tasks.flow`).
        flow.adjust(taking=self)
        super().on_accepted(pid, time_accepted)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or not self.worker_pid:
            return
        from tasks.signals import after_exit

        # Interrupted, as any task whose process was killed: its locks go once it is gone, and the admin is told.
        reason = f"timed out after {timeout:g}s: killed (hard time limit)"
        after_exit(int(self.worker_pid), self.id, hostname=self.hostname or "worker", reason=reason)
