"""Retry a failed task (arguments checked again, linked to the old one); one platform task of a kind at a time.

Real databases (SQLite, MariaDB, PostgreSQL) and kombu's filesystem broker, no worker: what is
enqueued stays queued, which is what the dedupe looks at. The REST route and the CLI run as a real
uvicorn server and a `boxtasks` subprocess.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from frontdoor import actions, tokens
from frontdoor.errors import DuplicateError, MissingError, StateError
from models import App, Task, TaskGuard, TaskState, get_engine, records
from tasks import client
from tasks.errors import DuplicateTaskError
from tasks.guards import GUARDED_KINDS
from tests.apiserver import running_api
from tests.cli_run import boxtasks
from tests.e2e.harness import Env

MANIFEST = {"id": "io.example.retry", "version": "1.0.0", "dockerImage": "busybox:latest", "httpPort": 8080}
_ACTIVE = ("queued", "waiting", "running")


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    """This backend's database and a filesystem broker of the test's own; no platform task under way."""
    e = Env(database_url=db_url, broker_url="", data_dir=tmp_path)
    e.apply_to_this_process()
    _settle_guarded(get_engine())
    yield e


def _settle_guarded(engine: Engine) -> None:
    """Earlier tests on the shared database may leave platform tasks queued: end them."""
    with engine.begin() as conn:
        conn.execute(
            update(Task)
            .where(Task.type.in_(sorted(GUARDED_KINDS)), Task.state.in_(_ACTIVE))
            .values(state=TaskState.CANCELLED.value)
        )


def _active(engine: Engine, kind: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(Task.id).where(Task.type == kind, Task.state.in_(_ACTIVE))).scalars())


def _fail(task_id: str, state: TaskState = TaskState.FAILED) -> None:
    assert records.finish(get_engine(), task_id, state, message="Failed: test", error="boom")


@pytest.mark.parametrize("kind", sorted(GUARDED_KINDS))
def test_a_second_platform_task_answers_with_the_first(env: Env, kind: str) -> None:
    engine = get_engine()
    first = actions.platform_task(engine, kind)
    with pytest.raises(DuplicateError) as refused:
        actions.platform_task(engine, kind)
    assert refused.value.task_id == first.task_id and refused.value.status == 409
    assert first.task_id in refused.value.message
    assert _active(engine, kind) == [first.task_id]
    # Once it is final, the next one starts.
    _fail(first.task_id)
    second = actions.platform_task(engine, kind)
    assert second.task_id != first.task_id and _active(engine, kind) == [second.task_id]


@pytest.mark.parametrize("fresh_guard", [True, False], ids=["first-ever", "take-over"])
def test_concurrent_requests_record_one_task(env: Env, fresh_guard: bool) -> None:
    """Eight requests at once, on the guard's first use (as the migration made it) and on taking over a
    finished task's guard."""
    engine = get_engine()
    if fresh_guard:
        with engine.begin() as conn:
            conn.execute(update(TaskGuard).where(TaskGuard.kind == "fullbackup").values(task_id=None))
    else:
        _fail(client.enqueue("fullbackup", {}, engine=engine))
    barrier = threading.Barrier(8)
    started: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        barrier.wait()
        try:
            started.append(client.enqueue("fullbackup", {}, engine=engine))
        except DuplicateTaskError as err:
            refused.append(err.task_id)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(started) == 1, started
    assert refused == [started[0]] * 7
    assert _active(engine, "fullbackup") == started


def _seed_app(app_id: str, location: str) -> None:
    with get_engine().begin() as conn:
        conn.execute(delete(App).where(App.id == app_id))
        conn.execute(
            insert(App).values(
                id=app_id,
                app_store_id="io.example.retry",
                manifest=MANIFEST,
                version="1.0.0",
                location=location,
                installation_state="installed",
                run_state="running",
            )
        )


