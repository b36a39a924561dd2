"""One run on the embedded default: SQLite and kombu's filesystem broker, nothing configured."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import get_settings
from lockman import LockManager
from models.migrate import upgrade
from tasks.client import enqueue, stop
from tests.e2e.harness import Env, Worker, row, wait_for, wait_state

pytestmark = [pytest.mark.slow]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Env]:
    env = Env(database_url="", broker_url="", data_dir=tmp_path / "var")
    env.apply_to_this_process()
    settings = get_settings()
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_broker_url == "filesystem://"
    upgrade(settings.effective_database_url)
    yield env


def test_embedded_default_runs_waits_and_stops(embedded: Env, tmp_path: Path) -> None:
    worker = Worker(embedded, tmp_path, concurrency=2).start()
    try:
        app_id = f"a{uuid.uuid4().hex[:8]}"
        first = enqueue("t_app", {"app_id": app_id, "seconds": 1.0}, app_id=app_id, queue="apptask")
        second = enqueue("t_app", {"app_id": app_id, "seconds": 0.2}, app_id=app_id, queue="apptask")
        a = wait_state(first, "succeeded", timeout=60)
        b = wait_state(second, "succeeded", timeout=60)
        # The filesystem broker does not keep the order of two messages; one app still runs one task at a time.
        assert b.result["start"] >= a.result["end"] or a.result["start"] >= b.result["end"]
        # Broadcast control works on the filesystem transport: stop a running task.
        long = enqueue("t_app", {"app_id": app_id, "seconds": 60.0}, app_id=app_id, queue="apptask")
        wait_for(lambda: row(long).percent > 0, timeout=60, what="long task working")
        assert stop(long, grace=20) == "cancelled"
        manager = LockManager.from_settings()
        try:
            assert manager.snapshot().table.owners() == set()
        finally:
            manager.dispose()
    finally:
        worker.stop()
