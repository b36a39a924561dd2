"""Each task's own log: captured in the worker, bounded, readable while the task runs and after,
through `GET /tasks/{id}/log` (text, streamed with `follow=1`) and `boxtasks task logs ID [--follow]`;
a worker killed mid-task keeps what was written before."""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine

from bench import taskrig
from frontdoor import tokens
from lockman import LockManager
from models import TaskState, records
from tasks import logstore
from tasks.client import enqueue
from tasks.logstore import Bounds
from tasks.tasklog import Capture
from tests.apiserver import ApiServer, running_api
from tests.cli_run import boxtasks
from tests.e2e.harness import Env, wait_for, wait_state

log = logging.getLogger("tests.test_task_logs")


@pytest.fixture
def capture(engine: Engine) -> Iterator[Capture]:
    cap = Capture(engine, Bounds(head=3, tail=4), line_chars=60, flush_seconds=0.05)
    log.addHandler(cap)
    logging.getLogger("sqlalchemy.test_task_logs").addHandler(cap)
    log.setLevel(logging.INFO)
    yield cap
    log.removeHandler(cap)
    logging.getLogger("sqlalchemy.test_task_logs").removeHandler(cap)
    cap.close()


def _new_task(engine: Engine) -> str:
    return records.create(engine, kind="t_logger", queue="apptask", args={}, app_id=None)


def _text(engine: Engine, task_id: str) -> str:
    return "".join(logstore.render(b)[0] for b in logstore.read_all(engine, task_id))


def test_a_task_keeps_its_first_and_last_lines(engine: Engine, capture: Capture) -> None:
    task_id = _new_task(engine)
    capture.begin(task_id)
    for i in range(1, 21):
        log.info("line %d", i)
    log.info("long %s", "x" * 200)
    logging.getLogger("sqlalchemy.test_task_logs").warning("parameters: a secret")
    helper = threading.Thread(target=lambda: log.warning("from a helper thread"))
    helper.start()
    helper.join()
    capture.end(task_id)
    lines = [x for b in logstore.read_all(engine, task_id) for x in b]
    # 22 lines made (the sqlalchemy one is never kept): the first 3 and the last 4.
    assert [x.seq for x in lines] == [1, 2, 3, 19, 20, 21, 22]
    assert [x.line for x in lines[:3]] == [f"tests.test_task_logs: line {i}" for i in (1, 2, 3)]
    assert lines[5].line.startswith("tests.test_task_logs: long xxx") and lines[5].line.endswith("…")
    assert len(lines[5].line) == 60
    assert (lines[6].level, lines[6].line) == ("WARNING", "tests.test_task_logs: from a helper thread")
    text = _text(engine, task_id)
    assert "[... 15 lines dropped" in text and "secret" not in text
    # After the run, nothing more is kept for it.
    log.info("after the end")
    capture.flush()
    assert "after the end" not in _text(engine, task_id)


def test_lines_are_written_while_the_task_runs(engine: Engine, capture: Capture) -> None:
    task_id = _new_task(engine)
    capture.begin(task_id)
    log.info("still running")
    wait_for(lambda: "still running" in _text(engine, task_id), timeout=30, what="the flusher to write the line")
    capture.end(task_id)


def test_two_tasks_in_one_process_keep_their_own_lines(engine: Engine, capture: Capture) -> None:
    first, second = _new_task(engine), _new_task(engine)
    ready = threading.Barrier(3)

    def run(task_id: str) -> None:
        capture.begin(task_id)
        ready.wait()
        log.info("I am %s", task_id[:8])
        ready.wait()
        capture.end(task_id)

    threads = [threading.Thread(target=run, args=(t,)) for t in (first, second)]
    for t in threads:
        t.start()
    ready.wait()
    log.info("whose line is this?")  # neither task's thread, and two tasks run: kept by neither
    ready.wait()
    for t in threads:
        t.join()
    for task_id, other in ((first, second), (second, first)):
        text = _text(engine, task_id)
        assert f"I am {task_id[:8]}" in text and other[:8] not in text and "whose line" not in text


def test_a_second_writer_of_the_same_task_numbers_after_the_first(engine: Engine) -> None:
    task_id = _new_task(engine)
    a = Capture(engine, Bounds(head=100, tail=100), line_chars=200, flush_seconds=60)
    b = Capture(engine, Bounds(head=100, tail=100), line_chars=200, flush_seconds=60)
    for cap, word in ((a, "first"), (b, "second")):
        cap.begin(task_id)
        for i in range(3):
            cap.handle(logging.makeLogRecord({"name": "x", "msg": f"{word} {i}", "levelname": "INFO"}))
    a.flush()
    b.flush()  # numbered 1-3 too, until it finds a's lines there
    lines = [x.line for x in logstore.read(engine, task_id)]
    assert lines == [f"x: {w} {i}" for w in ("first", "second") for i in range(3)]
    a.close()
    b.close()


# ---------------------------------------------------------------------------- with a real worker


@pytest.fixture
def worker_env(mariadb_url: str, tmp_path: Path) -> Env:
    """MariaDB and the filesystem broker of a data dir of this test's own (no shared queues)."""
    e = Env(
        database_url=mariadb_url,
        broker_url="",
        data_dir=tmp_path / "data",
        extra={"BOXTASKS_LOCK_ROW": f"tl_{uuid.uuid4().hex[:10]}"},
    )
    e.apply_to_this_process()
    manager = LockManager.from_settings()
    manager.ensure_row()
    manager.dispose()
    return e


