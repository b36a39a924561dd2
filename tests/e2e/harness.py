"""Real Celery worker processes for the end-to-end tests, and the client side pointed at them.

Workers are `celery -A tasks worker -I tests.e2e.kinds` subprocesses in their own session (so a
test can SIGKILL a worker's whole process group); the test process talks to the same database and
broker through `tasks.client`, exactly as the API and CLI do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import taskrig
from config.celery import QUEUES
from models import FINAL_STATES, records
from tasks.celery import app

REPO = taskrig.REPO
VENV_BIN = taskrig.VENV_BIN
FINAL = {s.value for s in FINAL_STATES}


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """`bench.taskrig.wait_for`, failing as a test does."""
    return taskrig.wait_for(predicate, timeout=timeout, interval=interval, what=what, failure=AssertionError)


@dataclass
class Env:
    """Settings shared by the test process and its workers."""

    database_url: str
    broker_url: str
    data_dir: Path
    lease: float = 4.0
    heartbeat: float = 0.5
    extra: dict[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        env = {
            "BOXTASKS_DATA_DIR": str(self.data_dir),
            "BOXTASKS_LOCK_LEASE_SECONDS": str(self.lease),
            "BOXTASKS_HEARTBEAT_SECONDS": str(self.heartbeat),
            "BOXTASKS_STOP_GRACE_SECONDS": "3",
            "BOXTASKS_SWEEP_SECONDS": "1",
        }
        if self.database_url:
            env["BOXTASKS_DATABASE_URL"] = self.database_url
        if self.broker_url:
            env["BOXTASKS_BROKER_URL"] = self.broker_url
        env.update(self.extra)
        return env

    def apply_to_this_process(self) -> None:
        """Point settings, the engine and the Celery app of the test process at this environment."""
        taskrig.apply_environment(self.variables())


class Worker(taskrig.Worker):
    """A node for the tests: `tests.e2e.kinds` loaded, every queue by default, named `<name>@boxtasks-test`."""

    def __init__(
        self,
        env: Env,
        log_dir: Path,
        *,
        name: str = "w1",
        concurrency: int = 2,
        queues: Iterable[str] = QUEUES,
        extra_args: Iterable[str] = (),
    ) -> None:
        extra = list(extra_args)
        self.name = name
        super().__init__(
            env.variables(),
            log_dir / f"worker-{name}-{int(time.time() * 1000)}.log",
            nodename=f"{name}@boxtasks-test",
            queues=list(queues),
            concurrency=None if any(a.startswith("--autoscale") for a in extra) else concurrency,
            kinds_module="tests.e2e.kinds",
            extra_args=extra,
            failure=AssertionError,
        )


def row(task_id: str) -> Any:
    from models import get_engine

    found = records.get(get_engine(), task_id)
    assert found is not None, f"no row for task {task_id}"
    return found


def wait_state(task_id: str, *states: str, timeout: float = 60.0) -> Any:
    wanted = set(states) or FINAL
    return wait_for(
        lambda: (r := row(task_id)) is not None and r.state in wanted and r,
        timeout=timeout,
        what=f"task {task_id} in {sorted(wanted)} (now {row(task_id).state}: {row(task_id).message})",
    )


def purge_queues() -> None:
    """Drop messages an earlier test of this session left in its vhost's queues."""
    for queue in QUEUES:
        with app.connection_for_write() as conn:
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # a queue that does not exist yet has nothing to purge
                continue
