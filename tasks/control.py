"""A remote control command of our own: SIGKILL a task's process after the grace period.

Celery's `revoke(terminate=True)` cannot be sent twice: after the first (SIGTERM) the request is
forgotten, and a second revoke with SIGKILL answers "tasks unknown". So the stopper names the
node and pid from the task row, and the node kills its own child — only its own.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from celery.worker.control import control_command

logger = logging.getLogger(__name__)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@control_command(args=[("task_id", str), ("pid", int)], signature="<task_id> <pid>")
def boxtasks_kill(state: Any, task_id: str, pid: int, **_: Any) -> dict[str, str]:
    """SIGKILL `pid` if it is a pool process of this worker."""
    if _parent_of(pid) != os.getpid():
        return {"error": f"pid {pid} is not a process of this worker"}
    logger.warning("task %s: SIGKILL to pid %d after the stop grace period", task_id, pid)
    os.kill(pid, signal.SIGKILL)
    return {"ok": f"killed {pid}"}
