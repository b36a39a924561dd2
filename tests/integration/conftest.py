"""Fixtures shared by the Celery-free runner tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from lockman import LockManager
from tasks.runner import Runtime


@pytest.fixture
def runtime(engine: Engine, db_url: str, lock_row: str) -> Iterator[tuple[Runtime, list[str]]]:
    """A worker process's Runtime on a lock row of its own (lease 2 s); wake-ups land in the list."""
    manager = LockManager(db_url, row_id=lock_row, lease=2.0)
    manager.ensure_row()
    woken: list[str] = []
    rt = Runtime(
        manager=manager,
        engine=engine,
        worker="node@test",
        pid=4242,
        lease=dt.timedelta(seconds=2),
        heartbeat_interval=0.3,
        wake=woken.extend,
    )
    yield rt, woken
    manager.dispose()
