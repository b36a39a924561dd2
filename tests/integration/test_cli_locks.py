"""`boxtasks db upgrade` and `boxtasks locks` as the shell runs them: a subprocess with BOXTASKS_* in
its environment, on each database (the rest of the CLI: tests/integration/test_cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, update

from lockman import Granted, LockManager, Queued
from models import LockRow
from tests.owners import add_owner

BOXTASKS = Path(sys.executable).with_name("boxtasks")
#: For what does not depend on the database: each run of the CLI costs a second or two of imports.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("BOXTASKS_")}
    clean.update(env)
    return subprocess.run(
        [str(BOXTASKS), *args], env=clean, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def cli_env(db_url: str, lock_row: str, tmp_path: Path) -> dict[str, str]:
    return {
        "BOXTASKS_DATABASE_URL": db_url,
        "BOXTASKS_LOCK_ROW": lock_row,
        "BOXTASKS_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.fixture
def steady(db_url: str, lock_row: str) -> Iterator[LockManager]:
    m = LockManager(db_url, row_id=lock_row, lease=30.0)
    m.ensure_row()
    yield m
    m.dispose()


def holder_and_waiter(manager: LockManager, engine: Engine) -> tuple[str, str]:
    a, b = add_owner(engine), add_owner(engine)
    assert isinstance(manager.try_acquire(a, {"platform": "S", "app:a": "X"}, label="apptask"), Granted)
    assert isinstance(manager.try_acquire(b, {"platform": "S", "app:a": "X"}, label="apptask"), Queued)
    return a, b


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n"), f"not one line: {done.stderr!r}"
    return done.stderr


def test_db_upgrade_twice_exits_0(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = run(cli_env, "db", "upgrade", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "database is up to date\n"
    done = run(cli_env, "db", "upgrade", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"upgraded": True}


def test_db_upgrade_makes_the_embedded_database(tmp_path: Path) -> None:
    """No database URL: SQLite under the data dir, created by the first upgrade."""
    env = {"BOXTASKS_DATA_DIR": str(tmp_path / "data")}
    done = run(env, "db", "upgrade", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    db = tmp_path / "data" / "boxtasks.db"
    assert db.exists()
    engine = create_engine(f"sqlite:///{db}")
    try:
        assert {"tasks", "locks"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    done = run(env, "locks", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["version"], report["holders"], report["waiters"]) == (0, [], [])


def test_locks_json_shows_holders_and_why_waiters_wait(
    cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path
) -> None:
    a, b = holder_and_waiter(steady, engine)
    snap = steady.snapshot()
    done = run(cli_env, "locks", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    token = snap.table.held_by(a)["app:a"].token
    assert report["version"] == snap.version
    holder_keys = ("owner", "label", "name", "mode", "token")
    assert sorted(({k: h[k] for k in holder_keys} for h in report["holders"]), key=lambda h: h["name"]) == [
        {"owner": a, "label": "apptask", "name": "app:a", "mode": "X", "token": token},
        {"owner": a, "label": "apptask", "name": "platform", "mode": "S", "token": token},
    ]
    waiter_keys = ("owner", "label", "seq", "locks", "nested", "blocked_by")
    assert (
        [{k: w[k] for k in waiter_keys} for w in report["waiters"]]
        == [
            {
                "owner": b,
                "label": "apptask",
                "seq": snap.table.waiter_of(b).seq,  # type: ignore[union-attr]
                "locks": {"app:a": "X", "platform": "S"},
                "nested": False,
                "blocked_by": [f"Waiting for apptask (task {a[:8]}…) to release app:a"],
            }
        ]
    )


@SQLITE_ONLY
def test_locks_prints_a_table(cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path) -> None:
    done = run(cli_env, "locks", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no locks held\nno waiters\n"
    a, b = holder_and_waiter(steady, engine)
    done = run(cli_env, "locks", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["LOCK", "MODE", "HOLDER", "TASK", "TOKEN"]
    assert set(lines[1]) == {"-", " "}
    rows = [line.split() for line in lines[2:4]]
    assert sorted(r[:4] for r in rows) == [["app:a", "X", "apptask", a], ["platform", "S", "apptask", a]]
    assert lines[4].split() == ["#", "TASK", "KIND", "WANTS", "WHY"]
    assert set(lines[5]) == {"-", " "}
    waiter = lines[6]
    assert b in waiter and "app:a:X platform:S" in waiter
    assert waiter.endswith(f"Waiting for apptask (task {a[:8]}…) to release app:a")
    assert len(lines) == 7


@SQLITE_ONLY
@pytest.mark.parametrize("command", [["locks"], ["db", "upgrade"]], ids=["locks", "db-upgrade"])
def test_a_bad_setting_is_one_line_naming_the_variable(
    cli_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    done = run({**cli_env, "BOXTASKS_LOCK_LEASE_SECONDS": "-1"}, *command, cwd=tmp_path)
    assert "BOXTASKS_LOCK_LEASE_SECONDS" in one_line(done)


@SQLITE_ONLY
def test_a_damaged_lock_row_is_one_line_naming_the_row(
    cli_env: dict[str, str], steady: LockManager, engine: Engine, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(update(LockRow).where(LockRow.id == steady.row_id).values(data={"holders": 3}))
    assert f"lock row {steady.row_id!r}" in one_line(run(cli_env, "locks", cwd=tmp_path))


@SQLITE_ONLY
def test_a_missing_lock_row_says_what_to_run(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = run({**cli_env, "BOXTASKS_LOCK_ROW": "never_made"}, "locks", "--json", cwd=tmp_path)
    assert "run `boxtasks db upgrade`" in one_line(done)
