"""One run of a locked task, from claim to release, with no Celery in it.

    claim the row (queued|waiting -> running; one winner) -> take the whole lock plan
      -> blocked: record `waiting` with why, give the process back; a release wakes the task
      -> granted: heartbeat while the body runs -> final state -> release -> wake who is ready

The Celery layer (`tasks.locking`) supplies the wake-up sender and the stop signal; tests drive
this module directly too.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from lockman import Grant, Granted, LockLostError, LockManager, LockSet, Release, lock_set
from lockman.table import lockset_to_dict
from models import FINAL_STATES, TaskState
from tasks import records
from tasks.errors import TaskStopped

logger = logging.getLogger(__name__)

#: Sends wake-up messages to waiting tasks by id.
Waker = Callable[[Sequence[str]], object]


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: Outcome
    value: Any = None
    error: BaseException | None = None
    message: str = ""


@dataclass
class Runtime:
    """What a worker process brings to every run."""

    manager: LockManager
    engine: Engine
    worker: str
    pid: int
    lease: dt.timedelta
    heartbeat_interval: float
    wake: Waker
    #: Mirrors progress elsewhere (Celery events, so Flower shows it).
    mirror: Callable[[int, str], None] | None = None


@dataclass
class RunContext:
    """The running task as `hosting` sees it (a `hosting.TaskContext`), plus lock steps for nested plans."""

    runtime: Runtime
    task_id: str
    kind: str
    holdings: dict[str, str]
    token: int
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def progress(self, percent: int, message: str) -> None:
        records.progress(self.runtime.engine, self.task_id, percent, message)
        if self.runtime.mirror is not None:
            self.runtime.mirror(percent, message)

    @contextmanager
    def fenced(self) -> Iterator[Connection]:
        grant = Grant(self.task_id, self.token, lock_set(self.holdings))
        with self.runtime.manager.fenced(grant) as conn:
            yield conn

    def acquire_more(self, plan: Mapping[str, str], *, timeout: float | None = None) -> Grant:
        """Take more locks while holding some (a nested request: it never queues behind waiters).

        The task keeps its process while it waits; the row says what it waits for.
        """

        def say_why(queued: Any) -> None:
            records.set_message(self.runtime.engine, self.task_id, queued.describe())

        grant = self.runtime.manager.acquire(self.task_id, plan, label=self.kind, timeout=timeout, on_wait=say_why)
        self._held(grant.locks)
        return grant

    def try_acquire_more(self, plan: Mapping[str, str]) -> Grant | None:
        """Take more locks only if they are free now; never leaves a waiter entry behind."""
        locks = lock_set(plan)
        decision = self.runtime.manager.try_acquire(self.task_id, locks, label=self.kind)
        if isinstance(decision, Granted):
            self._held(locks)
            return Grant(self.task_id, decision.token, locks)
        self.runtime.manager.withdraw(self.task_id)
        return None

    def release_some(self, names: Sequence[str]) -> None:
        release = self.runtime.manager.release(self.task_id, names)
        with self._lock:
            for name in names:
                self.holdings.pop(name, None)
        records.set_locks(self.runtime.engine, self.task_id, {"holds": dict(self.holdings), "token": self.token})
        _wake_ready(self.runtime, release)

    def _held(self, locks: LockSet) -> None:
        with self._lock:
            self.holdings.update(lockset_to_dict(locks))
        records.set_locks(self.runtime.engine, self.task_id, {"holds": dict(self.holdings), "token": self.token})


class _Heartbeat(threading.Thread):
    """Stamps the task row on the database clock until stopped: the proof that this holder lives."""

    def __init__(self, manager: LockManager, task_id: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{task_id[:8]}", daemon=True)
        self._manager = manager
        self._task_id = task_id
        self._interval = interval
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._manager.heartbeat(self._task_id)
            except Exception:  # a blip must not kill the beat; the lease tolerates a missed one
                logger.warning("heartbeat of task %s failed", self._task_id, exc_info=True)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


def execute(rt: Runtime, task_id: str, kind: str, plan: LockSet, body: Callable[[RunContext], Any]) -> RunResult:
    """Run `body` under `plan` for the task row `task_id`, or leave it waiting, or skip a duplicate."""
    claim = records.claim(rt.engine, task_id, worker=rt.worker, pid=rt.pid, plan=lockset_to_dict(plan))
    if not claim.claimed:
        return _not_claimed(rt, task_id, claim.row)
    try:
        acquired = _acquire_or_wait(rt, task_id, kind, plan)
    except TaskStopped:
        _finish_stopped(rt, task_id)
        return RunResult(Outcome.CANCELLED, message="Stopped")
    if not isinstance(acquired, _Acquired):
        return acquired
    token = acquired.granted.token
    ctx = RunContext(rt, task_id, kind, lockset_to_dict(plan), token)
    beat = _Heartbeat(rt.manager, task_id, rt.heartbeat_interval)
    beat.start()
    try:
        value = body(ctx)
    except TaskStopped:
        result = RunResult(Outcome.CANCELLED, message="Stopped")
    except LockLostError as err:
        result = RunResult(Outcome.FAILED, error=err, message=f"Lost its locks: {err}")
    except Exception as err:
        result = RunResult(Outcome.FAILED, error=err, message=f"Failed: {err}")
    else:
        result = RunResult(Outcome.SUCCEEDED, value=value, message="Done")
    finally:
        beat.stop()
    # Written once, with the final state (one commit fewer per task than a write at grant time):
    # the live view of what a task holds is the lock row itself.
    figures = {
        "plan": lockset_to_dict(plan),
        "token": token,
        "acquire_ms": acquired.acquire_ms,
        "cas_retries": acquired.cas_retries,
    }
    _finish(rt, task_id, result, locks=figures)
    return result


@dataclass(frozen=True, slots=True)
class _Acquired:
    granted: Granted
    #: How long the granting compare-and-swap took, and how many of its writes lost a race:
    #: kept in the task row, where /metrics reads them for every worker alike.
    acquire_ms: float
    cas_retries: int


def _acquire_or_wait(rt: Runtime, task_id: str, kind: str, plan: LockSet) -> _Acquired | RunResult:
    while True:
        conflicts = rt.manager.stats.cas_conflicts
        started = time.monotonic()
        decision = rt.manager.try_acquire(task_id, plan, label=kind)
        if isinstance(decision, Granted):
            took = (time.monotonic() - started) * 1000
            return _Acquired(decision, round(took, 3), rt.manager.stats.cas_conflicts - conflicts)
        message = decision.describe()
        if not records.to_waiting(rt.engine, task_id, pid=rt.pid, message=message, waits=lockset_to_dict(plan)):
            # The row moved under us (a stop): leave the queue, tell whoever is ready.
            _wake_ready(rt, rt.manager.release(task_id))
            return RunResult(Outcome.SKIPPED, message="row changed while queuing")
        # A release between our request and the `waiting` write sent a wake-up that found us
        # still `running` and was dropped: look once more now that the row says `waiting`.
        if rt.manager.snapshot().table.blockers_of(task_id):
            logger.info("task %s waits: %s", task_id, message)
            return RunResult(Outcome.WAITING, message=message)
        if not records.claim(rt.engine, task_id, worker=rt.worker, pid=rt.pid, plan=lockset_to_dict(plan)).claimed:
            return RunResult(Outcome.SKIPPED, message="claimed by a wake-up")


def _finish(rt: Runtime, task_id: str, result: RunResult, *, locks: dict[str, Any] | None = None) -> None:
    state = {
        Outcome.SUCCEEDED: TaskState.SUCCEEDED,
        Outcome.FAILED: TaskState.FAILED,
        Outcome.CANCELLED: TaskState.CANCELLED,
    }[result.outcome]
    error = None
    if result.error is not None:
        error = "".join(traceback.format_exception(result.error)).strip()
    # The row goes final first: should this process die before the release below, its locks
    # belong to a finished task and are dead at once, never held by a ghost.
    records.finish(
        rt.engine, task_id, state, message=result.message, result=_jsonable(result.value), error=error, locks=locks
    )
    _wake_ready(rt, rt.manager.release(task_id))


def _finish_stopped(rt: Runtime, task_id: str) -> None:
    records.finish(rt.engine, task_id, TaskState.CANCELLED, message="Stopped")
    _wake_ready(rt, rt.manager.release(task_id))


def _not_claimed(rt: Runtime, task_id: str, row: Any) -> RunResult:
    """A message for a task that is not ours to start: gone, finished, or running elsewhere."""
    if row is None:
        logger.error("task %s has no row; dropping its message", task_id)
        return RunResult(Outcome.SKIPPED, message="no task row")
    if row.state in {s.value for s in FINAL_STATES}:
        return RunResult(Outcome.SKIPPED, message=f"already {row.state}")
    if row.state == TaskState.RUNNING.value and records.heartbeat_is_fresh(row, rt.lease):
        logger.warning("task %s runs on %s pid %s: not starting a second copy", task_id, row.worker, row.pid)
        return RunResult(Outcome.SKIPPED, message="another copy is alive")
    if row.state == TaskState.RUNNING.value:
        recover_dead(rt, [task_id], reason=f"its process ({row.worker} pid {row.pid}) stopped heart-beating")
        return RunResult(Outcome.SKIPPED, message="previous run died")
    return RunResult(Outcome.SKIPPED, message=f"not claimable in state {row.state}")


def recover_dead(rt: Runtime, task_ids: Sequence[str], *, reason: str) -> list[str]:
    """Tasks whose process is known dead: mark them, drop their locks, wake who can go next."""
    if not task_ids:
        return []
    changed = records.interrupt(rt.engine, task_ids, reason=reason)
    _wake_ready(rt, rt.manager.evict(task_ids))
    return changed


def _wake_ready(rt: Runtime, release: Release) -> None:
    owners = [w.owner for w in release.ready]
    if owners:
        try:
            rt.wake(owners)
        except Exception:  # the periodic sweep wakes them if this fails
            logger.warning("could not wake %s", ", ".join(owners), exc_info=True)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return repr(value)
