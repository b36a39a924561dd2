"""Worker processes frozen or killed while they hold app locks.

* A task process frozen (SIGSTOP) past its lease loses its locks to the sweep; the waiter runs;
  when the frozen process resumes, its fenced write is refused and nothing of it is committed.
* A worker's main process killed on its own (not its process group, unlike the dead host of
  tests/e2e/test_stop_and_recovery.py): its pool processes die with it (Celery sets PDEATHSIG), no
  orphan goes on holding an app; their messages were acknowledged when the processes took them, so
  none comes back, and the tasks are not run a second time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from models import get_engine
from tasks.client import enqueue
from tests.e2e.harness import Env, Worker, row, wait_for, wait_state
from tests.e2e.kinds import counters
from tests.faults.checks import (
    assert_no_leaked_lock,
    assert_no_overlap,
    describe,
    new_app,
    spans,
    tails,
    wait_all_final,
)

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie runs no code)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _working(task_id: str) -> bool:
    return bool(row(task_id).percent > 0)


def _counter(name: str) -> tuple[int, list[str]]:
    with get_engine().connect() as conn:
        found = conn.execute(select(counters).where(counters.c.name == name)).one()
    return int(found.value), found.writers.split()


def test_frozen_holder_loses_its_locks_and_cannot_commit_when_resumed(
    fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    """SIGSTOP the process of a holder between its fenced read and its fenced write, with a waiter queued;
    the sweep interrupts it after the lease and the waiter writes; SIGCONT: its write is refused."""
    app_id = new_app()
    counters.metadata.create_all(get_engine())
    with get_engine().begin() as conn:
        conn.execute(insert(counters).values(name=app_id, value=0, writers=""))
    # The victim runs alone on a worker of its own queue; the waiter and the sweep (-B) on another.
    frozen_worker = start_worker(name="frz1", concurrency=1, queues=["victim"])
    workers = [frozen_worker, start_worker(name="frz2", concurrency=2, extra_args=["-B"])]

    # It sleeps between its read and its write: long enough to be frozen there, and to outlast the lease.
    victim = enqueue("t_fenced_count", {"app_id": app_id, "seconds": 12.0}, app_id=app_id, queue="victim")
    wait_for(lambda: row(victim).percent >= 10, timeout=30, what="the victim read the counter")
    waiter = enqueue("t_fenced_count", {"app_id": app_id}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting", timeout=30)
    pid = row(victim).pid
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = wait_state(victim, "interrupted", timeout=60)
        assert "heartbeat" in stopped.error
        done = wait_state(waiter, timeout=60)
        assert done.state == "succeeded", f"{describe([done])}\n{tails(workers)}"
        assert _counter(app_id) == (1, [waiter])
    finally:
        os.kill(pid, signal.SIGCONT)
    # Resumed: the victim wakes from its sleep and tries its write under the token it lost.
    wait_for(
        lambda: f"t_fenced_count[{victim}] raised unexpected: LockLostError" in frozen_worker.log.read_text(),
        timeout=60,
        what=f"the resumed victim refused its write (log {frozen_worker.log})",
    )
    assert _counter(app_id) == (1, [waiter]), "the resumed holder's write was committed"
    after = row(victim)
    assert after.state == "interrupted" and after.result is None, describe([after])
    assert_no_leaked_lock()
    # The worker whose process was frozen runs the next task on the app.
    again = enqueue("t_fenced_count", {"app_id": app_id}, app_id=app_id, queue="victim")
    assert wait_state(again, timeout=60).state == "succeeded", tails(workers)
    assert _counter(app_id) == (2, [waiter, again])
    assert_no_leaked_lock()


def test_worker_main_process_killed_alone(fault_env: Env, start_worker: Callable[..., Worker]) -> None:
    """SIGKILL to a worker's main process only, while its two pool processes hold apps and waiters queue:
    the pool processes die with it, another worker's sweep interrupts their tasks after the lease,
    the waiters and the backlog run there, and no second copy starts."""
    doomed = start_worker(name="main1", concurrency=2)
    apps = [new_app() for _ in range(3)]
    holders = [enqueue("t_traced", {"app_id": a, "seconds": 60.0}, app_id=a, queue="apptask") for a in apps[:2]]
    for task_id in holders:
        wait_for(partial(_working, task_id), timeout=30, what=f"{task_id} working")
    children = [row(t).pid for t in holders]
    assert doomed.pid not in children
    survivor = start_worker(name="main2", concurrency=2, extra_args=["-B"])
    workers = [doomed, survivor]
    waiters = [enqueue("t_traced", {"app_id": a, "seconds": 0.2}, app_id=a, queue="apptask") for a in apps[:2]]
    for task_id in waiters:
        wait_state(task_id, "waiting", timeout=30)
    others = [enqueue("t_traced", {"app_id": apps[2], "seconds": 0.2}, app_id=apps[2], queue="apptask") for _ in "ab"]

    os.kill(doomed.pid, signal.SIGKILL)  # the main process only: not its process group
    killed_at = time.time()
    assert doomed.proc is not None
    doomed.proc.wait(timeout=30)
    try:
        for pid in children:
            wait_for(partial(_gone, pid), timeout=30, what=f"orphaned pool process {pid} gone")
    finally:  # orphans that outlived their parent are not left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(doomed.pid, signal.SIGKILL)

    for task_id in holders:
        ended = wait_state(task_id, timeout=60)
        # Interrupted by the sweep ("its heartbeat stopped").
        assert ended.state == "interrupted" and "heart" in ended.error, describe([ended])
        assert ended.result is None, "an interrupted task was run again"
    rows = wait_all_final(workers, timeout=60)
    bad = [r for r in rows if r.id not in holders and r.state != "succeeded"]
    assert not bad, f"{describe(bad)}\n{tails(workers)}"
    for app_id, waiter in zip(apps[:2], waiters, strict=True):
        [span] = [s for s in spans(app_id) if s["task"] == waiter]
        assert span["start"] >= killed_at, "the waiter ran while the killed worker's task held the app"
    assert all(not spans(a) or all(s["task"] not in holders for s in spans(a)) for a in apps)
    assert_no_overlap(apps)
    assert_no_leaked_lock()
    # The messages of the killed tasks were acknowledged when their processes took them: none came back.
    for task_id in holders:
        assert f"Task boxtasks.t_traced[{task_id}] received" not in survivor.log.read_text()
        assert f"Task boxtasks.t_traced[{task_id}] succeeded" not in survivor.log.read_text()
    assert set(others) <= {r.id for r in rows}
    again = enqueue("t_traced", {"app_id": apps[0], "seconds": 0.1}, app_id=apps[0], queue="apptask")
    assert wait_state(again, timeout=60).state == "succeeded", tails(workers)
    assert_no_leaked_lock()
