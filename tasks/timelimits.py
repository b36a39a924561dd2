"""Time limits per task kind and app operation (`Settings.time_limits_for`), applied by the prefork pool.

Soft: the pool raises SoftTimeLimitExceeded in the task's process; `tasks.locking` turns it into
TaskTimedOut, the body's cleanup runs and the task ends `failed`, "timed out after N s". Hard (soft +
grace): the pool kills the process. Celery calls the hard-timeout handler *before* the kill, so the
task is marked `failed` and its locks freed here only once its process is gone, never while it may
still write. A limit counts one run of the task: time spent waiting for locks is not counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from celery.worker.request import Request

from config import get_settings
from models import FINAL_STATES, TaskState
from tasks import flow, records
from tasks.runner import _wake_ready

logger = logging.getLogger(__name__)

_FINAL = {s.value for s in FINAL_STATES}
#: How long the main process watches for a killed task's process to be gone before leaving it to the lease.
_EXIT_WATCH_SECONDS = 600.0


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
        hostname = self.hostname or "worker"
        _finish_once_gone(int(self.worker_pid), self.id, hostname=hostname, timeout=timeout)


def _finish_once_gone(pid: int, task_id: str, *, hostname: str, timeout: float) -> None:
    """In a thread: once process `pid` has exited, mark the task `failed` (timed out) and free its locks."""
    from tasks.locking import process_runtime
    from tasks.signals import _start_time

    started = _start_time(pid)

    def watch() -> None:
        deadline = time.monotonic() + _EXIT_WATCH_SECONDS
        while started is not None and _start_time(pid) == started:
            if time.monotonic() >= deadline:
                logger.warning(
                    "task %s: process %d outlived its hard time limit; the lease frees its locks", task_id, pid
                )
                return
            time.sleep(0.05)
        rt = process_runtime(hostname)
        row = records.get(rt.engine, task_id)
        if row is None or row.state in _FINAL:
            return
        message = f"Timed out after {timeout:g}s: killed (hard time limit)"
        if records.finish(rt.engine, task_id, TaskState.FAILED, message=message, error=message):
            logger.warning("task %s: %s", task_id, message)
        _wake_ready(rt, rt.manager.evict([task_id]))

    threading.Thread(target=watch, name=f"timeout-{task_id[:8]}", daemon=True).start()
