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
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from hosting.events import notify
from lockman import Grant, Granted, LockLostError, LockManager, LockSet, Queued, Release, lock_set
from lockman.table import lockset_to_dict
from models import FINAL_STATES, TaskState, records
from tasks.errors import LeaseLost, TaskStopped

logger = logging.getLogger(__name__)

#: Sends wake-up messages to waiting tasks by id.
Waker = Callable[[Sequence[str]], object]

T = TypeVar("T")

#: Seconds between heartbeat attempts while they fail.
_HEARTBEAT_RETRY = 1.0
#: The part of the lease a running task keeps for itself: with no beat landed for the rest, it stops
#: its work, before anyone else may judge it dead and take its locks (`models.liveness`).
_LEASE_MARGIN = 0.25
#: Delivered to the task's (main) thread when its lease is lost, to unwind a body that is not calling
#: `progress()` now (asleep, or blocked in a call). SIGUSR1 is billiard's soft time limit.
_LOST_SIGNAL = signal.SIGUSR2


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"
    SKIPPED = "skipped"
    #: The body asked for more locks that are busy: it gives its process back, keeping its locks.
    PARKED = "parked"


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
    #: How long the run's own bookkeeping (claim, waiting, final state, release) is retried while the
    #: database is unreachable: long enough for a restart or a failover, not for an outage of hours.
    db_retry_seconds: float = 120.0


@dataclass
class RunContext:
    """The running task as `hosting` sees it (a `hosting.TaskContext`), plus lock steps for nested plans."""

    runtime: Runtime
    task_id: str
    kind: str
    holdings: dict[str, str]
    token: int
    lease: _Lease | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _checkpoint: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def checkpoint(self) -> dict[str, Any]:
        """What this task has done so far, kept across parking (see `wait_for_more`).

        The body fills it in place as it goes; it is written to the task row only when the task
        parks, and read from there when it runs again.
        """
        if self._checkpoint is None:
            self._checkpoint = records.checkpoint_of(self.runtime.engine, self.task_id)
        return self._checkpoint

    def check(self) -> None:
        """Raise LeaseLost if this task may have lost its locks; a long step calls it between pieces of work."""
        if self.lease is not None:
            self.lease.check()

    def progress(self, percent: int, message: str) -> None:
        """Write the progress to the row; raise LeaseLost when the row is no longer this process's
        running task. A database that is briefly unreachable is waited for, not a failure."""
        self.check()
        rt = self.runtime

        def write() -> bool:
            return records.progress(rt.engine, self.task_id, percent, message, worker=rt.worker, pid=rt.pid)

        if not _db_retry(rt, f"progress of task {self.task_id}", write, check=self.check):
            reason = "its task row is no longer running in this process (ended or judged dead)"
            if self.lease is not None:
                self.lease.lose(reason, quiet=True)
            raise LeaseLost(reason)
        if self.runtime.mirror is not None:
            # A copy for Flower, sent through the broker: the row above is the record, so a broker
            # that is down (restarting) must not fail the task.
            try:
                self.runtime.mirror(percent, message)
            except Exception:
                logger.warning("task %s: could not mirror its progress", self.task_id, exc_info=True)

    @contextmanager
    def fenced(self) -> Iterator[Connection]:
        self.check()
        grant = Grant(self.task_id, self.token, lock_set(self.holdings))
        try:
            with self.runtime.manager.fenced(grant) as conn:
                yield conn
        except LockLostError as err:
            if self.lease is not None:  # the heartbeat may not know yet: stop the rest of the work too
                self.lease.lose(str(err), quiet=True)
            raise

    def acquire_more(self, plan: Mapping[str, str], *, timeout: float | None = None) -> Grant:
        """Take more locks while holding some (a nested request: it never queues behind waiters).

        The task keeps its process while it waits; the row says what it waits for.
        """

        def say_why(queued: Any) -> None:
            rt, what = self.runtime, f"message of task {self.task_id}"
            _db_retry(rt, what, lambda: records.set_message(rt.engine, self.task_id, queued.describe()))

        grant = self.runtime.manager.acquire(self.task_id, plan, label=self.kind, timeout=timeout, on_wait=say_why)
        self._held(grant.locks)
        return grant

    def wait_for_more(self, plan: Mapping[str, str]) -> Grant:
        """Take more locks while holding some; if they are busy, park instead of waiting here.

        Parking gives the worker process back while the task keeps the locks it holds: the task
        row goes `waiting` with `checkpoint` saved, and the release of the busy locks wakes it; it
        then runs its body again from the start, which must skip what `checkpoint` says is done.
        """
        locks = lock_set(plan)
        decision = self.runtime.manager.try_acquire(self.task_id, locks, label=self.kind)
        if isinstance(decision, Granted):
            self._held(locks)
            return Grant(self.task_id, decision.token, locks)
        raise TaskParked(decision, lockset_to_dict(locks))

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
        _wake_ready(self.runtime, release)

    def _held(self, locks: LockSet) -> None:
        # No write to the task row here: a fullbackup takes and gives back a lock per app, and the
        # live view of what a task holds is the lock row itself (`boxtasks locks`).
        with self._lock:
            self.holdings.update(lockset_to_dict(locks))


