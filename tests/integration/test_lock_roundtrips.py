"""How many round trips the lock manager costs on MariaDB, counted where they leave the process.

The count is taken at the driver: every request PyMySQL sends (a query, a COMMIT, a ROLLBACK,
a ping) is one round trip. And `bench/locks.py --json` keeps its shape (no speed is asserted here:
the machines are noisy).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql.connections
import pytest
from sqlalchemy import create_engine

from lockman import Granted, LockManager
from tests.owners import add_owner
from tests.services import MARIADB_ADMIN, require

REPO = Path(__file__).resolve().parents[2]
APPTASK = {"platform": "S", "app:a": "X"}

pytestmark = pytest.mark.mariadb


class Wire:
    """Every command PyMySQL sends while `counting`."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.on = False

    def record(self, command: int, sql: object) -> None:
        if self.on:
            text = sql.decode(errors="replace") if isinstance(sql, bytes | bytearray) else str(sql)
            text = " ".join(text.split())
            if len(text) > 200:  # the document itself is of no interest
                text = f"{text[:100]} ... {text[-100:]}"
            self.sent.append(f"{command}:{text}")

    def count(self, action: object) -> list[str]:
        self.sent.clear()
        self.on = True
        try:
            if callable(action):
                action()
        finally:
            self.on = False
        return list(self.sent)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    counter = Wire()
    # Every request of PyMySQL's (query, COMMIT, ROLLBACK, ping) goes through this one method.
    send: Any = pymysql.connections.Connection._execute_command  # type: ignore[attr-defined]

    def counted(self: pymysql.connections.Connection, command: int, sql: object) -> object:
        counter.record(command, sql)
        return send(self, command, sql)

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", counted)
    return counter


@pytest.fixture
def managers(mariadb_url: str, lock_row: str) -> Iterator[tuple[LockManager, LockManager, str, str]]:
    """Two managers on one lock row (two worker processes, as far as the row can tell), one owner each."""
    engine = create_engine(mariadb_url)
    a, b = add_owner(engine), add_owner(engine)
    engine.dispose()
    first = LockManager(mariadb_url, row_id=lock_row, lease=30.0)
    second = LockManager(mariadb_url, row_id=lock_row, lease=30.0)
    first.ensure_row()
    try:
        # Open the pools first: a new connection's handshake and set-up queries are not the point.
        for m, owner in ((first, a), (second, b)):
            assert isinstance(m.try_acquire(owner, APPTASK), Granted)
            m.release(owner)
        yield first, second, a, b
    finally:
        first.dispose()
        second.dispose()


def pair(m: LockManager, owner: str) -> None:
    assert isinstance(m.try_acquire(owner, APPTASK), Granted)
    assert m.release(owner).released


def test_an_uncontended_acquire_and_release_cost_at_most_four_round_trips(
    wire: Wire, managers: tuple[LockManager, LockManager, str, str]
) -> None:
    first, _second, a, _b = managers
    pair(first, a)
    # This process wrote the row last: both writes go from the remembered document.
    sent = wire.count(lambda: pair(first, a))
    assert len(sent) <= 4, sent
    assert len(sent) == 2, f"expected two swaps from memory, got {sent}"
    assert not any("ROLLBACK" in s or s.startswith("14:") for s in sent), f"a pool reset or ping: {sent}"


def test_an_acquire_after_another_writer_misses_once_then_takes_the_locked_path(
    wire: Wire, managers: tuple[LockManager, LockManager, str, str]
) -> None:
    """The remembered document is stale: its swap misses, and the acquire takes the row in one
    locked transaction; the release swaps from memory again."""
    first, second, a, b = managers
    pair(first, a)
    pair(second, b)
    sent = wire.count(lambda: pair(first, a))
    assert len(sent) == 5, sent
    assert sent[0].startswith("3:UPDATE locks"), sent
    assert sent[1].endswith("FOR UPDATE") and sent[2].startswith("3:UPDATE locks"), sent
    assert sent[3] == "3:COMMIT" and sent[4].startswith("3:UPDATE locks"), sent


