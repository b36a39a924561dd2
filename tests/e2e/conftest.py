"""End-to-end fixtures: a fresh MariaDB database, RabbitMQ, and worker subprocesses."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lockman import LockManager
from tests.e2e.harness import Env, Worker, purge_queues


@pytest.fixture
def e2e_env(mariadb_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Env]:
    """MariaDB + this session's RabbitMQ vhost, with the test process's client pointed at them."""
    row = f"e2e_{uuid.uuid4().hex[:10]}"
    env = Env(
        database_url=mariadb_url,
        broker_url=rabbitmq_url,
        data_dir=tmp_path / "data",
        extra={"BOXTASKS_LOCK_ROW": row},
    )
    env.apply_to_this_process()
    manager = LockManager.from_settings()
    manager.ensure_row()
    manager.dispose()
    purge_queues()
    yield env
    purge_queues()


@pytest.fixture
def start_worker(e2e_env: Env, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(**options: Any) -> Worker:
        worker = Worker(e2e_env, tmp_path, **options).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
