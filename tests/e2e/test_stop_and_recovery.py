"""Stopping in every state, and recovery from killed children, killed workers and redelivery."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable

import pytest

from lockman import LockManager, LockTable
from tasks.celery import app
from tasks.client import enqueue, stop, task_name
from tests.e2e.harness import Worker, row, wait_for, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]


def _app() -> str:
    return f"a{uuid.uuid4().hex[:8]}"


def _lock_table() -> LockTable:
    manager = LockManager.from_settings()
    try:
        return manager.snapshot().table
    finally:
        manager.dispose()


def _owners() -> set[str]:
    return _lock_table().owners()


def _holding(task_id: str) -> None:
    """Wait until the task holds its locks and works (its body reported progress)."""
    wait_for(lambda: row(task_id).percent > 0 and task_id in _owners(), timeout=30, what=f"{task_id} holding")


def test_stop_queued_task_never_starts(start_worker: Callable[..., Worker]) -> None:
    app_id = _app()
    task_id = enqueue("t_app", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="idle")
    assert stop(task_id) == "cancelled"
    start_worker(concurrency=1, queues=["idle"])
    time.sleep(2)  # the worker has had the message; it must drop it
    r = row(task_id)
    assert r.state == "cancelled" and r.started_at is None and r.result is None
    assert task_id not in _owners()


def test_stop_waiting_task_leaves_the_queue(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=2)
    app_id = _app()
    holder = enqueue("t_app", {"app_id": app_id, "seconds": 2.0}, app_id=app_id, queue="apptask")
    wait_state(holder, "running")
    waiter = enqueue("t_app", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting")
    assert stop(waiter) == "cancelled"
    assert waiter not in _owners()
    wait_state(holder, "succeeded")
    time.sleep(1)
    r = row(waiter)
    assert r.state == "cancelled" and r.result is None
    assert _owners() == set()


def test_stop_running_task_cleans_up_and_hands_off(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=2)
    app_id = _app()
    holder = enqueue("t_app", {"app_id": app_id, "seconds": 60.0}, app_id=app_id, queue="apptask")
    wait_state(holder, "running")
    waiter = enqueue("t_app", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting")
    assert stop(holder, grace=20) == "cancelled"
    r = row(holder)
    assert r.message == "Stopped" and r.finished_at is not None
    wait_state(waiter, "succeeded", timeout=20)
    assert _owners() == set()


def test_stop_sends_sigkill_after_the_grace_period(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=2)
    app_id = _app()
    stubborn = enqueue("t_stubborn", {"app_id": app_id}, app_id=app_id, queue="apptask")
    wait_for(lambda: row(stubborn).percent > 0, timeout=20, what="stubborn task started")
    waiter = enqueue("t_app", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting")
    started = time.monotonic()
    assert stop(stubborn, grace=1.5) == "cancelled"
    assert time.monotonic() - started >= 1.5
    wait_state(waiter, "succeeded", timeout=20)
    assert stubborn not in _owners()


def test_child_killed_is_interrupted_and_waiter_proceeds(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=2)
    app_id = _app()
    victim = enqueue("t_app", {"app_id": app_id, "seconds": 60.0}, app_id=app_id, queue="apptask")
    _holding(victim)
    running = row(victim)
    waiter = enqueue("t_app", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting")
    os.kill(running.pid, signal.SIGKILL)
    r = wait_state(victim, "interrupted", timeout=30)
    assert "died" in r.error
    wait_state(waiter, "succeeded", timeout=30)
    assert _owners() == set()


def test_dead_worker_host_loses_its_locks_after_the_lease(start_worker: Callable[..., Worker]) -> None:
    doomed = start_worker(name="hosta", concurrency=1)
    app_id = _app()
    victim = enqueue("t_app", {"app_id": app_id, "seconds": 60.0}, app_id=app_id, queue="apptask")
    _holding(victim)
    doomed.kill_all()
    # Another host with the periodic sweep (beat embedded) takes over.
    start_worker(name="hostb", concurrency=2, extra_args=["-B"])
    waiter = enqueue("t_app", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    r = wait_state(victim, "interrupted", timeout=60)
    assert "heartbeat" in r.error
    wait_state(waiter, "succeeded", timeout=60)


def test_restarted_node_reconciles_what_it_left_running(start_worker: Callable[..., Worker]) -> None:
    first = start_worker(name="hostc", concurrency=1)
    app_id = _app()
    victim = enqueue("t_app", {"app_id": app_id, "seconds": 60.0}, app_id=app_id, queue="apptask")
    _holding(victim)
    first.kill_all()
    start_worker(name="hostc", concurrency=1)
    r = wait_state(victim, "interrupted", timeout=30)
    assert "restarted" in r.error
    assert victim not in _owners()


def test_redelivered_message_never_runs_a_second_copy(start_worker: Callable[..., Worker]) -> None:
    worker = start_worker(concurrency=2)
    app_id = _app()
    task_id = enqueue("t_app", {"app_id": app_id, "seconds": 2.0}, app_id=app_id, queue="apptask")
    wait_state(task_id, "running")
    app.send_task(task_name("t_app"), kwargs={"app_id": app_id, "seconds": 2.0}, task_id=task_id, queue="apptask")
    wait_for(lambda: "not starting a second copy" in worker.log.read_text(), timeout=20, what="duplicate dropped")
    r = wait_state(task_id, "succeeded", timeout=30)
    assert r.result["end"] - r.result["start"] >= 2.0
    # The row says succeeded before Celery logs it (the body writes the row, then returns).
    line = f"Task boxtasks.t_app[{task_id}] succeeded"
    wait_for(lambda: line in worker.log.read_text(), timeout=10, what="the worker's log of the success")
    assert worker.log.read_text().count(line) == 1