def test_a_fresh_manager_costs_at_most_four_round_trips(mariadb_url: str, lock_row: str, wire: Wire) -> None:
    engine = create_engine(mariadb_url)
    owner = add_owner(engine)
    engine.dispose()
    m = LockManager(mariadb_url, row_id=lock_row, lease=30.0)
    try:
        m.ensure_row()  # opens the autocommit pool
        sent = wire.count(lambda: pair(m, owner))
        assert len(sent) <= 4, sent
    finally:
        m.dispose()


def _contended(m: LockManager) -> None:
    """Make `m` take the locked path: forget the remembered document, and say optimistic swaps have
    been missing (contention, simulated); open the pool first so that no handshake is counted."""
    m._tx.connect().close()
    m._forget()
    m._memory.miss_rate = 1.0


def test_a_locked_write_is_a_locked_read_the_swap_and_its_commit(
    wire: Wire, managers: tuple[LockManager, LockManager, str, str]
) -> None:
    """Under contention: SELECT ... FOR UPDATE, compute, UPDATE ... WHERE version, COMMIT."""
    first, _second, a, _b = managers
    _contended(first)
    locked = first.stats.locked_writes
    sent = wire.count(lambda: first.try_acquire(a, APPTASK))
    assert first.stats.locked_writes == locked + 1
    assert len(sent) == 3, sent
    assert sent[0].endswith("FOR UPDATE"), sent
    assert sent[1].startswith("3:UPDATE locks") and "locks.version =" in sent[1], "the write is version-checked"
    assert sent[2] == "3:COMMIT", sent
    first.release(a)


@pytest.mark.slow
def test_the_lock_bench_reports_every_cell_and_no_violation() -> None:
    require("127.0.0.1", 3306, "MariaDB")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.locks",
            "--json",
            "--seconds",
            "0.5",
            "--n",
            "1,2",
            "--database-url",
            MARIADB_ADMIN,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert set(report) == {"runs", "violations"}
    assert report["violations"] == 0
    cells = {(r["impl"], r["keys"], r["n"]) for r in report["runs"]}
    impls = ("lockman", "naive_cas", "get_lock", "row_per_lock")
    assert cells == {(i, k, n) for i in impls for k in ("distinct", "same") for n in (1, 2)}
    for run in report["runs"]:
        assert set(run) == {
            "impl",
            "keys",
            "n",
            "pairs_per_s",
            "acquire_p50_ms",
            "acquire_p99_ms",
            "cas_retries_per_acquire",
        }, run
        assert run["pairs_per_s"] > 0, run
        assert 0 <= run["acquire_p50_ms"] <= run["acquire_p99_ms"], run
        assert run["cas_retries_per_acquire"] >= 0, run
        if run["impl"] in ("get_lock", "row_per_lock"):
            assert run["cas_retries_per_acquire"] == 0, run


def test_a_task_rows_own_writes_cost_one_round_trip_each(mariadb_url: str, wire: Wire) -> None:
    """The runner's writes to its task row (and the client's INSERT) are single statements that
    commit by themselves: no ping, no COMMIT, no ROLLBACK at check-in (`models.autocommit_engine`)."""
    from models import TaskState, make_engine, records

    engine = make_engine(mariadb_url)
    try:
        records.create(engine, kind="apptask", queue="apptask", args={}, app_id="warm")  # opens the pool
        task_id = records.new_task_id()
        steps = {
            "INSERT": lambda: records.create(
                engine, kind="apptask", queue="apptask", args={"app_id": "a"}, app_id="a", task_id=task_id
            ),
            "claim": lambda: records.claim(engine, task_id, worker="w1", pid=1, plan=APPTASK).claimed,
            "progress": lambda: records.progress(engine, task_id, 50, "half way"),
            "final state": lambda: records.finish(engine, task_id, TaskState.SUCCEEDED, message="Done"),
        }
        for name, step in steps.items():
            sent = wire.count(step)
            assert len(sent) == 1, f"{name}: {sent}"
            assert "COMMIT" not in sent[0] and "ROLLBACK" not in sent[0], f"{name}: {sent}"
        row = records.get(engine, task_id)
        assert row is not None and (row.state, row.percent, row.worker) == ("succeeded", 100, "w1")
    finally:
        engine.dispose()