@pytest.fixture
def worker(worker_env: Env, tmp_path: Path) -> Iterator[taskrig.Worker]:
    w = taskrig.Worker(
        worker_env.variables(),
        tmp_path / "worker.log",
        nodename="tl@boxtasks-test",
        queues=["apptask"],
        concurrency=1,
        kinds_module="tests.integration.tasklog_kinds",
        failure=AssertionError,
    ).start()
    yield w
    w.stop()


def _cli(env: Env, *args: str) -> tuple[int, str, str]:
    done = boxtasks(*args, env=env.variables())
    return done.code, done.out, done.err


@pytest.mark.slow
@pytest.mark.mariadb
def test_log_read_while_running_and_kept_when_the_worker_is_killed(
    worker_env: Env, worker: taskrig.Worker, engine_of_env: Engine
) -> None:
    task_id = enqueue("t_logger", {"app_id": "k1", "lines": 4, "then_sleep": 600.0}, app_id="k1", queue="apptask")

    def logged_while_running() -> bool:
        code, out, _ = _cli(worker_env, "task", "logs", task_id)
        return code == 0 and "k1 helper thread done" in out

    wait_for(logged_while_running, timeout=120, interval=0.5, what="the lines while the task runs")
    row = records.get(engine_of_env, task_id)
    assert row is not None and row.state == TaskState.RUNNING.value and row.pid
    os.kill(row.pid, signal.SIGKILL)
    wait_state(task_id, "interrupted", timeout=120)
    code, out, _ = _cli(worker_env, "task", "logs", task_id)
    assert code == 0
    said = [line.split(" ", 1)[1] for line in out.splitlines()]
    assert said[:5] == [f"INFO    tests.tasklog_kinds: k1 says hello {i}" for i in range(1, 5)] + [
        "WARNING tests.tasklog_kinds: k1 helper thread done"
    ]
    assert "k1 finished" not in out


@pytest.fixture
def engine_of_env(worker_env: Env) -> Engine:
    from models import get_engine

    return get_engine()


@pytest.mark.slow
@pytest.mark.mariadb
def test_follow_streams_until_the_task_ends(
    worker_env: Env, worker: taskrig.Worker, engine_of_env: Engine, tmp_path: Path
) -> None:
    _, read = tokens.create(engine_of_env, name="logs test", scopes=["read"])
    task_id = enqueue("t_logger", {"app_id": "f1", "lines": 6, "pause": 0.3}, app_id="f1", queue="apptask")
    with running_api(worker_env, tmp_path) as api:
        url = f"{api.url}/api/v1/tasks/{task_id}/log?follow=1"
        with requests.get(url, headers={"Authorization": f"Bearer {read}"}, stream=True, timeout=300) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
            streamed = b"".join(response.iter_content(chunk_size=None)).decode()
        assert records.get(engine_of_env, task_id).state == TaskState.SUCCEEDED.value  # type: ignore[union-attr]
        said = [line.split(" ", 1)[1] for line in streamed.splitlines() if "tests.tasklog_kinds" in line]
        assert said == [
            *(f"INFO    tests.tasklog_kinds: f1 says hello {i}" for i in range(1, 7)),
            "WARNING tests.tasklog_kinds: f1 helper thread done",
            "INFO    tests.tasklog_kinds: f1 finished",
        ]
        _reads_of_a_finished_log(api, read, task_id, streamed, worker_env)


def _reads_of_a_finished_log(api: ApiServer, token: str, task_id: str, streamed: str, env: Env) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/plain"}
    plain = requests.get(f"{api.url}/api/v1/tasks/{task_id}/log", headers=headers, timeout=30)
    assert plain.status_code == 200 and plain.text == streamed
    milestones = api.get(f"/api/v1/tasks/{task_id}/log", token)  # JSON, as before
    assert milestones.status_code == 200 and milestones.json()[0]["message"] == "Queued"
    assert api.get(f"/api/v1/tasks/{task_id}/log?follow=1").status_code == 401
    missing = api.get(f"/api/v1/tasks/{uuid.uuid4()}/log?follow=1", token)
    assert missing.status_code == 404 and "boxtasks task list" in missing.json()["message"]
    code, out, _ = _cli(env, "task", "logs", task_id, "--follow")
    assert (code, out) == (0, streamed)
    code, out, err = _cli(env, "task", "logs", str(uuid.uuid4()))
    assert code == 1 and out == "" and err.startswith("boxtasks: no task") and err.count("\n") == 1


@pytest.mark.mariadb
def test_a_dump_tools_output_goes_to_the_task_log(mariadb_url: str, tmp_path: Path) -> None:
    """What mysqldump says on stderr is logged (and kept by the running task), not only raised."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from hosting.backups.boxbackup import dump_database
    from hosting.errors import DumpError

    eng = create_engine(mariadb_url)
    cap = Capture(eng, Bounds(head=100, tail=100), line_chars=500, flush_seconds=60)
    logger = logging.getLogger("hosting.backups.boxbackup")
    logger.addHandler(cap)
    level = logger.level
    logger.setLevel(logging.INFO)  # as in a worker run with `-l info`
    try:
        task_id = _new_task(eng)
        cap.begin(task_id)
        missing = make_url(mariadb_url).set(database=f"nope_{uuid.uuid4().hex[:8]}")
        with pytest.raises(DumpError):
            dump_database(missing, tmp_path)
        cap.end(task_id)
        text = _text(eng, task_id)
        assert "hosting.backups.boxbackup: mysqldump: " in text and "Unknown database" in text
    finally:
        logger.setLevel(level)
        logger.removeHandler(cap)
        cap.close()
        eng.dispose()
