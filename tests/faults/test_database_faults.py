"""The database goes away under running workers: a restart, idle connections closed, connections killed.

All on a private MariaDB (tests/faults/servers.py); the shared one is never touched. Afterwards:
every task is final and says what happened, no two tasks held one app at once, no update was lost,
the lock row is empty, and the workers run new tasks.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
from sqlalchemy import insert, select

from lockman import LockManager, lock_set
from models import get_engine, make_engine, records
from tasks.client import enqueue
from tasks.runner import Outcome, RunContext, Runtime, execute
from tests.e2e.harness import Env, Worker, wait_for, wait_state
from tests.e2e.kinds import counters
from tests.faults.checks import (
    NAMES_THE_DATABASE,
    Stream,
    all_tasks,
    assert_no_leaked_lock,
    assert_no_overlap,
    assert_truthful,
    describe,
    new_app,
    tails,
    wait_all_final,
    wait_succeeded,
)
from tests.faults.servers import PrivateMariaDB

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]

#: Longer than the outage: a holder whose heartbeat only paused while the database was down is alive.
LEASE = 12.0
#: How long the database stays down in the restart test.
OUTAGE = 3.0


def _workers_recovered(workers: list[Worker], apps: list[str]) -> None:
    for w in workers:
        assert w.proc is not None and w.proc.poll() is None, f"worker {w.nodename} died:\n{w.tail()}"
    after = [enqueue("t_traced", {"app_id": a, "seconds": 0.1}, app_id=a, queue="apptask") for a in apps]
    for task_id in after:
        done = wait_state(task_id, timeout=60)
        assert done.state == "succeeded", f"a task after the fault failed:\n{describe([done])}\n{tails(workers)}"


def test_database_restart_mid_stream(
    mariadb_server: PrivateMariaDB, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    fault_env.lease = LEASE
    fault_env.apply_to_this_process()
    workers = [start_worker(name="dbr1", concurrency=2, extra_args=["-B"]), start_worker(name="dbr2", concurrency=2)]
    apps = [new_app() for _ in range(3)]
    _counters(apps)
    streams = [
        Stream("t_traced", apps, {"seconds": 0.3}).start(),
        Stream("t_fenced_count", apps, {"seconds": 0.1}, interval=0.4).start(),
    ]
    try:
        wait_succeeded(6, timeout=60, workers=workers)
        # A backlog, so that messages reach workers while the database is down.
        for app_id in apps * 2:
            enqueue("t_traced", {"app_id": app_id, "seconds": 0.3}, app_id=app_id, queue="apptask")
        down_at = time.time()
        mariadb_server.stop()
        time.sleep(OUTAGE)
        mariadb_server.start()
        up_at = time.time()
        time.sleep(4.0)
    finally:
        for stream in streams:
            stream.stop()
    get_engine().dispose()  # this process's pool holds connections to the server as it was

    rows = wait_all_final(workers, timeout=LEASE * 3 + 60)
    assert_truthful(rows, allowed={"succeeded", "failed", "interrupted"}, because=NAMES_THE_DATABASE)
    for stream in streams:
        assert {task_id for _, task_id in stream.sent} <= {r.id for r in rows}, "a task sent has no row"
        refused_while_up = [t for t, _ in stream.refused if t < down_at or t > up_at + 5.0]
        assert not refused_while_up, f"enqueue failed while the database was up: {stream.refused}"
    _assert_no_lost_update(apps, rows)
    assert assert_no_overlap(apps) >= 6
    assert_no_leaked_lock()
    _workers_recovered(workers, apps)
    assert_no_overlap(apps)
    assert_no_leaked_lock()
    late = [r for r in all_tasks() if r.state != "succeeded"]
    print(f"{len(rows)} tasks; not succeeded:\n{describe(late)}")  # noqa: T201 - shown with -s


# ----------------------------------------------------------------------------- connections closed


def _counters(names: list[str]) -> None:
    counters.metadata.create_all(get_engine())
    with get_engine().begin() as conn:
        conn.execute(insert(counters), [{"name": n, "value": 0, "writers": ""} for n in names])


def _assert_no_lost_update(names: list[str], rows: list[Any]) -> None:
    """Each counter holds one increment per task that wrote it; every task that succeeded wrote."""
    with get_engine().connect() as conn:
        found = {r.name: r for r in conn.execute(select(counters))}
    succeeded = {r.id for r in rows if r.type == "t_fenced_count" and r.state == "succeeded"}
    writers: set[str] = set()
    for name in names:
        wrote = found[name].writers.split()
        assert len(wrote) == len(set(wrote)), f"counter {name}: a task wrote twice: {wrote}"
        assert found[name].value == len(wrote), f"counter {name}: {found[name].value} after {len(wrote)} writes"
        writers.update(wrote)
    assert succeeded <= writers, f"succeeded without their write: {succeeded - writers}"


def _round(kinds: list[str], apps: list[str], workers: list[Worker]) -> None:
    """One task of each kind on each app, all succeeded."""
    sent = [enqueue(k, {"app_id": a, "seconds": 0.1}, app_id=a, queue="apptask") for a in apps for k in kinds]
    for task_id in sent:
        done = wait_state(task_id, timeout=60)
        assert done.state == "succeeded", f"{describe([done])}\n{tails(workers)}"


def _idle_past_wait_timeout(server: PrivateMariaDB) -> None:
    """Nothing runs for longer than `wait_timeout` (2 s): the server closes every pooled connection."""
    time.sleep(5)
    assert not server.execute(
        "SELECT id FROM information_schema.processlist WHERE command = 'Sleep' AND time >= 3 AND db IS NOT NULL"
    ), "the server kept idle connections past wait_timeout"


def test_idle_connections_closed_by_the_server(
    mariadb_server: PrivateMariaDB, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    """Lock row, task rows, heartbeats: every pooled connection is dead when the next tasks come."""
    mariadb_server.execute("SET GLOBAL wait_timeout = 2")
    get_engine().dispose()  # this process's connections get the new timeout too
    apps = [new_app() for _ in range(3)]
    workers = [start_worker(name="idle1", concurrency=2)]
    _round(["t_traced"], apps, workers)
    _idle_past_wait_timeout(mariadb_server)
    _round(["t_traced"], apps, workers)
    rows = wait_all_final(workers, timeout=60)
    assert_truthful(rows, allowed={"succeeded"}, because=NAMES_THE_DATABASE)
    assert assert_no_overlap(apps) == 2 * len(apps)
    assert_no_leaked_lock()


def test_fenced_write_after_idle_connection_closed(
    mariadb_server: PrivateMariaDB, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    """A task's `ctx.fenced()` write on a pooled connection that the server closed while idle."""
    mariadb_server.execute("SET GLOBAL wait_timeout = 2")
    get_engine().dispose()
    apps = [new_app()]
    _counters(apps)
    workers = [start_worker(name="idle2", concurrency=1)]  # one process: the second round meets its old pool
    _round(["t_fenced_count"], apps, workers)
    _idle_past_wait_timeout(mariadb_server)
    _round(["t_fenced_count"], apps, workers)
    rows = wait_all_final(workers, timeout=60)
    _assert_no_lost_update(apps, rows)
    assert_no_leaked_lock()


