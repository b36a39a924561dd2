"""The task row's one-statement writes (`models.engine.autocommit_engine`): what they do when the
server drops their connection, when an id is taken, and the companion engine's life."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from models import Base, TaskState, make_engine, records
from models.engine import _COMPANIONS, autocommit_engine, dispose_after_fork
from tests.lostanswer import lose_first_answer
from tests.services import MARIADB_ADMIN


def _drop_the_companions_connection(engine: Engine) -> None:
    """What a server restart or wait_timeout does to the one idle connection in the companion's pool."""
    with autocommit_engine(engine).connect() as conn:
        connection_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
    admin = create_engine(MARIADB_ADMIN)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"KILL CONNECTION {int(connection_id)}"))
    finally:
        admin.dispose()


@pytest.mark.mariadb
def test_idempotent_writes_go_again_on_a_new_connection_and_the_claim_leaves_it_to_its_caller(
    mariadb_url: str,
) -> None:
    engine = make_engine(mariadb_url)
    try:
        task_id = records.create(engine, kind="apptask", queue="apptask", args={}, app_id="a")
        _drop_the_companions_connection(engine)
        # The claim must not be sent twice by itself: a second send could not tell "mine" from
        # "someone else's" (the runner asks the row, see tasks.runner._claim).
        with pytest.raises(DBAPIError) as dropped:
            records.claim(engine, task_id, worker="w1", pid=1)
        assert dropped.value.connection_invalidated
        assert records.claim(engine, task_id, worker="w1", pid=1).claimed
        _drop_the_companions_connection(engine)
        records.progress(engine, task_id, 40, "copying")  # sent again, on a new connection
        _drop_the_companions_connection(engine)
        assert records.finish(engine, task_id, TaskState.SUCCEEDED, message="Done")
        row = records.get(engine, task_id)
        assert row is not None and (row.state, row.message) == ("succeeded", "Done")
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_an_insert_sent_once_never_takes_over_a_row_with_the_same_id(mariadb_url: str) -> None:
    engine = make_engine(mariadb_url)
    try:
        task_id = records.create(engine, kind="apptask", queue="apptask", args={"app_id": "a"}, app_id="a")
        with pytest.raises(IntegrityError):
            records.create(engine, kind="apptask", queue="apptask", args={"app_id": "a"}, app_id="a", task_id=task_id)
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_the_companion_goes_with_its_engine(mariadb_url: str) -> None:
    engine = make_engine(mariadb_url)
    first = autocommit_engine(engine)
    assert autocommit_engine(engine) is first
    assert first.echo == engine.echo and first.url == engine.url
    engine.dispose()
    assert engine not in _COMPANIONS
    assert autocommit_engine(engine) is not first  # a write after the dispose gets a new one
    engine.dispose()


def test_sqlite_in_memory_writes_land_in_the_same_database() -> None:
    """SQLite has no round trips to save: the writes use the engine itself, so an in-memory
    database (one per connection pool) is the one the reads see."""
    engine = make_engine("sqlite://")
    try:
        Base.metadata.create_all(engine)
        task_id = records.create(engine, kind="apptask", queue="apptask", args={}, app_id=None)
        assert records.claim(engine, task_id, worker="w1", pid=1).claimed
        assert records.finish(engine, task_id, TaskState.FAILED, message="Failed: boom", error="boom")
        row = records.get(engine, task_id)
        assert row is not None and (row.state, row.error) == ("failed", "boom")
        assert engine not in _COMPANIONS
    finally:
        engine.dispose()


def test_an_insert_whose_answer_was_lost_finds_its_own_row_when_sent_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The INSERT lands, then its connection drops before the answer: the second send meets its
    own row (same id, kind and arguments) and the enqueue goes on."""
    calls = lose_first_answer(monkeypatch, "_write")
    task_id = records.create(engine, kind="apptask", queue="apptask", args={"app_id": "a"}, app_id="a")
    assert len(calls) == 2
    row = records.get(engine, task_id)
    assert row is not None and (row.state, row.args) == ("queued", {"app_id": "a"})


@pytest.mark.mariadb
def test_a_forked_child_makes_its_own_companion_and_leaves_the_parents_connection_alone(mariadb_url: str) -> None:
    """What a Celery pool process does after the fork (`worker_process_init`): its writes must not
    go through, nor close, the connection the parent's companion keeps (a dispose with close=True
    in the child would send QUIT on the parent's socket)."""
    engine = make_engine(mariadb_url)
    try:
        task_id = records.create(engine, kind="apptask", queue="apptask", args={}, app_id="a")
        assert records.claim(engine, task_id, worker="w1", pid=1).claimed  # progress is for a running task
        parents = autocommit_engine(engine)
        with parents.connect() as conn:
            before = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
        pid = os.fork()
        if pid == 0:  # the child: report by exit code only, never return into pytest
            code = 1
            try:
                dispose_after_fork()
                engine.dispose(close=False)  # its own copy of the parent's engine, as after any fork
                records.progress(engine, task_id, 10, "from the child")
                landed = records.get(engine, task_id).percent == 10  # type: ignore[union-attr]
                code = 0 if landed and autocommit_engine(engine) is not parents else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with parents.connect() as conn:
            assert conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one() == before
        records.progress(engine, task_id, 20, "from the parent")
        row = records.get(engine, task_id)
        assert row is not None and (row.percent, row.message) == (20, "from the parent")
    finally:
        engine.dispose()
