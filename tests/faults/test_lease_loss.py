"""Never two tasks working on one app, even under faults (issue #16).

* A pool process killed while it held a second copy of a running task's message does not end that
  task: only the process that claimed it may be declared dead, once it is gone.
* A task frozen past its lease, or cut off from the database, stops working when it learns (at once
  on resuming; within the lease when cut off) that it lost its locks.
* A short database restart is waited out by the progress writes of running tasks.
* Chaos: random kills and freezes under a stream of app tasks, then the invariants.

Work is what `t_steps` logs step by step (tests/e2e/kinds.py): two tasks whose steps interleave on
one app worked on it at once.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pymysql
import pytest

from lockman import LockManager, lock_set
from models import get_engine, make_engine, records
from tasks.celery import app as celery_app
from tasks.client import enqueue, task_name
from tasks.runner import Outcome, RunContext, Runtime, execute
from tests.e2e.harness import Env, Worker, row, wait_for, wait_state
from tests.faults.checks import (
    all_tasks,
    assert_never_two_working,
    assert_no_leaked_lock,
    describe,
    new_app,
    steps,
    tails,
    wait_all_final,
)
from tests.faults.servers import PrivateMariaDB

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]


def _steps_of(app_id: str, task_id: str) -> list[float]:
    return [s["t"] for s in steps(app_id) if s["task"] == task_id]


def _stepping(app_id: str, task_id: str, count: int = 3) -> bool:
    return len(_steps_of(app_id, task_id)) >= count


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _gone(pid: int) -> bool:
    """Exited and reaped by its parent (the pool has seen it die)."""
    return not Path(f"/proc/{pid}").exists()


def _send_copy(task_id: str) -> None:
    """A second message for a task that already runs, as a doubled wake-up or a redelivery sends it."""
    found = row(task_id)
    celery_app.send_task(task_name(found.type), kwargs=found.args, task_id=task_id, queue=found.queue)


# ----------------------------------------------------------------------------- item 1


def test_process_killed_with_a_copy_of_a_running_tasks_message(
    mariadb_server: PrivateMariaDB, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    """A second copy of a running task's message reaches the other pool process, which is SIGKILLed while it
    holds it (caught in its claim, held up on the task row): the running task goes on, keeps its app, and ends
    `succeeded`; the waiter on the app starts only after it."""
    fault_env.lease = 30.0  # the live task's own writes wait on the locked row meanwhile: not a loss
    fault_env.apply_to_this_process()
    worker = start_worker(name="dup1", concurrency=2)
    app_id = new_app()
    live = enqueue("t_steps", {"app_id": app_id, "steps": 60, "step_seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_for(partial(_stepping, app_id, live), timeout=60, what="the live task working")
    waiter = enqueue("t_steps", {"app_id": app_id, "steps": 3, "step_seconds": 0.05}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting", timeout=30)
    live_pid = row(live).pid
    database = fault_env.database_url.rsplit("/", 1)[1]
    blocker = pymysql.connect(host="127.0.0.1", port=mariadb_server.port, user="root", database=database)
    try:
        with blocker.cursor() as cur:  # the task row, locked: the copy's claim waits on it
            cur.execute("BEGIN")
            cur.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (live,))
        _send_copy(live)

        def copy_claiming() -> int | None:
            for (info,) in mariadb_server.execute("SELECT info FROM information_schema.processlist"):
                text = str(info or "")
                if text.startswith("UPDATE tasks SET state") and live in text:
                    for pid in _children(worker.pid):
                        if pid != live_pid and f"pid={pid}" in text.replace(" ", ""):
                            return pid
            return None

        copy_pid = wait_for(copy_claiming, timeout=30, what="the copy's claim held up on the task row")
        assert _parent(copy_pid) == worker.pid
        os.kill(copy_pid, signal.SIGKILL)
        wait_for(partial(_gone, copy_pid), timeout=30, what="the killed pool process reaped")
    finally:
        blocker.rollback()
        blocker.close()
    wait_for(lambda: "WorkerLostError" in worker.log.read_text(), timeout=60, what="the pool saw the loss")
    done = wait_state(live, timeout=90)
    assert done.state == "succeeded", f"the live task was ended by another process's death:\n{describe([done])}"
    assert len(_steps_of(app_id, live)) == 60
    after = wait_state(waiter, timeout=60)
    assert after.state == "succeeded", f"{describe([after])}\n{tails([worker])}"
    assert_never_two_working([app_id])
    assert_no_leaked_lock()


# ----------------------------------------------------------------------------- item 2


def test_frozen_holder_stops_working_when_resumed(fault_env: Env, start_worker: Callable[..., Worker]) -> None:
    """SIGSTOP a holder past its lease; the sweep frees the app and the waiter works on it; SIGCONT while the
    waiter works: the resumed holder does no further step, and its process serves the next task."""
    frozen_worker = start_worker(name="lost1", concurrency=1, queues=["victim"])
    workers = [frozen_worker, start_worker(name="lost2", concurrency=2, extra_args=["-B"])]
    app_id = new_app()
    holder = enqueue("t_steps", {"app_id": app_id, "steps": 300, "step_seconds": 0.1}, app_id=app_id, queue="victim")
    wait_for(partial(_stepping, app_id, holder), timeout=60, what="the holder working")
    waiter = enqueue("t_steps", {"app_id": app_id, "steps": 40, "step_seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting", timeout=30)
    pid = row(holder).pid
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = wait_state(holder, "interrupted", timeout=60)
        assert "heartbeat" in stopped.error
        wait_for(partial(_stepping, app_id, waiter, 5), timeout=60, what="the waiter working")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(
        lambda: f"t_steps[{holder}] raised unexpected: LockLostError" in frozen_worker.log.read_text(),
        timeout=60,
        what=f"the resumed holder stopped (log {frozen_worker.log})",
    )
    assert wait_state(waiter, timeout=60).state == "succeeded", tails(workers)
    assert_never_two_working([app_id])
    after = row(holder)
    assert after.state == "interrupted" and after.result is None, describe([after])
    assert len(_steps_of(app_id, holder)) < 300
    assert_no_leaked_lock()
    again = enqueue("t_steps", {"app_id": app_id, "steps": 2, "step_seconds": 0.01}, app_id=app_id, queue="victim")
    assert wait_state(again, timeout=60).state == "succeeded", tails(workers)
    assert_never_two_working([app_id])
    assert_no_leaked_lock()


@pytest.fixture
def runtime(mariadb_server: PrivateMariaDB) -> Iterator[Runtime]:
    """The runner's view of one worker process (this one), on the private MariaDB; lease 4 s."""
    url = mariadb_server.new_database()
    manager = LockManager(url, row_id="main", lease=4.0)
    engine = make_engine(url)
    yield Runtime(
        manager=manager,
        engine=engine,
        worker="node@faults",
        pid=os.getpid(),
        lease=manager.lease,
        heartbeat_interval=0.5,
        wake=lambda ids: None,
        db_retry_seconds=120.0,
    )
    manager.dispose()
    engine.dispose()