def test_retry_starts_the_same_request_again_linked_to_the_old(env: Env) -> None:
    engine = get_engine()
    app_id = f"rt{threading.get_ident() % 100000}"
    _seed_app(app_id, f"loc-{app_id}")
    old = actions.app_operation(engine, app_id, "restart", {})
    with pytest.raises(StateError, match="only a failed, interrupted or cancelled task can be retried"):
        actions.retry(engine, old.task_id)
    _fail(old.task_id, TaskState.INTERRUPTED)
    new = actions.retry(engine, old.task_id)
    old_row, new_row = records.get(engine, old.task_id), records.get(engine, new.task_id)
    assert old_row is not None and new_row is not None
    assert new_row.retry_of == old.task_id and old_row.retry_of is None
    assert (new_row.type, new_row.args, new_row.app_id, new_row.state) == ("apptask", old_row.args, app_id, "queued")
    with pytest.raises(DuplicateError) as again:  # retried already, and that retry is under way
        actions.retry(engine, old.task_id)
    assert again.value.task_id == new.task_id
    with pytest.raises(MissingError):
        actions.retry(engine, "no-such-task")


def test_retry_checks_the_arguments_again(env: Env) -> None:
    engine = get_engine()
    app_id, location = f"ri{threading.get_ident() % 100000}", f"inst-{threading.get_ident() % 100000}"
    with engine.begin() as conn:
        conn.execute(delete(App).where(App.location == location))
    old = actions.install(engine, {"manifest": MANIFEST, "location": location}, app_id=app_id)
    _fail(old.task_id)
    actions.release_claim(engine, app_id, "install")  # as a refused install gives back its claim
    _seed_app(f"{app_id}x", location)  # another app took the location meanwhile
    with pytest.raises(StateError, match=f"location {location!r} is already used by app {app_id}x"):
        actions.retry(engine, old.task_id)
    assert not [t for t in _tasks_retrying(engine, old.task_id)], "a refused retry records nothing"
    with engine.begin() as conn:
        conn.execute(delete(App).where(App.id == f"{app_id}x"))
    assert records.get(engine, actions.retry(engine, old.task_id).task_id).retry_of == old.task_id  # type: ignore[union-attr]


def test_retry_of_a_platform_task_meets_the_guard(env: Env) -> None:
    engine = get_engine()
    old = actions.platform_task(engine, "update", {"release_url": "file:///nowhere.tar.gz"})
    _fail(old.task_id)
    other = actions.platform_task(engine, "update")
    with pytest.raises(DuplicateError) as refused:
        actions.retry(engine, old.task_id)
    assert refused.value.task_id == other.task_id
    _fail(other.task_id)
    new = records.get(engine, actions.retry(engine, old.task_id).task_id)
    assert new is not None and new.args == {"release_url": "file:///nowhere.tar.gz"} and new.retry_of == old.task_id


def _tasks_retrying(engine: Engine, task_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(Task.id).where(Task.retry_of == task_id)).scalars())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_rest_and_cli(env: Env, tmp_path: Path) -> None:
    engine = get_engine()
    admin = tokens.create(engine, name="retry admin", scopes=["admin"])[1]
    writer = tokens.create(engine, name="retry writer", scopes=["write"])[1]
    with running_api(env, tmp_path) as api:
        first = api.post("/api/v1/platform/backup", admin)
        assert first.status_code == 202, first.text
        second = api.post("/api/v1/platform/backup", admin)
        assert second.status_code == 409
        assert second.json()["task_id"] == first.json()["task_id"] and second.json()["error"] == "conflict"

        cli = boxtasks("platform", "backup", env=env.variables())
        assert cli.code == 1 and first.json()["task_id"] in cli.err
        cli = boxtasks("--json", "platform", "backup", env=env.variables())
        assert cli.code == 1 and cli.json()["task_id"] == first.json()["task_id"]

        task_id = first.json()["task_id"]
        assert api.post(f"/api/v1/tasks/{task_id}/retry", admin).status_code == 409  # still queued
        _fail(task_id)
        assert api.post(f"/api/v1/tasks/{task_id}/retry", writer).status_code == 403  # platform: admin only
        retried = api.post(f"/api/v1/tasks/{task_id}/retry", admin)
        assert retried.status_code == 202, retried.text
        shown = api.get(retried.json()["url"], admin).json()
        assert shown["retry_of"] == task_id and shown["type"] == "fullbackup"
        assert api.post("/api/v1/tasks/nope/retry", admin).status_code == 404

        _fail(retried.json()["task_id"])
        cli = boxtasks("--json", "task", "retry", retried.json()["task_id"], env=env.variables())
        assert cli.code == 0, cli.err
        again = records.get(engine, cli.json()["task_id"])
        assert again is not None and again.retry_of == retried.json()["task_id"]