class TaskParked(BaseException):
    """Raised by `RunContext.wait_for_more` to unwind the body; the runner parks the task.

    A BaseException, so that a body's `except Exception` (an operation reporting its own
    failure) does not swallow it; `finally` blocks run, as they must.
    """

    def __init__(self, queued: Queued, waits: dict[str, str]) -> None:
        super().__init__(queued.describe())
        self.queued = queued
        self.waits = waits


class _Lease:
    """This run's hold on its locks as its own process sees it, shared by the heartbeat and the body.

    Others judge the task dead once its row is silent for the lease, on the database clock
    (`models.liveness`), and may then take its locks. The process judges itself on its own clock,
    from the sending of its last beat that landed (which lands no earlier than it is sent), and gives
    up `limit` seconds after it (the lease less a margin): it stops before anyone may take over.
    The locks are also lost when a beat or a progress write finds the row no longer its running task.

    A loss counts only while the body runs (`entered`): while the task parks or writes its final
    state the row is not `running`, by its own doing.
    """

    def __init__(self, *, limit: float, since: float) -> None:
        self.limit = limit
        self.lost: str | None = None
        self._good_since = since
        self._epoch = 0
        self._in_body = False
        self._raised = False
        self._lock = threading.Lock()
        #: Interrupts the body's thread (set only when that is the main thread, where signals land).
        self.interrupt: Callable[[], None] | None = None

    def token(self) -> int | None:
        """Taken before a beat is sent: which run of the body its answer speaks for (None: none runs)."""
        with self._lock:
            return self._epoch if self._in_body else None

    def landed(self, sent_at: float) -> None:
        with self._lock:
            self._good_since = max(self._good_since, sent_at)

    def renewed(self, sent_at: float) -> None:
        """The row was claimed again (a parked task run on): its heartbeat stamped then."""
        with self._lock:
            self._good_since = max(self._good_since, sent_at)

    def overdue(self) -> float:
        """Seconds past the limit since the last landed beat (negative: time left)."""
        with self._lock:
            return time.monotonic() - self._good_since - self.limit

    def silent_for(self) -> float:
        with self._lock:
            return time.monotonic() - self._good_since

    def lose(self, reason: str, *, token: int | None = None, quiet: bool = False) -> bool:
        """Record the loss (if the body runs, and, with `token`, is the run the news is about);
        unless `quiet` (the caller raises itself), interrupt the body. Whether it was recorded."""
        with self._lock:
            if not self._in_body or (token is not None and token != self._epoch) or self.lost is not None:
                return False
            self.lost = reason
            if quiet:
                self._raised = True
            elif self.interrupt is not None:
                # Under the lock: the body cannot leave `entered` (and its handler go) in between.
                self.interrupt()
        logger.warning("lost its locks: %s", reason)
        return True

    def check(self) -> None:
        """Raise LeaseLost if the locks are lost, or may be (no beat landed within the limit)."""
        if self.lost is None and self.overdue() > 0:
            self.lose(f"no heartbeat reached the database for {self.silent_for():.1f}s", quiet=True)
        if self.lost is not None:
            self._raised = True
            raise LeaseLost(self.lost)

    def on_signal(self, signum: int, frame: object) -> None:
        """The handler of `_LOST_SIGNAL`: raise in the body, once, and only while it runs."""
        if self._in_body and self.lost is not None and not self._raised:
            self._raised = True
            raise LeaseLost(self.lost)

    @contextmanager
    def entered(self) -> Iterator[None]:
        with self._lock:
            self._epoch += 1
            self._in_body = True
        try:
            yield
        finally:
            with self._lock:
                self._in_body = False