def test_cut_off_from_the_database_stops_the_work_within_the_lease(
    mariadb_server: PrivateMariaDB, runtime: Runtime
) -> None:
    """The database goes away under a task whose body only sleeps (no progress write to notice): with no beat
    landed for the lease less its margin, the body is interrupted while the database is still away; when it
    is back, the task ends saying it lost its locks, and they are free."""
    task_id = records.create(runtime.engine, kind="t", queue="apptask", args={}, app_id="a")
    working = threading.Event()
    stopped = threading.Event()
    restarted = threading.Event()
    stopped_while_away: list[bool] = []

    def body(ctx: RunContext) -> str:
        working.set()
        try:
            for _ in range(300):  # 60 s of work that never writes progress
                time.sleep(0.2)
        finally:
            stopped_while_away.append(not restarted.is_set())
            stopped.set()
        return "done"

    def cut_off() -> None:
        working.wait(60)
        mariadb_server.stop()
        try:
            stopped.wait(40)
        finally:
            restarted.set()
            mariadb_server.start()

    thread = threading.Thread(target=cut_off, daemon=True)
    thread.start()
    try:
        result = execute(runtime, task_id, "t", lock_set({"platform": "S", "app:a": "X"}), body)
    finally:
        thread.join(timeout=120)
    assert stopped_while_away == [True], f"the body worked on after the lease with no beat landed: {result}"
    assert result.outcome is Outcome.FAILED and "no heartbeat reached the database" in result.message, result
    done = records.get(runtime.engine, task_id)
    assert done is not None and done.state == "failed" and "Lost its locks" in done.message, done
    assert runtime.manager.snapshot().table.owners() == set()


# ----------------------------------------------------------------------------- item 4


