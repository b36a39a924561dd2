"""The broker restarts under a stream of tasks: a private RabbitMQ node, stopped and started again.

Workers reconnect by themselves; no task is lost: each one sent reaches a final state, and one whose
message could not be sent was refused to its client (BrokerUnavailableError) and is recorded
`failed`; messages redelivered after the restart never start a second copy; nothing overlaps.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import insert, select

from lockman import LockManager, lock_set
from models import get_engine, make_engine, records
from models.migrate import upgrade
from tasks.client import enqueue
from tasks.errors import BrokerUnavailableError
from tasks.runner import Outcome, RunContext, Runtime, execute
from tests.e2e.harness import Env, Worker, wait_state
from tests.e2e.kinds import counters
from tests.faults.checks import (
    Stream,
    all_tasks,
    assert_no_leaked_lock,
    assert_no_overlap,
    assert_truthful,
    describe,
    new_app,
    tails,
    wait_all_final,
    wait_succeeded,
)
from tests.faults.servers import PrivateRabbitMQ

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]

#: A task whose message was sent has nothing to blame: every one of them must succeed.
NOTHING = re.compile(r"(?!)")


def test_broker_restart_mid_stream(
    rabbitmq_server: PrivateRabbitMQ, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    fault_env.lease = 10.0
    fault_env.apply_to_this_process()
    workers = [start_worker(name="mq1", concurrency=2, extra_args=["-B"]), start_worker(name="mq2", concurrency=2)]
    apps = [new_app() for _ in range(3)]
    counters.metadata.create_all(get_engine())
    with get_engine().begin() as conn:
        conn.execute(insert(counters), [{"name": a, "value": 0, "writers": ""} for a in apps])
    streams = [
        Stream("t_traced", apps, {"seconds": 0.3}).start(),
        Stream("t_fenced_count", apps, {"seconds": 0.1}, interval=0.4).start(),
    ]
    try:
        wait_succeeded(6, timeout=60, workers=workers)
        for app_id in apps * 2:  # a backlog: messages in the queues and in flight when the broker stops
            enqueue("t_traced", {"app_id": app_id, "seconds": 0.3}, app_id=app_id, queue="apptask")
        rabbitmq_server.restart()
        time.sleep(5.0)
    finally:
        for stream in streams:
            stream.stop()

    rows = wait_all_final(workers, timeout=120)
    refused = [err for stream in streams for _, err in stream.refused]
    wrong = [err for err in refused if not isinstance(err, BrokerUnavailableError)]
    assert not wrong, f"enqueue failed with something else than BrokerUnavailableError: {wrong}"
    unsent = [r for r in rows if r.message == "Could not reach the broker"]
    assert len(unsent) == len(refused), f"{len(refused)} refused, but rows say:\n{describe(unsent)}"
    assert all(r.state == "failed" for r in unsent)
    sent = {task_id for stream in streams for _, task_id in stream.sent}
    ran = [r for r in rows if r.id in sent]
    assert_truthful(ran, allowed={"succeeded"}, because=NOTHING)
    with get_engine().connect() as conn:  # no lost update: one increment per task that ran
        found = {r.name: r for r in conn.execute(select(counters))}
    counted = sorted(r.id for r in ran if r.type == "t_fenced_count")
    assert sorted(w for a in apps for w in found[a].writers.split()) == counted
    assert sum(found[a].value for a in apps) == len(counted)
    assert assert_no_overlap(apps) >= sum(r.type == "t_traced" for r in ran)
    assert_no_leaked_lock()

    for w in workers:
        assert w.proc is not None and w.proc.poll() is None, f"worker {w.nodename} died:\n{w.tail()}"
    after = [enqueue("t_traced", {"app_id": a, "seconds": 0.1}, app_id=a, queue="apptask") for a in apps]
    for task_id in after:
        done = wait_state(task_id, timeout=90)
        assert done.state == "succeeded", f"{describe([done])}\n{tails(workers)}"
    late = [r for r in all_tasks() if r.state != "succeeded"]
    print(f"{len(rows)} tasks, {len(refused)} refused; not succeeded:\n{describe(late)}")  # noqa: T201


def test_progress_mirror_failing_does_not_fail_the_task(tmp_path: Path) -> None:
    """The Flower copy of a task's progress goes through the broker; the broker down must not fail the task."""
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    upgrade(url)
    manager = LockManager(url, lease=10.0)
    engine = make_engine(url)

    def broker_down(percent: int, message: str) -> None:
        raise KombuOperationalError("[Errno 111] Connection refused")

    rt = Runtime(
        manager=manager,
        engine=engine,
        worker="node@faults",
        pid=os.getpid(),
        lease=manager.lease,
        heartbeat_interval=1.0,
        wake=lambda ids: None,
        mirror=broker_down,
    )
    try:
        task_id = records.create(engine, kind="t", queue="apptask", args={}, app_id="a")

        def body(ctx: RunContext) -> str:
            ctx.progress(50, "half way")
            return "done"

        result = execute(rt, task_id, "t", lock_set({"platform": "S", "app:a": "X"}), body)
        assert result.outcome is Outcome.SUCCEEDED, result
        done = records.get(engine, task_id)
        assert done is not None and done.state == "succeeded"
    finally:
        manager.dispose()
        engine.dispose()
