"""A task whose message is gone: acknowledged when a worker process took it, and its node died before the claim.

Its row stays `queued` with no message anywhere; the sweep sends it again once it has been queued
longer than BOXTASKS_REQUEUE_AFTER_SECONDS and its queue is empty, and it runs once. A task whose
message still waits in its queue (no node reads that queue) is not sent a second time.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from models import get_engine, records
from tasks.broker import ready_count
from tasks.client import enqueue
from tests.e2e.harness import Env, Worker, row, wait_for, wait_state
from tests.faults.checks import assert_no_leaked_lock, describe, new_app, spans, tails

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]


def test_queued_task_without_message_is_sent_again(fault_env: Env, start_worker: Callable[..., Worker]) -> None:
    fault_env.extra["BOXTASKS_REQUEUE_AFTER_SECONDS"] = "1"
    fault_env.apply_to_this_process()
    app_id = new_app()
    # Recorded as `enqueue` records it, but its message was lost with the node that took it.
    lost = records.create(
        get_engine(), kind="t_traced", queue="apptask", args={"app_id": app_id, "seconds": 0.2}, app_id=app_id
    )
    # Queued in a queue no node reads: its message is there, so it is not sent again.
    parked = enqueue("t_traced", {"app_id": new_app(), "seconds": 0.1}, queue="unread")
    worker = start_worker(name="lost1", concurrency=2, extra_args=["-B"])

    done = wait_state(lost, timeout=90)
    assert done.state == "succeeded", f"{describe([done])}\n{tails([worker])}"
    assert [s["task"] for s in spans(app_id)] == [lost]
    assert_no_leaked_lock()
    # Several sweeps later the task whose message waits is still queued, its one message unread.
    sweeps = worker.log.read_text().count("boxtasks.sweep[")
    wait_for(lambda: worker.log.read_text().count("boxtasks.sweep[") >= sweeps + 6, timeout=60, what="more sweeps")
    assert row(parked).state == "queued"
    assert ready_count("unread") == 1
    assert f"t_traced[{lost}] received" in worker.log.read_text()
    assert worker.log.read_text().count(f"t_traced[{lost}] succeeded") == 1
