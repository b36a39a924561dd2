"""Time limits per task kind and app operation (`Settings.time_limits_for`), applied by the prefork pool.

Soft: the pool raises SoftTimeLimitExceeded in the task's process; `tasks.locking` turns it into
TaskTimedOut, the body's cleanup runs and the task ends `failed`, "timed out after N s". Hard (soft +
grace): the node kills the process with SIGKILL, as the OOM killer would, and the pool's own lost-child
path ends the task `interrupted` (the admin told), its locks freed once the process is gone
(`tasks.signals._child_lost`). The pool is given no hard limit of its own: billiard marks the job done
*before* it kills the process, and a node was once seen to take no more work after that (in CI; the
lost-child path is the one the chaos and OOM tests kill through). A limit counts one run of
the task: time spent waiting for locks is not counted.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery.worker.request import Request
from celery.worker.state import active_requests

from config import get_settings
from models import TaskState, records
from tasks import flow

logger = logging.getLogger(__name__)

#: How often the node looks for tasks past their hard limit.
WATCH_SECONDS = 1.0

#: Task id -> why this node killed its process; `tasks.signals._child_lost` says it on the task.
killed_for: dict[str, str] = {}


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
        hard, soft = sent if any(sent or ()) else (None, None)
        if not any(sent or ()):
            limits = limits_for(getattr(self.task, "kind", ""), self.kwargs or {})
            if limits is not None:
                soft, hard = limits
        # The pool keeps the soft limit; the hard one is this node's (`_kill_if_running`).
        self.time_limits = (None, soft)
        self.hard_limit: float | None = hard
        self.hard_deadline: float | None = None
        self.process_started: str | None = None

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        # Shrink the node's window before the acknowledgement frees a place in it (`tasks.flow`).
        flow.adjust(taking=self)
        super().on_accepted(pid, time_accepted)
        if self.hard_limit:
            self.hard_deadline = time.monotonic() + self.hard_limit
            self.process_started = process_start(pid)
            _watch()

    def _kill_if_running(self, pid: int) -> None:
        """SIGKILL the task's process if this run of the task is still in it (row: running here, in `pid`)."""
        if not self._still_in(pid):
            return
        hostname = self.hostname or "worker"
        from tasks.locking import process_runtime

        row = records.get(process_runtime(hostname).engine, self.id)
        if row is None or (row.state, row.worker, row.pid) != (TaskState.RUNNING.value, hostname, pid):
            return
        reason = f"timed out after {self.hard_limit:g}s: killed (hard time limit)"
        if not self._still_in(pid):  # again, just before: the process may have ended it and taken another
            return
        logger.error("task %s[%s] %s: process %d", self.name, self.id, reason, pid)
        killed_for[self.id] = reason
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            killed_for.pop(self.id, None)

    def _still_in(self, pid: int) -> bool:
        """This request is still running, in that very process (not a new one given the same pid)."""
        started = process_start(pid)
        return (
            self in active_requests
            and self.worker_pid == pid
            and started is not None
            and (started == self.process_started)
        )


_watcher: list[threading.Thread] = []


def _watch() -> None:
    """Start (once per node) the thread that kills the processes of requests past their hard limit."""
    if not _watcher:
        thread = threading.Thread(target=_watch_forever, name="hard-limits", daemon=True)
        _watcher.append(thread)
        thread.start()


def _watch_forever() -> None:
    # One thread for the node, polling the few running requests: a limit is minutes, a second is close enough.
    while True:
        time.sleep(WATCH_SECONDS)
        now = time.monotonic()
        for request in [r for r in list(active_requests) if isinstance(r, LimitedRequest)]:
            deadline = getattr(request, "hard_deadline", None)
            if deadline is not None and now >= deadline and request.worker_pid:
                try:
                    request._kill_if_running(int(request.worker_pid))
                    request.hard_deadline = None  # done: killed, or no longer running there
                except Exception:  # the database out of reach, say: asked again at the next poll
                    logger.exception("task %s: could not enforce its hard time limit yet", request.id)


def process_start(pid: int) -> str | None:
    """The process's start time, or None if it is gone or a zombie (a zombie runs no code)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return str(fields[19])
