"""Worker signal handlers, all in one module: fork hygiene, start-up reconcile, lost children, revokes.

Locks are freed here only once the task's process is known to be gone: `task_failure` with
WorkerLostError comes after the pool saw the child exit, and for a terminate-revoke (which
Celery announces *before* the child has exited) a watcher waits for the pid to disappear.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import signals
from celery.worker import state as worker_state

from models import FINAL_STATES, TaskState, dispose_after_fork, records
from tasks import timelimits
from tasks.locking import process_runtime
from tasks.runner import _wake_ready, recover_dead

logger = logging.getLogger(__name__)

_FINAL = {s.value for s in FINAL_STATES}

#: This node's name, as its task rows carry it (set in the main process when the worker starts).
_node: dict[str, str] = {}


@signals.worker_process_init.connect
def _child_started(**_: Any) -> None:
    # Pooled connections inherited from the parent must not be shared with it.
    dispose_after_fork()


@signals.worker_init.connect
def _reconcile_node(sender: Any = None, **_: Any) -> None:
    """Tasks recorded as running on this node name belong to its previous life: they died with it."""
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    _node["hostname"] = hostname
    rt = process_runtime(hostname)
    leftover = records.running_on(rt.engine, hostname)
    if leftover:
        logger.warning("node %s restarted: interrupting %d task(s) it left running", hostname, len(leftover))
        recover_dead(rt, leftover, reason=f"worker {hostname} restarted while it ran")


@signals.task_failure.connect
def _child_lost(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    """A pool process died holding a message of `task_id`: interrupt the task, if that process ran it.

    The message may be a second copy (a duplicate wake-up, a redelivery) of a task that another
    process runs: that process lives on, and so do its task and locks. WorkerLostError does not say
    which process died, so the task row decides: only a task running on this node whose process
    (the row's pid) is gone is interrupted. A pid already reused by a new process keeps the task
    alive until the lease frees it: late, never wrong.
    """
    if task_id is None or not isinstance(exception, WorkerLostError):
        return
    hostname = _node.get("hostname") or getattr(getattr(sender, "request", None), "hostname", None) or "worker"
    rt = process_runtime(hostname)
    row = records.get(rt.engine, task_id)
    if row is None or row.state != TaskState.RUNNING.value:
        logger.info("task %s: a pool process died with its message; the task is %s there", task_id, row and row.state)
        return
    if row.worker != hostname or (row.pid and timelimits.process_start(int(row.pid)) is not None):
        logger.warning(
            "task %s: a pool process died with a copy of its message; the task runs on in %s pid %s",
            task_id,
            row.worker,
            row.pid,
        )
        return
    reason = timelimits.killed_for.pop(task_id, None) or f"its worker process died ({exception})"
    recover_dead(rt, [task_id], reason=reason)


@signals.task_revoked.connect
def _revoked(request: Any = None, terminated: bool = False, **_: Any) -> None:
    """A revoke from `boxtasks task stop`, the API or Flower: treat it as a stop."""
    task_id = getattr(request, "id", None)
    if task_id is None:
        return
    hostname = _node.get("hostname") or getattr(request, "hostname", None) or "worker"
    rt = process_runtime(hostname)
    if task_id in worker_state.revoked:
        records.request_stop(rt.engine, task_id)
    # else: billiard reports a child lost after an earlier graceful terminate as "terminated"
    # (the flag stays on the process): not a stop, so the task ends `interrupted`.
    if not terminated:
        if records.cancel_if_idle(rt.engine, task_id) is not None:
            _wake_ready(rt, rt.manager.release(task_id))
            _give_back_claim(rt, task_id)
        return
    row = records.get(rt.engine, task_id)
    # The row's pid is the one that claimed the task; the request's may be unset when billiard
    # reports a lost child as terminated.
    pid = (row.pid if row is not None else None) or getattr(request, "worker_pid", None)
    if pid:
        after_exit(int(pid), task_id, hostname=hostname, reason="stopped")
    else:
        logger.warning("task %s revoked with no known pid; the sweep frees its locks after the lease", task_id)


def _give_back_claim(rt: Any, task_id: str) -> None:
    """An app task cancelled before it began gives back what its front door claimed (as `boxtasks task stop`)."""
    from hosting.apps import claims

    try:
        claims.give_back_for_task(rt.engine, task_id)
    except Exception:
        logger.exception("task %s: could not give back what its front door claimed", task_id)


def after_exit(pid: int, task_id: str, *, hostname: str, reason: str, timeout: float = 600.0) -> None:
    """In a thread: once process `pid` has exited, end the task (`recover_dead`, saying `reason`) and
    free its locks, unless the task ended itself first (it handled SIGTERM and cleaned up).

    Only if that process was the one running the task (the row says `running` on this node in
    `pid`): a revoke or a time limit that met a second copy of the message leaves the live task alone.
    """
    started = timelimits.process_start(pid)

    def watch() -> None:
        rt = process_runtime(hostname)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if timelimits.process_start(pid) != started or started is None:
                row = records.get(rt.engine, task_id)
                if row is not None and (row.state, row.worker, row.pid) == (TaskState.RUNNING.value, hostname, pid):
                    recover_dead(rt, [task_id], reason=reason)
                elif row is not None and row.state not in _FINAL:
                    logger.warning(
                        "task %s: process %d is gone but the task runs in %s pid %s: left to it",
                        task_id,
                        pid,
                        row.worker,
                        row.pid,
                    )
                return
            row = records.get(rt.engine, task_id)
            if row is None or row.state in _FINAL:
                return  # the task handled SIGTERM and released its locks itself
            time.sleep(0.05)
        logger.warning(
            "task %s: process %d still there after %.0fs; the lease will free its locks", task_id, pid, timeout
        )

    threading.Thread(target=watch, name=f"reap-{task_id[:8]}", daemon=True).start()
