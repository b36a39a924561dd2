"""Different apps in parallel, one app never twice, fullbackup beside apptasks, update, FIFO, scaling."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tasks.client import enqueue
from tests.e2e.harness import Worker, row, wait_for, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]


def _app() -> str:
    return f"a{uuid.uuid4().hex[:8]}"


def _interval(task_id: str) -> tuple[float, float]:
    result = wait_state(task_id, "succeeded").result
    return result["start"], result["end"]


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_different_apps_overlap_and_one_app_never_does(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=4)
    a, b = _app(), _app()
    ids = {
        (app, i): enqueue("t_app", {"app_id": app, "seconds": 1.0}, app_id=app, queue="apptask")
        for app in (a, b)
        for i in range(2)
    }
    spans = {key: _interval(task_id) for key, task_id in ids.items()}
    assert not _overlap(spans[(a, 0)], spans[(a, 1)]), "two tasks on one app overlapped"
    assert not _overlap(spans[(b, 0)], spans[(b, 1)]), "two tasks on one app overlapped"
    assert any(_overlap(spans[(a, i)], spans[(b, j)]) for i in range(2) for j in range(2)), (
        "tasks on different apps never ran side by side"
    )


def test_waiting_task_says_why_and_gives_its_process_back(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=2)
    app = _app()
    first = enqueue("t_app", {"app_id": app, "seconds": 3.0}, app_id=app, queue="apptask")
    wait_state(first, "running")
    second = enqueue("t_app", {"app_id": app, "seconds": 0.1}, app_id=app, queue="apptask")
    waiting = wait_state(second, "waiting")
    assert waiting.message == f"Waiting for t_app (task {first[:8]}…) to release app:{app}"
    assert waiting.started_at is None, "a worker claimed it, but its work has not begun"
    # Its process is free: a task on another app runs at once on the 2-process worker.
    other = _app()
    third = enqueue("t_app", {"app_id": other, "seconds": 0.1}, app_id=other, queue="apptask")
    wait_state(third, "succeeded", timeout=10)
    assert row(first).state == "running"
    assert _interval(second)[0] >= _interval(first)[1]
    # Not listed as running while the first task held its app: its work began after that task ended.
    done, held = row(second), row(first)
    assert done.started_at is not None and held.finished_at is not None and done.started_at >= held.finished_at


def test_fullbackup_does_not_delay_apps_it_is_not_copying(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=3)
    busy, free, elsewhere = _app(), _app(), _app()
    busy_task = enqueue("t_app", {"app_id": busy, "seconds": 2.0}, app_id=busy, queue="apptask")
    wait_state(busy_task, "running")
    backup = enqueue("t_fullbackup", {"app_ids": [busy, free], "seconds_per_app": 1.0}, queue="backup")
    wait_state(backup, "running")
    other = enqueue("t_app", {"app_id": elsewhere, "seconds": 0.2}, app_id=elsewhere, queue="apptask")
    other_span = _interval(other)
    result = wait_state(backup, "succeeded", timeout=60).result
    # The free app went first, the busy one after its own task ended.
    assert result["copied"] == [free, busy]
    assert result["deferred"] == [busy]
    assert result["results"][busy]["start"] >= _interval(busy_task)[1]
    # The app it was not copying ran during the backup, not after it.
    assert other_span[1] < result["results"][busy]["end"]


def test_fullbackup_parks_for_a_busy_app_and_gives_its_process_back(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=2)
    busy, free, later = _app(), _app(), _app()
    busy_task = enqueue("t_app", {"app_id": busy, "seconds": 4.0}, app_id=busy, queue="apptask")
    wait_state(busy_task, "running")
    backup = enqueue("t_fullbackup", {"app_ids": [free, busy], "seconds_per_app": 0.2}, queue="backup")
    parked = wait_state(backup, "waiting", timeout=30)
    assert parked.message == f"Waiting for t_app (task {busy_task[:8]}…) to release app:{busy}"
    assert parked.checkpoint["fullbackup"]["copied"] == [free]
    # Both processes would be busy if the backup waited in place; parked, it left one free.
    third = enqueue("t_app", {"app_id": later, "seconds": 0.1}, app_id=later, queue="apptask")
    wait_state(third, "succeeded", timeout=10)
    assert row(busy_task).state == "running"
    result = wait_state(backup, "succeeded", timeout=60).result
    assert result["copied"] == [free, busy]
    assert result["deferred"] == [busy]
    assert result["results"][busy]["start"] >= _interval(busy_task)[1]


def test_update_part_waits_for_apptasks_and_blocks_new_ones_fifo(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=4)
    running_app = _app()
    running = enqueue("t_app", {"app_id": running_app, "seconds": 2.0}, app_id=running_app, queue="apptask")
    wait_state(running, "running")
    update = enqueue("t_update", {"prepare": 0.2, "seconds": 1.0}, queue="update")
    wait_for(lambda: "platform" in row(update).message, timeout=20, what="update waiting for platform X")
    # A stream of apptasks arriving while the update waits: none may start before its part ends.
    stream = []
    for _ in range(4):
        app = _app()
        stream.append(enqueue("t_app", {"app_id": app, "seconds": 0.1}, app_id=app, queue="apptask"))
    update_result = wait_state(update, "succeeded", timeout=60).result
    assert update_result["prepare"]["end"] <= _interval(running)[1], "preparation must run beside apptasks"
    assert update_result["start"] >= _interval(running)[1], "update part started while an apptask ran"
    for task_id in stream:
        assert _interval(task_id)[0] >= update_result["end"], "an apptask overtook the waiting update"


def test_two_nodes_share_broker_database_and_locks(start_worker: Callable[..., Worker]) -> None:
    start_worker(name="hosta", concurrency=2)
    start_worker(name="hostb", concurrency=2)
    apps = [_app() for _ in range(3)]
    ids = [
        enqueue("t_app", {"app_id": app, "seconds": 0.6}, app_id=app, queue="apptask") for app in apps for _ in range(2)
    ]
    spans: dict[str, list[tuple[float, float]]] = {}
    workers = set()
    for task_id in ids:
        r = wait_state(task_id, "succeeded", timeout=60)
        spans.setdefault(r.app_id, []).append((r.result["start"], r.result["end"]))
        workers.add(r.worker)
    assert workers == {"hosta@boxtasks-test", "hostb@boxtasks-test"}
    for pair in spans.values():
        assert not _overlap(pair[0], pair[1]), "one app ran twice at once across nodes"


def test_autoscale_grows_the_pool(start_worker: Callable[..., Worker]) -> None:
    start_worker(extra_args=["--autoscale=3,1"])
    apps = [_app() for _ in range(3)]
    ids = [enqueue("t_app", {"app_id": app, "seconds": 2.5}, app_id=app, queue="apptask") for app in apps]
    spans = [_interval(task_id) for task_id in ids]
    assert all(_overlap(spans[0], s) for s in spans[1:]), f"autoscale did not run 3 at once: {spans}"


def test_failed_task_records_error_and_frees_its_locks(start_worker: Callable[..., Worker]) -> None:
    start_worker(concurrency=2)
    app = _app()
    failed = enqueue("t_fail", {"app_id": app}, app_id=app, queue="apptask")
    r: Any = wait_state(failed, "failed")
    assert "refused" in r.error and r.finished_at is not None
    after = enqueue("t_app", {"app_id": app, "seconds": 0.1}, app_id=app, queue="apptask")
    wait_state(after, "succeeded", timeout=20)


def test_arguments_that_name_no_lock_fail_the_task_in_its_row(start_worker: Callable[..., Worker]) -> None:
    """`app:<app_id>` with an app id no lock can be named from: the row says so, not `queued` for good."""
    start_worker(concurrency=1)
    bad = enqueue("t_app", {"app_id": "Not An App!", "seconds": 0.1}, app_id=None, queue="apptask")
    r: Any = wait_state(bad, "failed", timeout=20)
    assert r.message.startswith("Bad arguments: malformed lock name 'app:Not An App!'"), r.message
