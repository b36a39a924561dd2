"""Tasks longer than the broker lets a consumer sit on an unacknowledged message.

RabbitMQ closes the channel of a consumer that holds a delivery unacknowledged past its
`consumer_timeout` (30 minutes by default), and Redis hands such a message to another consumer
after its `visibility_timeout`. A task's message is acknowledged when a worker process takes it,
so neither ever sees a long task: it runs once, ends `succeeded`, frees its locks, and the node
goes on consuming. Here on a private RabbitMQ whose timeout is two seconds, and on the shared
Redis with a visibility timeout of two seconds (a database and key prefix of the test's own).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from tasks.client import enqueue
from tests.e2e.harness import Env, Worker, wait_state
from tests.faults.checks import assert_no_leaked_lock, describe, new_app, spans, tails
from tests.faults.servers import PrivateRabbitMQ, private_rabbitmq
from tests.services import REDIS_URL, require

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]

#: The broker's patience, in seconds, and the long task: several times longer.
TIMEOUT = 2.0
LONG = 6 * TIMEOUT


@pytest.fixture(scope="module")
def rabbitmq_server() -> Iterator[PrivateRabbitMQ]:
    """Overrides the session's node: one whose consumer timeout is `TIMEOUT`."""
    with private_rabbitmq(consumer_timeout_ms=int(TIMEOUT * 1000)) as server:
        yield server


def _ran_once(workers: list[Worker], app_id: str, task_id: str) -> None:
    """The long task ran one body, and no node saw its message twice or lost its channel."""
    assert [s["task"] for s in spans(app_id)].count(task_id) == 1, spans(app_id)
    logs = "\n".join(w.log.read_text(errors="replace") for w in workers)
    assert logs.count(f"Task boxtasks.t_traced[{task_id}] received") == 1, tails(workers)
    for symptom in ("PRECONDITION_FAILED", "PreconditionFailed", "not starting a second copy"):
        assert symptom not in logs, f"{symptom!r} in the logs:\n{tails(workers)}"


def _long_task_scene(start_worker: Callable[..., Worker]) -> None:
    """One long task holding an app, a waiter behind it and short tasks beside it; then more work."""
    worker = start_worker(name="long1", concurrency=2, extra_args=["-B"])
    workers = [worker]
    busy, other = new_app(), new_app()
    long = enqueue("t_traced", {"app_id": busy, "seconds": LONG}, app_id=busy, queue="apptask")
    wait_state(long, "running", timeout=60)
    waiter = enqueue("t_traced", {"app_id": busy, "seconds": 0.1}, app_id=busy, queue="apptask")
    beside = [enqueue("t_traced", {"app_id": other, "seconds": 0.5}, app_id=other, queue="apptask") for _ in "abc"]

    done = wait_state(long, timeout=LONG + 90)
    assert done.state == "succeeded", f"{describe([done])}\n{tails(workers)}"
    assert done.result["end"] - done.result["start"] >= LONG
    after = wait_state(waiter, timeout=60)
    assert after.state == "succeeded", f"{describe([after])}\n{tails(workers)}"
    for task_id in beside:
        assert wait_state(task_id, timeout=60).state == "succeeded", tails(workers)
    _ran_once(workers, busy, long)
    assert_no_leaked_lock()
    # The node still consumes: no channel it lost, no queue it stopped reading.
    assert worker.proc is not None and worker.proc.poll() is None, f"worker died:\n{worker.tail()}"
    more = [enqueue("t_traced", {"app_id": a, "seconds": 0.1}, app_id=a, queue="apptask") for a in (busy, other)]
    for task_id in more:
        assert wait_state(task_id, timeout=60).state == "succeeded", tails(workers)
    assert_no_leaked_lock()


def test_task_longer_than_rabbitmq_consumer_timeout(
    rabbitmq_server: PrivateRabbitMQ, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    _long_task_scene(start_worker)


@pytest.fixture
def redis_env(fault_env: Env) -> Iterator[Env]:
    """`fault_env` with the shared Redis as the broker: a database and key prefix of this test's own."""
    require("127.0.0.1", 6379, "Redis")
    base = REDIS_URL.rsplit("/", 1)[0]
    fault_env.broker_url = f"{base}/13"
    options = {
        "visibility_timeout": TIMEOUT,
        "unacked_restore_interval": 0.5,
        "unacked_restore_throttle": 1,
        "global_keyprefix": f"bt_{uuid.uuid4().hex[:8]}_",
    }
    fault_env.extra["BOXTASKS_BROKER_TRANSPORT_OPTIONS"] = json.dumps(options)
    fault_env.apply_to_this_process()
    try:
        yield fault_env
    finally:
        client = redis.Redis.from_url(fault_env.broker_url)
        try:
            keys = list(client.scan_iter(match=f"{options['global_keyprefix']}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def test_task_longer_than_redis_visibility_timeout(redis_env: Env, start_worker: Callable[..., Worker]) -> None:
    _long_task_scene(start_worker)
