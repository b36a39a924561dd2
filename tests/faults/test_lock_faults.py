"""Real faults on real processes: a holder killed outright, and a holder frozen past its lease.

A SIGKILLed holder cannot release anything: its locks must go once its heartbeat is stale on the
database clock, and a waiter in another process must then proceed. A SIGSTOPped holder comes back
after another owner has taken its locks: fencing must refuse its write, and nothing it wrote may
be committed.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from lockman import Granted, LockLostError, LockManager, Queued
from models import Task, db_utcnow, dispose_after_fork, make_engine
from tests.owners import add_owner

LEASE = 2.0
PLAN = {"platform": "S", "app:a": "X"}
_ctx = multiprocessing.get_context("fork")

_MARIADB = pytest.param("mariadb", marks=pytest.mark.mariadb, id="mariadb")
ON_MARIADB_AND_SQLITE = pytest.mark.parametrize("db_url", [_MARIADB, "sqlite"], indirect=True)
#: SQLite has one writer: a process frozen inside a write transaction stops every other writer.
ON_MARIADB = pytest.mark.parametrize("db_url", [_MARIADB], indirect=True)


class _Beater:
    """A task's heartbeat, as a worker keeps it: a thread stamping the row every 0.3 s."""

    def __init__(self, manager: LockManager, owner: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(manager, owner), daemon=True)
        self._thread.start()

    def _run(self, manager: LockManager, owner: str) -> None:
        while not self._stop.wait(0.3):
            manager.heartbeat(owner)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def children() -> Iterator[Callable[..., Any]]:
    """Start processes; whatever is still running at the end is continued and killed."""
    started: list[Any] = []

    def start(target: Callable[..., None], *args: Any) -> Any:
        p = _ctx.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        if p.is_alive():
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.join(10)


def _record(out: str, result: dict[str, Any]) -> None:
    Path(out).write_text(json.dumps(result, default=str))


def _result(out: Path) -> dict[str, Any]:
    assert out.exists(), "the child process wrote no result"
    result: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in result, result["error"]
    return result


def _message(engine: Engine, task: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(Task.message).where(Task.id == task)).scalar_one())