def _workers_connect_as_worker(server: PrivateMariaDB, env: Env) -> None:
    """Workers started from now on connect as `worker`, this process stays root: kills spare the test's own."""
    server.execute("CREATE USER 'worker'@'127.0.0.1'")
    server.execute("GRANT ALL ON *.* TO 'worker'@'127.0.0.1'")
    env.database_url = env.database_url.replace("root@", "worker@")


class _Killer:
    """Kills every connection of the `worker` user at random moments (0.1-0.6 s apart), from a thread."""

    def __init__(self, server: PrivateMariaDB) -> None:
        self.server = server
        self.killed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)
        self._rng = random.Random(7)

    def __enter__(self) -> _Killer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._rng.uniform(0.1, 0.6)):
            ids = self.server.execute("SELECT id FROM information_schema.processlist WHERE user = 'worker'")
            for (conn_id,) in ids:
                with contextlib.suppress(pymysql.MySQLError):  # gone meanwhile
                    self.server.execute(f"KILL CONNECTION {int(str(conn_id))}")
                    self.killed += 1


def test_connections_killed_at_random_moments(
    mariadb_server: PrivateMariaDB, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    """The workers' connections (lock row, task rows, fenced writes) are killed server-side, again and again."""
    fault_env.lease = LEASE  # a killed connection is a blip, not a dead process
    _workers_connect_as_worker(mariadb_server, fault_env)
    workers = [start_worker(name="kill1", concurrency=2, extra_args=["-B"]), start_worker(name="kill2", concurrency=2)]
    apps = [new_app() for _ in range(3)]
    _counters(apps)
    counted = Stream("t_fenced_count", apps, {"seconds": 0.05}, interval=0.2)
    traced = Stream("t_traced", apps, {"seconds": 0.05}, interval=0.2)
    with _Killer(mariadb_server) as killer:
        counted.start()
        traced.start()
        time.sleep(12)
        counted.stop()
        traced.stop()
    assert killer.killed > 20, "the killer hardly killed anything"
    assert not counted.refused and not traced.refused, "enqueue failed though this process's connections live"

    rows = wait_all_final(workers, timeout=LEASE * 3 + 60)
    assert_truthful(rows, allowed={"succeeded", "failed", "interrupted"}, because=NAMES_THE_DATABASE)
    _assert_no_lost_update(apps, rows)
    assert assert_no_overlap(apps) > 0
    assert_no_leaked_lock()
    _workers_recovered(workers, apps)
    late = [r for r in all_tasks() if r.state != "succeeded"]
    print(f"{len(rows)} tasks, {killer.killed} connections killed; not succeeded:\n{describe(late)}")  # noqa: T201


# ----------------------------------------------------------------------------- the runner, step by step


@pytest.fixture
def runtime(mariadb_server: PrivateMariaDB) -> Iterator[Runtime]:
    """The runner's view of one worker process, on the private MariaDB (no Celery)."""
    url = mariadb_server.new_database()
    manager = LockManager(url, row_id="main", lease=LEASE)
    engine = make_engine(url)
    yield Runtime(
        manager=manager,
        engine=engine,
        worker="node@faults",
        pid=os.getpid(),
        lease=manager.lease,
        heartbeat_interval=0.3,
        wake=lambda ids: None,
    )
    manager.dispose()
    engine.dispose()


def _restart_later(server: PrivateMariaDB, *, down: float) -> threading.Thread:
    """Stop the server now, start it again `down` seconds later (from a thread)."""
    server.stop()

    def start_again() -> None:
        time.sleep(down)
        server.start()

    thread = threading.Thread(target=start_again, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("when", ["before the claim", "before the final write"])
def test_runner_outlasts_a_database_restart(mariadb_server: PrivateMariaDB, runtime: Runtime, when: str) -> None:
    """The database is down when a task is claimed, or when its final state is written: the runner waits for
    it and records the truth, rather than leaving the row `queued` (its message gone) or `running` with
    its locks held until the lease runs out."""
    task_id = records.create(runtime.engine, kind="t", queue="apptask", args={}, app_id="a")
    restarts: list[threading.Thread] = []
    if when == "before the claim":
        restarts.append(_restart_later(mariadb_server, down=OUTAGE))

    def body(ctx: RunContext) -> str:
        if when == "before the final write":
            restarts.append(_restart_later(mariadb_server, down=OUTAGE))
        return "done"

    try:
        result = execute(runtime, task_id, "t", lock_set({"platform": "S", "app:a": "X"}), body)
    finally:
        for thread in restarts:  # the server is up again before anything else (teardown too) goes on
            thread.join(timeout=60)
    assert result.outcome is Outcome.SUCCEEDED, result
    done = records.get(runtime.engine, task_id)
    assert done is not None and done.state == "succeeded" and done.result == "done", done
    assert runtime.manager.snapshot().table.owners() == set()


def test_connection_killed_in_the_middle_of_a_release(
    mariadb_server: PrivateMariaDB, fault_env: Env, start_worker: Callable[..., Worker]
) -> None:
    """A holder's release is caught in the act: held up on the lock row, its connection is killed."""
    _workers_connect_as_worker(mariadb_server, fault_env)
    workers = [start_worker(name="rel1", concurrency=2)]
    app_id = new_app()
    holder = enqueue("t_traced", {"app_id": app_id, "seconds": 1.5}, app_id=app_id, queue="apptask")
    wait_state(holder, "running", timeout=30)
    waiter = enqueue("t_traced", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    wait_state(waiter, "waiting", timeout=30)
    database = fault_env.database_url.rsplit("/", 1)[1]
    row_id = fault_env.extra["BOXTASKS_LOCK_ROW"]
    blocker = pymysql.connect(host="127.0.0.1", port=mariadb_server.port, user="root", database=database)
    killed: list[object] = []
    try:
        with blocker.cursor() as cur:  # the lock row, locked: the holder's release will wait on it
            cur.execute("BEGIN")
            cur.execute("SELECT version FROM locks WHERE id = %s FOR UPDATE", (row_id,))

        def release_in_flight() -> list[tuple[object, ...]]:
            return mariadb_server.execute(
                "SELECT id, info FROM information_schema.processlist WHERE user = 'worker'"
                " AND (info LIKE 'UPDATE locks%' OR info LIKE '%FROM locks%')"
            )

        [(conn_id, statement)] = wait_for(release_in_flight, timeout=30, what="the holder's release on the lock row")
        mariadb_server.execute(f"KILL CONNECTION {int(str(conn_id))}")
        killed.append(statement)
    finally:
        blocker.rollback()
        blocker.close()
    assert killed, "no release was caught on the lock row"
    done = wait_state(holder, timeout=60)
    assert done.state == "succeeded", f"{describe([done])}\n{tails(workers)}"
    after = wait_state(waiter, timeout=60)
    assert after.state == "succeeded", f"{describe([after])}\n{tails(workers)}"
    assert assert_no_overlap([app_id]) == 2
    assert_no_leaked_lock()
