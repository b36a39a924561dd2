"""Time limits, set per kind through the settings' environment, on real workers.

Soft: the task's body gets TaskTimedOut, its cleanup runs (the traced span is written), it ends
`failed` saying it timed out, and its locks go to the waiter. Hard: a task that swallows the soft
limit is killed; it ends `interrupted` saying so, and its locks are freed only once its process is gone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.client import enqueue
from tests.e2e.harness import Env, Worker, row, wait_for, wait_state
from tests.faults.checks import assert_no_leaked_lock, describe, lock_table, new_app, spans, tails

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]

SOFT = 2.0
GRACE = 2.0


def _limits(env: Env, **kinds: float) -> None:
    env.extra["BOXTASKS_TIME_LIMITS"] = json.dumps(kinds)
    env.extra["BOXTASKS_TIME_LIMIT_GRACE_SECONDS"] = str(GRACE)
    env.apply_to_this_process()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_soft_time_limit_cleans_up_and_fails(fault_env: Env, start_worker: Callable[..., Worker]) -> None:
    _limits(fault_env, t_traced=SOFT)
    worker = start_worker(name="soft1", concurrency=2)
    app_id = new_app()
    slow = enqueue("t_traced", {"app_id": app_id, "seconds": 60.0}, app_id=app_id, queue="apptask")
    wait_state(slow, "running", timeout=60)
    waiter = enqueue("t_traced", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")

    ended = wait_state(slow, timeout=60)
    assert ended.state == "failed", f"{describe([ended])}\n{tails([worker])}"
    assert f"timed out after {SOFT:g}s" in ended.message, describe([ended])
    assert "TaskTimedOut" in ended.error
    [span] = [s for s in spans(app_id) if s["task"] == slow]  # its cleanup (the `finally`) ran
    assert span["end"] - span["start"] < 30
    assert wait_state(waiter, timeout=60).state == "succeeded", tails([worker])
    [after] = [s for s in spans(app_id) if s["task"] == waiter]
    assert after["start"] >= span["end"], "the waiter ran before the timed-out task let go"
    assert_no_leaked_lock()


def test_hard_time_limit_kills_and_frees_locks_once_gone(fault_env: Env, start_worker: Callable[..., Worker]) -> None:
    _limits(fault_env, t_hang=SOFT)
    worker = start_worker(name="hard1", concurrency=2)
    app_id = new_app()
    stuck = enqueue("t_hang", {"app_id": app_id}, app_id=app_id, queue="apptask")
    wait_for(lambda: row(stuck).percent > 0, timeout=60, what="the stuck task working")
    pid = int(row(stuck).pid)
    waiter = enqueue("t_traced", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting", timeout=60)

    # Until its process is gone the stuck task keeps its locks: read the locks, then the process.
    deadline = time.monotonic() + 120
    while True:
        held = stuck in lock_table().owners()
        alive = _alive(pid)
        assert held or not alive, f"the locks of {stuck} were freed while its process {pid} was alive"
        if not alive:
            break
        assert time.monotonic() < deadline, f"process {pid} still alive:\n{tails([worker])}"
        time.sleep(0.05)

    ended = wait_state(stuck, timeout=60)
    assert ended.state == "interrupted", f"{describe([ended])}\n{tails([worker])}"
    assert f"timed out after {SOFT + GRACE:g}s: killed" in ended.message, describe([ended])
    assert wait_state(waiter, timeout=60).state == "succeeded", tails([worker])
    assert_no_leaked_lock()
    assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
    again = enqueue("t_traced", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    assert wait_state(again, timeout=60).state == "succeeded", tails([worker])