def _wait(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# ----------------------------------------------------------------------------- SIGKILL


def _hold_until_killed(url: str, row: str, owner: str, ready: Any) -> None:
    dispose_after_fork()
    manager = LockManager(url, row_id=row, lease=LEASE)
    manager.acquire(owner, PLAN, label="apptask", timeout=30)
    _Beater(manager, owner)
    ready.set()
    time.sleep(600)


def _wait_for_locks(url: str, row: str, owner: str, out: str) -> None:
    dispose_after_fork()
    result: dict[str, Any] = {}
    try:
        manager = LockManager(url, row_id=row, lease=LEASE)
        beater = _Beater(manager, owner)
        grant = manager.acquire(owner, PLAN, label="apptask", timeout=60)
        engine = make_engine(url, pool_size=1)
        with engine.connect() as conn:
            result["granted_at"] = conn.execute(select(db_utcnow())).scalar_one()
        result["token"] = grant.token
        beater.stop()
    except BaseException:
        result["error"] = traceback.format_exc()
    _record(out, result)


@pytest.mark.slow
@ON_MARIADB_AND_SQLITE
def test_a_killed_holder_loses_its_locks_once_its_heartbeat_is_stale(
    db_url: str, engine: Engine, lock_row: str, tmp_path: Path, children: Callable[..., Any]
) -> None:
    manager = LockManager(db_url, row_id=lock_row, lease=LEASE)
    manager.ensure_row()
    holder, waiter = add_owner(engine), add_owner(engine)
    ready = _ctx.Event()
    out = tmp_path / "waiter.json"
    try:
        hp = children(_hold_until_killed, db_url, lock_row, holder, ready)
        assert ready.wait(30), "the holder never got its locks"
        wp = children(_wait_for_locks, db_url, lock_row, waiter, str(out))
        assert _wait(lambda: manager.snapshot().table.waiter_of(waiter) is not None), "the waiter never queued"
        assert wp.is_alive() and not out.exists(), "the waiter got the locks while the holder lived"
        os.kill(hp.pid, signal.SIGKILL)
        hp.join(10)
        with engine.connect() as conn:
            last_beat = conn.execute(select(Task.heartbeat_at).where(Task.id == holder)).scalar_one()
        wp.join(45)
        assert not wp.is_alive(), "the waiter never proceeded after the holder was killed"
        result = _result(out)
        granted_at = dt.datetime.fromisoformat(result["granted_at"])  # the child wrote it to JSON as text
        assert last_beat is not None
        assert granted_at >= last_beat + manager.lease, (
            f"the locks were taken at {granted_at}, before the holder's heartbeat ({last_beat}) went stale"
        )
        table = manager.snapshot().table
        assert holder not in table.owners()
        assert set(table.held_by(waiter)) == {"platform", "app:a"}
        assert table.held_by(waiter)["app:a"].token == result["token"]
    finally:
        manager.dispose()


# ----------------------------------------------------------------------------- SIGSTOP


def _frozen_writer(url: str, row: str, owner: str, probe: str, in_block: bool, paused: Any, go: Any, out: str) -> None:
    """Hold the lock, get frozen (before, or in the middle of, a fenced write), then try to commit."""
    dispose_after_fork()
    result: dict[str, Any] = {}
    try:
        manager = LockManager(url, row_id=row, lease=LEASE)
        grant = manager.acquire(owner, PLAN, label="apptask", timeout=30)
        _Beater(manager, owner)
        try:
            if in_block:
                with manager.fenced(grant) as conn:
                    conn.execute(update(Task).where(Task.id == probe).values(message="written by the old holder"))
                    paused.set()
                    go.wait(120)
            else:
                paused.set()
                go.wait(120)
                with manager.fenced(grant) as conn:
                    conn.execute(update(Task).where(Task.id == probe).values(message="written by the old holder"))
            result["outcome"] = "committed"
        except LockLostError as err:
            result["outcome"] = "lost"
            result["message"] = str(err)
    except BaseException:
        result["error"] = traceback.format_exc()
    _record(out, result)


@pytest.mark.slow
@ON_MARIADB_AND_SQLITE
def test_a_holder_frozen_before_its_fenced_write_cannot_commit(
    db_url: str, engine: Engine, lock_row: str, tmp_path: Path, children: Callable[..., Any]
) -> None:
    _frozen_past_the_lease(db_url, engine, lock_row, tmp_path, children, in_block=False)


@pytest.mark.slow
@ON_MARIADB
def test_a_holder_frozen_in_the_middle_of_its_fenced_write_commits_nothing(
    db_url: str, engine: Engine, lock_row: str, tmp_path: Path, children: Callable[..., Any]
) -> None:
    _frozen_past_the_lease(db_url, engine, lock_row, tmp_path, children, in_block=True)


def _frozen_past_the_lease(
    db_url: str, engine: Engine, lock_row: str, tmp_path: Path, children: Callable[..., Any], *, in_block: bool
) -> None:
    manager = LockManager(db_url, row_id=lock_row, lease=LEASE)
    manager.ensure_row()
    old, new = add_owner(engine), add_owner(engine)
    old_probe, new_probe = add_owner(engine), add_owner(engine)
    paused, go = _ctx.Event(), _ctx.Event()
    out = tmp_path / "old.json"
    try:
        child = children(_frozen_writer, db_url, lock_row, old, old_probe, in_block, paused, go, str(out))
        assert paused.wait(30), "the old holder never got its locks"
        os.kill(child.pid, signal.SIGSTOP)
        assert isinstance(manager.try_acquire(new, PLAN, label="apptask"), Queued)
        # The new owner keeps asking (and beating) until the frozen holder's lease has run out.

        def new_gets_it() -> bool:
            manager.heartbeat(new)
            return isinstance(manager.try_acquire(new, PLAN, label="apptask"), Granted)

        assert _wait(new_gets_it), "the frozen holder's locks were never taken over"
        grant = manager.acquire(new, PLAN, timeout=5)
        with manager.fenced(grant) as conn:
            conn.execute(update(Task).where(Task.id == new_probe).values(message="written by the new holder"))
        os.kill(child.pid, signal.SIGCONT)
        go.set()
        child.join(60)
        assert not child.is_alive(), "the old holder never finished after it was resumed"
        result = _result(out)
        assert result["outcome"] == "lost", f"the old holder's fenced write was not refused: {result}"
        assert "nothing was committed" in result["message"]
        assert _message(engine, old_probe) == "", "something the old holder wrote was committed"
        assert _message(engine, new_probe) == "written by the new holder"
        table = manager.snapshot().table
        assert set(table.held_by(new)) == {"platform", "app:a"} and table.held_by(old) == {}
    finally:
        manager.dispose()
