"""The database is down for longer than the lease: when it returns, its holders are not all dead.

While the database is down no heartbeat lands, so on its return every holder's last heartbeat is
older than the lease. Judged by that alone, a waiter would evict a holder whose process is still
working on the app, and two tasks would touch one app at once. `models.liveness` counts silence
only from the server's (re)start: the holder keeps its locks for one lease after the restart,
and loses them only if it stays silent for that lease.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from lockman import Granted, LockManager, Queued
from models import TaskState, make_engine, records
from tasks.runner import _Heartbeat
from tests.faults.servers import PrivateMariaDB
from tests.owners import add_owner

pytestmark = [pytest.mark.slow, pytest.mark.mariadb]

LEASE = 3.0
PLAN = {"platform": "S", "app:a": "X"}


@pytest.fixture
def database(mariadb_server: PrivateMariaDB) -> Iterator[tuple[str, Engine]]:
    url = mariadb_server.new_database()
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


def test_outage_longer_than_lease_does_not_evict_a_holder(
    mariadb_server: PrivateMariaDB, database: tuple[str, Engine]
) -> None:
    url, engine = database
    holder, waiter = add_owner(engine), add_owner(engine, state=TaskState.WAITING)
    manager = LockManager(url, lease=LEASE)
    try:
        assert isinstance(manager.try_acquire(holder, PLAN), Granted)
        assert isinstance(manager.try_acquire(waiter, PLAN), Queued)
        # The holder's last heartbeat: now. Then the database is gone for twice the lease.
        assert manager.heartbeat(holder)
        mariadb_server.stop()
        time.sleep(2 * LEASE)
        mariadb_server.start()
        engine.dispose()

        # Back, and no heartbeat since: older than the lease, but the server has been up for less.
        decision = _ask(manager, waiter)
        assert isinstance(decision, Queued), "the holder was evicted for the database's own downtime"
        assert [b.owner for b in decision.blockers] == [holder]
        assert records.stale_running(engine, manager.lease) == [], "the sweep would interrupt a live holder"
        row = records.get(engine, holder)
        assert row is not None and records.heartbeat_is_fresh(engine, row, manager.lease)

        # Silent for a whole lease after the restart: now it is dead, on every path that judges it.
        time.sleep(LEASE + 1.0)
        assert records.stale_running(engine, manager.lease) == [holder]
        row = records.get(engine, holder)
        assert row is not None and not records.heartbeat_is_fresh(engine, row, manager.lease)
        assert isinstance(manager.try_acquire(waiter, PLAN), Granted)
        assert holder not in manager.snapshot().table.owners()
    finally:
        manager.dispose()


def test_the_heartbeat_thread_outlives_the_outage_and_keeps_the_locks(
    mariadb_server: PrivateMariaDB, database: tuple[str, Engine]
) -> None:
    """The heartbeat thread with no lease to keep (the runner's keeps one, and stops the task instead:
    tests/faults/test_lease_loss.py): its beats fail while the database is down; after the restart it
    beats again, so the holder stays alive well past one lease from the restart."""
    url, engine = database
    holder, waiter = add_owner(engine), add_owner(engine, state=TaskState.WAITING)
    manager = LockManager(url, lease=LEASE)
    beat = _Heartbeat(manager, holder, interval=LEASE / 3)
    try:
        assert isinstance(manager.try_acquire(holder, PLAN), Granted)
        beat.start()
        mariadb_server.stop()
        time.sleep(2 * LEASE)
        mariadb_server.start()
        # Two leases after the restart: alive only if the thread survived its failures and beat again.
        time.sleep(2 * LEASE)
        assert beat.is_alive()
        assert isinstance(_ask(manager, waiter), Queued), "the holder lost its locks though its thread beats"
        assert records.stale_running(engine, manager.lease) == []
        beat.stop()
        assert manager.release(holder).ready[0].owner == waiter
    finally:
        beat.stop()
        manager.dispose()


def _ask(manager: LockManager, owner: str) -> object:
    """A lock request on a pool that may hold connections to the server before its restart."""
    return _retrying(lambda: manager.try_acquire(owner, PLAN))


def _retrying(step: object) -> object:
    assert callable(step)
    for attempt in range(20):
        try:
            return step()
        except Exception:
            if attempt == 19:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")
