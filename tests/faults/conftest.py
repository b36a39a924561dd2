"""Fixtures of the fault suite: private servers to restart, an environment on them, worker subprocesses.

The suite never restarts, reconfigures or purges the shared services that other test runs use:
every test that starts workers gets a private MariaDB (fresh per test: restarts and `SET GLOBAL`
stay in it) and the session's private RabbitMQ (its queues are purged before each test).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.taskrig import apply_environment
from lockman import LockManager
from tests.e2e.harness import Env, Worker, purge_queues
from tests.faults.servers import PrivateMariaDB, PrivateRabbitMQ, private_mariadb, private_rabbitmq


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of our own for the whole session (tests may restart it)."""
    with private_rabbitmq() as server:
        yield server


@pytest.fixture
def mariadb_server() -> Iterator[PrivateMariaDB]:
    """A MariaDB server of our own for one test."""
    with private_mariadb() as server:
        yield server


@pytest.fixture
def fault_env(mariadb_server: PrivateMariaDB, rabbitmq_server: PrivateRabbitMQ, tmp_path: Path) -> Iterator[Env]:
    """A fresh database on the private MariaDB and the private RabbitMQ, with this process pointed at them.

    Afterwards this process is pointed back where it was, so later tests do not talk to servers
    that are gone.
    """
    before = {k: v for k, v in os.environ.items() if k.startswith("BOXTASKS_")}
    if not rabbitmq_server.running:
        rabbitmq_server.start()
    env = Env(
        database_url=mariadb_server.new_database(),
        broker_url=rabbitmq_server.url,
        data_dir=tmp_path / "data",
        extra={"BOXTASKS_LOCK_ROW": f"f_{uuid.uuid4().hex[:10]}"},
    )
    env.apply_to_this_process()
    manager = LockManager.from_settings()
    manager.ensure_row()
    manager.dispose()
    purge_queues()
    try:
        yield env
    finally:
        if rabbitmq_server.running:
            purge_queues()
        apply_environment(before)  # the variables as they were


@pytest.fixture
def start_worker(fault_env: Env, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start worker subprocesses on `fault_env`; every one is stopped (or killed) afterwards."""
    started: list[Worker] = []

    def start(**options: Any) -> Worker:
        worker = Worker(fault_env, tmp_path, **options)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()
