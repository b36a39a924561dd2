"""`boxtasks locks release --owner TASK`: frees a dead owner's locks and wakes who can go; refuses a live one."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from lockman import Granted, LockManager, Queued
from models import Task, TaskState
from tests.integration.test_cli_locks import SQLITE_ONLY, one_line, run
from tests.owners import add_owner, set_state

PLAN = {"platform": "S", "app:a": "X"}
LONG_AGO = dt.datetime(2000, 1, 1)


@pytest.fixture
def cli_env(db_url: str, lock_row: str, tmp_path: Path) -> dict[str, str]:
    # No broker URL: the embedded filesystem broker under the data dir takes the wake-ups.
    return {
        "BOXTASKS_DATABASE_URL": db_url,
        "BOXTASKS_LOCK_ROW": lock_row,
        "BOXTASKS_DATA_DIR": str(tmp_path / "data"),
        "BOXTASKS_LOCK_LEASE_SECONDS": "30",
    }


@pytest.fixture
def steady(db_url: str, lock_row: str) -> Iterator[LockManager]:
    m = LockManager(db_url, row_id=lock_row, lease=30.0)
    m.ensure_row()
    yield m
    m.dispose()


def holder_and_waiter(manager: LockManager, engine: Engine) -> tuple[str, str]:
    a = add_owner(engine)
    b = add_owner(engine, state=TaskState.WAITING)
    assert isinstance(manager.try_acquire(a, PLAN, label="apptask"), Granted)
    assert isinstance(manager.try_acquire(b, PLAN, label="apptask"), Queued)
    return a, b


def state_of(engine: Engine, task_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(Task.state).where(Task.id == task_id)).scalar_one())


def test_a_finished_owner_is_released_and_its_waiter_woken(
    cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path
) -> None:
    a, b = holder_and_waiter(steady, engine)
    set_state(engine, a, TaskState.SUCCEEDED)
    done = run(cli_env, "locks", "release", "--owner", a, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["owner"] == a
    assert out["state_before"] == out["state"] == "succeeded"
    assert out["reason"] == "its task ended (succeeded)"
    assert sorted((r["name"], r["mode"]) for r in out["released"]) == [("app:a", "X"), ("platform", "S")]
    assert out["woken"] == [b] and out["wake_error"] is None
    table = steady.snapshot().table
    assert table.held_by(a) == {}
    # The waiter is now ready: its wake-up makes it ask again and be granted.
    assert [w.owner for w in table.ready_waiters()] == [b]
    assert isinstance(steady.try_acquire(b, PLAN, label="apptask"), Granted)


def test_a_live_owner_is_refused_and_keeps_its_locks(
    cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path
) -> None:
    a, _ = holder_and_waiter(steady, engine)
    before = steady.snapshot()
    err = one_line(run(cli_env, "locks", "release", "--owner", a, cwd=tmp_path))
    assert "refusing" in err and "it may still be working" in err and f"boxtasks task stop {a}" in err
    after = steady.snapshot()
    assert after.version == before.version
    assert set(after.table.held_by(a)) == {"app:a", "platform"}
    assert state_of(engine, a) == "running"


@SQLITE_ONLY
def test_a_silent_running_owner_is_interrupted_then_released(
    cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path
) -> None:
    a, b = holder_and_waiter(steady, engine)
    with engine.begin() as conn:
        conn.execute(update(Task).where(Task.id == a).values(heartbeat_at=LONG_AGO))
    done = run(cli_env, "locks", "release", "--owner", a, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"released app:a (X), platform (S) of task {a} [running -> interrupted]: ")
    assert "past the 30s lease" in lines[0]
    assert lines[1] == f"woke 1 waiter(s): {b}"
    assert state_of(engine, a) == "interrupted"
    assert steady.snapshot().table.held_by(a) == {}


@SQLITE_ONLY
def test_a_waiting_owner_is_refused_with_the_stop_command(
    cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path
) -> None:
    _, b = holder_and_waiter(steady, engine)
    err = one_line(run(cli_env, "locks", "release", "--owner", b, cwd=tmp_path))
    assert "only waits" in err and f"boxtasks task stop {b}" in err
    assert steady.snapshot().table.waiter_of(b) is not None


@SQLITE_ONLY
def test_a_parked_owner_is_refused_and_keeps_its_locks(
    cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path
) -> None:
    """A full backup parked for a busy app: `waiting`, holding, with a heartbeat as old as you like."""
    a, _ = holder_and_waiter(steady, engine)
    set_state(engine, a, TaskState.WAITING)
    with engine.begin() as conn:
        conn.execute(update(Task).where(Task.id == a).values(heartbeat_at=LONG_AGO))
    err = one_line(run(cli_env, "locks", "release", "--owner", a, cwd=tmp_path))
    assert "refusing" in err and "parked" in err and f"boxtasks task stop {a}" in err
    assert set(steady.snapshot().table.held_by(a)) == {"app:a", "platform"}
    assert state_of(engine, a) == "waiting"


@SQLITE_ONLY
def test_unknown_owner_and_owner_without_locks(
    cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path
) -> None:
    err = one_line(run(cli_env, "locks", "release", "--owner", "no-such-task", cwd=tmp_path))
    assert "no task 'no-such-task'" in err
    idle = add_owner(engine, state=TaskState.SUCCEEDED)
    done = run(cli_env, "locks", "release", "--owner", idle, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"task {idle} (succeeded) holds no lock and waits for none: nothing to release\n"