def test_running_tasks_ride_out_a_short_database_restart(
    mariadb_server: PrivateMariaDB, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    """Four tasks write progress at every step while the database restarts (down 3 s): all of them succeed."""
    fault_env.lease = 40.0  # the restart is a blip well inside the lease
    fault_env.apply_to_this_process()
    workers = [start_worker(name="blip1", concurrency=2), start_worker(name="blip2", concurrency=2)]
    apps = [new_app() for _ in range(4)]
    sent = [
        enqueue("t_steps", {"app_id": a, "steps": 100, "step_seconds": 0.1}, app_id=a, queue="apptask") for a in apps
    ]
    for app_id, task_id in zip(apps, sent, strict=True):
        wait_for(partial(_stepping, app_id, task_id, 5), timeout=60, what=f"{task_id} working")
    mariadb_server.stop()
    time.sleep(3.0)
    mariadb_server.start()
    get_engine().dispose()  # this process's pool holds connections to the server as it was
    rows = wait_all_final(workers, timeout=180)
    failed = [r for r in rows if r.state != "succeeded"]
    assert not failed, f"a database blip failed running tasks:\n{describe(failed)}\n{tails(workers)}"
    for app_id, task_id in zip(apps, sent, strict=True):
        assert len(_steps_of(app_id, task_id)) == 100
    assert_never_two_working(apps)
    assert_no_leaked_lock()


# ----------------------------------------------------------------------------- chaos


class _Chaos:
    """From a thread: every 0.3-1.5 s, one fault to a random running task of our workers' pool processes:
    SIGKILL, a freeze (SIGSTOP, then SIGCONT 0.5-7 s later: short ones are blips, long ones outlast the
    lease), or a second copy of its message."""

    def __init__(self, workers: list[Worker], seed: int) -> None:
        self.workers = workers
        self.done: list[tuple[str, str, int]] = []
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._frozen: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def __enter__(self) -> _Chaos:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for pid in list(self._frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _ours(self, pid: int) -> bool:
        return _parent(pid) in {w.pid for w in self.workers}

    def _run(self) -> None:
        while not self._stop.wait(self._rng.uniform(0.3, 1.5)):
            now = time.monotonic()
            for pid, until in list(self._frozen.items()):
                if until <= now:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                    del self._frozen[pid]
            running = [r for r in all_tasks() if r.state == "running" and r.pid and self._ours(int(r.pid))]
            if not running:
                continue
            victim = self._rng.choice(running)
            pid = int(victim.pid)
            action = self._rng.choice(["kill", "freeze", "freeze", "copy"])
            if action == "kill":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            elif action == "freeze" and pid not in self._frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    self._frozen[pid] = now + self._rng.uniform(0.5, 7.0)
            elif action == "copy":
                _send_copy(victim.id)
            self.done.append((action, victim.id, pid))


class _StepStream:
    """Sends `t_steps` tasks round-robin over `apps` from a thread until stopped."""

    def __init__(self, apps: list[str], seed: int) -> None:
        self.apps = apps
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steps-stream", daemon=True)

    def __enter__(self) -> _StepStream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.25):
            app_id = self.apps[i % len(self.apps)]
            i += 1
            args = {"app_id": app_id, "steps": self._rng.randint(3, 25), "step_seconds": 0.1}
            self.sent.append((enqueue("t_steps", args, app_id=app_id, queue="apptask"), args))


def test_chaos_never_two_tasks_on_one_app(fault_env: Env, start_worker: Callable[..., Worker]) -> None:
    """75 s of random SIGKILLs, freezes and doubled messages under a stream of app tasks on four apps; then:
    never two tasks working on one app, nothing stuck, no lock left to a final task, final states true."""
    seed = int(os.environ.get("CHAOS_SEED", str(random.randrange(1 << 30))))
    workers = [
        start_worker(name="chaos1", concurrency=3, extra_args=["-B"]),
        start_worker(name="chaos2", concurrency=3),
    ]
    apps = [new_app() for _ in range(4)]
    with _StepStream(apps, seed) as stream, _Chaos(workers, seed) as chaos:
        time.sleep(75)
    for w in workers:
        assert w.proc is not None and w.proc.poll() is None, f"worker {w.nodename} died (seed {seed}):\n{w.tail()}"
    rows = wait_all_final(workers, timeout=240)
    context = f"(seed {seed}; {len(chaos.done)} faults: {sorted({a for a, _, _ in chaos.done})})"
    assert len(rows) == len(stream.sent) and len(rows) > 20, context
    assert_never_two_working(apps)
    assert_no_leaked_lock()
    by_id = {r.id: r for r in rows}
    for task_id, args in stream.sent:
        r = by_id[task_id]
        done = len(_steps_of(args["app_id"], task_id))
        if r.state == "succeeded":
            assert r.result == {"steps": args["steps"]} and done == args["steps"], f"{context}\n{describe([r])}"
        else:  # killed, or stopped on losing its locks (maybe after its last step, before its final write)
            assert r.state in {"interrupted", "failed"} and r.result is None, f"{context}\n{describe([r])}"
            assert done <= args["steps"], f"{context}\n{describe([r])}"
    print(f"{context}: {len(rows)} tasks, {sum(r.state == 'succeeded' for r in rows)} succeeded")  # noqa: T201