class _Heartbeat(threading.Thread):
    """Stamps the task row on the database clock until stopped: the proof that this holder lives.

    With a `lease`, it also watches for the loss of the locks (a beat that finds the row no longer
    this process's running task; no beat landed within the lease's limit) and reports it there. A
    second thread keeps the time, so that a beat stuck on an unanswering database does not hold up
    the news. `beat` stamps the row (default: `manager.heartbeat`, unconditional).
    """

    def __init__(
        self,
        manager: LockManager,
        task_id: str,
        interval: float,
        *,
        lease: _Lease | None = None,
        beat: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{task_id[:8]}", daemon=True)
        self._task_id = task_id
        self._lease = lease
        self._beat = beat or (lambda: manager.heartbeat(task_id))
        self._interval = interval if lease is None else min(interval, lease.limit / 2)
        self._stopped = threading.Event()
        self._clock = threading.Thread(target=self._keep_time, name=f"leaseclock-{task_id[:8]}", daemon=True)

    def start(self) -> None:
        super().start()
        if self._lease is not None:
            self._clock.start()

    def run(self) -> None:
        wait = self._interval
        while not self._stopped.wait(wait):
            lease = self._lease
            token = lease.token() if lease is not None else None
            sent_at = time.monotonic()
            try:
                ours = self._beat()
            except Exception:  # a blip must not kill the beat
                # Try again soon: a database that was down gives a holder one lease from its restart
                # to beat again (`models.liveness`), not one lease from the last beat.
                logger.warning("heartbeat of task %s failed", self._task_id, exc_info=True)
                wait = min(self._interval, _HEARTBEAT_RETRY)
                continue
            wait = self._interval
            if lease is None:
                continue
            if ours:
                lease.landed(sent_at)
            elif token is not None and lease.lose(
                "its heartbeat found its task row no longer running in this process (ended or judged dead)",
                token=token,
            ):
                return  # nothing of ours left to stamp

    def _keep_time(self) -> None:
        lease = self._lease
        assert lease is not None
        while True:
            left = -lease.overdue()
            if left <= 0 and lease.token() is not None:
                lease.lose(f"no heartbeat reached the database for {lease.silent_for():.1f}s")
            if lease.lost is not None:
                return
            # Overdue between runs of the body (parked, finishing): nothing to stop; look again later.
            if self._stopped.wait(min(left, 1.0) if left > 0 else 0.5):
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
        if self._clock.is_alive():
            self._clock.join(timeout=5)


def execute(rt: Runtime, task_id: str, kind: str, plan: LockSet, body: Callable[[RunContext], Any]) -> RunResult:
    """Run `body` under `plan` for the task row `task_id`, or leave it waiting, or skip a duplicate."""
    claim_sent = time.monotonic()  # the claim stamps the row's heartbeat: the lease counts from here
    claim = _claim(rt, task_id, plan)
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
    lease = _Lease(limit=rt.lease.total_seconds() * (1 - _LEASE_MARGIN), since=claim_sent)
    ctx = RunContext(rt, task_id, kind, lockset_to_dict(plan), token, lease=lease)
    beat = _Heartbeat(
        rt.manager,
        task_id,
        rt.heartbeat_interval,
        lease=lease,
        beat=lambda: records.beat(rt.engine, task_id, worker=rt.worker, pid=rt.pid),
    )
    beat.start()
    # The heartbeat goes on until the final state is written: while that write waits for the
    # database to come back, this task is alive, not a holder for the sweep to interrupt.
    try:
        with _interruptible(lease):
            while True:
                result = _run_body(ctx, body)
                if result.outcome is not Outcome.PARKED:
                    break
                parking = time.monotonic()
                parked = _park(rt, ctx, plan, result)
                if parked is not None:
                    return parked
                # Woken before it slept (the busy locks were released meanwhile): run on from the checkpoint.
                lease.renewed(parking)
        # Written once, with the final state (one commit fewer per task than a write at grant time):
        # the live view of what a task holds is the lock row itself.
        figures = {
            "plan": lockset_to_dict(plan),
            "token": token,
            "acquire_ms": acquired.acquire_ms,
            "cas_retries": acquired.cas_retries,
        }
        _finish(rt, task_id, result, locks=figures)
    finally:
        beat.stop()
    return result


@contextmanager
def _interruptible(lease: _Lease) -> Iterator[None]:
    """Let the lease's loss interrupt the body in this thread, if it is the main thread (where signals land).

    Elsewhere (a thread pool) the body learns of it at its next `progress()`, `fenced()` or `check()`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    main = threading.main_thread().ident
    assert main is not None
    previous = signal.signal(_LOST_SIGNAL, lease.on_signal)
    lease.interrupt = lambda: signal.pthread_kill(main, _LOST_SIGNAL)
    try:
        yield
    finally:
        lease.interrupt = None
        # Never back to the default action (which ends the process): a signal still on its way
        # after the body is ignored.
        signal.signal(_LOST_SIGNAL, signal.SIG_IGN if previous in (signal.SIG_DFL, None) else previous)


def _run_body(ctx: RunContext, body: Callable[[RunContext], Any]) -> RunResult:
    try:
        if ctx.lease is None:
            value = body(ctx)
        else:
            with ctx.lease.entered():
                ctx.lease.check()  # granted too late (the claim's stamp is nearly a lease old): not ours
                value = body(ctx)
    except LeaseLost as lost:
        err = LockLostError(f"{ctx.task_id} lost its locks: {lost}")
        return RunResult(Outcome.FAILED, error=err, message=f"Lost its locks: {lost}")
    except TaskStopped:
        return RunResult(Outcome.CANCELLED, message="Stopped")
    except TaskParked as parked:
        return RunResult(Outcome.PARKED, value=parked, message=str(parked))
    except LockLostError as err:
        return RunResult(Outcome.FAILED, error=err, message=f"Lost its locks: {err}")
    except Exception as err:
        return RunResult(Outcome.FAILED, error=err, message=f"Failed: {err}")
    return RunResult(Outcome.SUCCEEDED, value=value, message="Done")


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
        # A request is idempotent: asked again, a grant stays a grant and a waiter keeps its place.
        decision = _db_retry(
            rt, f"lock request of task {task_id}", lambda: rt.manager.try_acquire(task_id, plan, label=kind)
        )
        if isinstance(decision, Granted):
            took = (time.monotonic() - started) * 1000
            return _Acquired(decision, round(took, 3), rt.manager.stats.cas_conflicts - conflicts)
        waiting = _to_waiting(rt, task_id, plan, decision.describe(), lockset_to_dict(plan))
        if waiting is not None:
            return waiting
        # The locks came free while we wrote `waiting`: ask again.


def _to_waiting(
    rt: Runtime,
    task_id: str,
    plan: LockSet,
    message: str,
    waits: dict[str, str],
    checkpoint: dict[str, Any] | None = None,
) -> RunResult | None:
    """Give the process back: write `waiting` (with `checkpoint`: park, keeping held locks).

    Returns WAITING, or SKIPPED when the row moved under us (a stop, or the task judged dead: what
    it held is no longer ours); or None when the task, claimed again, must run on in this process:
    a release between the request and the `waiting` write sent a wake-up that found it still
    `running` and was dropped, so it looks once more now that the row says `waiting`.
    """
    doing = "waiting" if checkpoint is None else "parking"
    tries = 0

    def once() -> str:
        nonlocal tries
        tries += 1
        if records.to_waiting(
            rt.engine, task_id, worker=rt.worker, pid=rt.pid, message=message, waits=waits, checkpoint=checkpoint
        ):
            return "written"
        # Sent again after a lost answer, the write finds the row already as the first one left it
        # (still ours), or claimed since by the wake-up of a release: the task is then another
        # process's, whatever its state now, and so are its locks and its place in the queue.
        row = records.get(rt.engine, task_id) if tries > 1 else None
        if row is None:
            return "moved"
        if (row.worker, row.pid) != (rt.worker, rt.pid):
            return "taken"
        return "written" if _landed(rt, row, TaskState.WAITING) else "moved"

    written = _db_retry(rt, f"{doing} state of task {task_id}", once)
    if written == "taken":
        return RunResult(Outcome.SKIPPED, message="claimed by a wake-up")
    if written == "moved":
        # A stop, or the task judged dead: whatever it held is no longer ours to keep.
        _wake_ready(rt, _db_retry(rt, f"lock release of task {task_id}", lambda: rt.manager.release(task_id)))
        return RunResult(Outcome.SKIPPED, message=f"row changed while {doing}")
    if _db_retry(rt, "lock row read", lambda: rt.manager.snapshot()).table.blockers_of(task_id):
        logger.info("task %s %s: %s", task_id, "waits" if checkpoint is None else "parks", message)
        return RunResult(Outcome.WAITING, message=message)
    if not _claim(rt, task_id, plan).claimed:
        return RunResult(Outcome.SKIPPED, message="claimed by a wake-up")
    return None


def _park(rt: Runtime, ctx: RunContext, plan: LockSet, result: RunResult) -> RunResult | None:
    """The body waits for busy locks: give the process back, keeping the locks it holds.

    Returns the run's result (WAITING, or SKIPPED when the row moved), or None when the locks
    were released between the request and the `waiting` write (that wake-up found the task still
    running and was dropped): the body then runs again at once, in this process.
    """
    parked: TaskParked = result.value
    task_id = ctx.task_id
    saved = _jsonable(ctx.checkpoint)
    waiting = _to_waiting(
        rt, task_id, plan, result.message, parked.waits, checkpoint=saved if isinstance(saved, dict) else {}
    )
    if waiting is not None:
        return waiting
    # As after a wake-up (whose plan request drops it): no waiter entry left for the body to trip on.
    _wake_ready(rt, _db_retry(rt, f"waiter entry of task {task_id}", lambda: rt.manager.withdraw(task_id)))
    return None


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
    value = _jsonable(result.value)
    _db_retry(
        rt,
        f"final state of task {task_id}",
        lambda: records.finish(
            rt.engine, task_id, state, message=result.message, result=value, error=error, locks=locks
        ),
    )
    try:
        release = _db_retry(rt, f"lock release of task {task_id}", lambda: rt.manager.release(task_id))
    except DBAPIError:  # the task is final, so its locks are dead: the next writer or the sweep drops them
        logger.warning("task %s: could not release its locks; the sweep will", task_id, exc_info=True)
        return
    _wake_ready(rt, release)


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
    if row.state == TaskState.RUNNING.value and records.heartbeat_is_fresh(rt.engine, row, rt.lease):
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
    notify.report_interrupted(rt.engine, changed, reason=reason)  # the one place interrupted tasks are news
    return changed


def _wake_ready(rt: Runtime, release: Release) -> None:
    owners = [w.owner for w in release.ready]
    if owners:
        try:
            rt.wake(owners)
        except Exception:  # the periodic sweep wakes them if this fails
            logger.warning("could not wake %s", ", ".join(owners), exc_info=True)


def _claim(rt: Runtime, task_id: str, plan: LockSet) -> records.Claim:
    """`records.claim`, retried while the database is unreachable.

    A claim whose commit landed but whose answer was lost finds, when retried, the row running in
    this very process: that is our claim, not a second copy.
    """
    tries = 0

    def once() -> records.Claim:
        nonlocal tries
        tries += 1
        claim = records.claim(rt.engine, task_id, worker=rt.worker, pid=rt.pid, plan=lockset_to_dict(plan))
        if not claim.claimed and tries > 1 and _landed(rt, claim.row, TaskState.RUNNING):
            return records.Claim(True, None)
        return claim

    return _db_retry(rt, f"claim of task {task_id}", once)


def _landed(rt: Runtime, row: Any, state: TaskState) -> bool:
    """Whether `row` is as this process's own write left it (`state`, our worker and pid): sent
    again after a lost answer, a conditional write finds its first send already applied."""
    return row is not None and row.state == state.value and (row.worker, row.pid) == (rt.worker, rt.pid)


def _db_retry(rt: Runtime, what: str, step: Callable[[], T], *, check: Callable[[], None] | None = None) -> T:
    """Run `step` (an idempotent write or a read), again and again while the database is unreachable.

    A restarted or failed-over database must not leave a task `queued` with its message gone, or
    `running` with no process, or its locks held until the lease runs out: the step is retried,
    with backoff, for up to `rt.db_retry_seconds`; then the error goes up. `check` runs before every
    try and may raise to end the retries (a running task's lease: `RunContext.check`).
    """
    deadline = time.monotonic() + rt.db_retry_seconds
    delay = 0.1
    while True:
        if check is not None:
            check()
        try:
            return step()
        except DBAPIError as err:
            if not _unreachable(err) or time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: database unreachable (%s); retrying in %.1fs", what, _first_line(err), delay)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _unreachable(err: DBAPIError) -> bool:
    """A lost, refused or killed connection (or a server shutting down), not a wrong statement."""
    return err.connection_invalidated or isinstance(err, OperationalError | InterfaceError)


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0][:200]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return repr(value)
