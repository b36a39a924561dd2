"""The scheduler's minute tick on the real databases: one task per job and minute, whatever the ticks.

The tick is the Celery task's function called in this process, with kombu's filesystem broker and no
worker: what it enqueues stays queued, which is what these tests look at.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from frontdoor import queries
from hosting.apps.scheduler import KIND, run_id
from models import App, Task, TaskState, get_engine
from tasks.schedules import scheduler_tick
from tests.e2e.harness import Env

EVERY_MINUTE = {"schedule": "* * * * *", "command": "date >> /app/data/ticks"}
EVERY_FIVE = {"schedule": "*/5 * * * *", "command": "echo five"}
SENT = "2026-12-08T10:05:00.412+00:00"
MINUTE = dt.datetime(2026, 12, 8, 10, 5, tzinfo=dt.UTC)


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(database_url=db_url, broker_url="", data_dir=tmp_path)
    e.apply_to_this_process()
    yield e


def _app(engine: Engine, jobs: dict[str, Any], *, install: str = "installed", run: str = "running") -> str:
    app_id = f"cron-{uuid.uuid4().hex[:10]}"
    manifest = {"id": "io.example.cron", "version": "1.0.0", "addons": {"scheduler": jobs}}
    with engine.begin() as conn:
        conn.execute(
            insert(App).values(
                id=app_id,
                app_store_id="io.example.cron",
                manifest=manifest,
                version="1.0.0",
                location=f"{app_id}.example.org",
                installation_state=install,
                run_state=run,
            )
        )
    return app_id


def _runs(engine: Engine, app_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Task.id, Task.args, Task.state, Task.queue).where(Task.type == KIND, Task.app_id == app_id)
            )
        )


@pytest.fixture
def cleanup(env: Env) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with get_engine().begin() as conn:
        conn.execute(delete(Task).where(Task.app_id.in_(made)))
        conn.execute(delete(App).where(App.id.in_(made)))


def test_each_due_job_is_sent_once_per_minute(cleanup: list[str]) -> None:
    engine = get_engine()
    app_id = _app(
        engine, {"ticks": EVERY_MINUTE, "five": EVERY_FIVE, "nightly": {"schedule": "0 3 * * *", "command": "x"}}
    )
    cleanup.append(app_id)

    first = scheduler_tick(sent_at=SENT)
    again = scheduler_tick(sent_at="2026-12-08T10:05:59+00:00")  # a second tick for the same minute

    runs = {r.args["job"]: r for r in _runs(engine, app_id)}
    assert set(runs) == {"ticks", "five"}  # 03:00 is not due at 10:05
    assert runs["ticks"].id == run_id(app_id, "ticks", MINUTE)
    assert runs["ticks"].args == {"app_id": app_id, "job": "ticks", "minute": "2026-12-08T10:05Z"}
    assert {r.state for r in runs.values()} == {TaskState.QUEUED.value}
    assert {r.queue for r in runs.values()} == {"apptask"}
    assert sorted(x for x in first["sent"] if x.startswith(app_id)) == [f"{app_id}/five", f"{app_id}/ticks"]
    assert not [x for x in again["sent"] if x.startswith(app_id)]
    # The first tick's runs are still queued: the second one counts them as under way.
    mine = sorted(x for x in first["sent"] if x.startswith(app_id))
    assert sorted(x for x in again["busy"] + again["already"] if x.startswith(app_id)) == mine
    # Shown where tasks are: the front door's task list (the API's GET /tasks, `boxtasks task list`).
    listed = queries.list_tasks(engine, type=KIND, app_id=app_id)
    assert sorted(t.args["job"] for t in listed) == ["five", "ticks"]
    assert {t.state for t in listed} == {"queued"}


def test_a_second_tick_for_a_finished_minute_sends_nothing(cleanup: list[str]) -> None:
    """The run ended before the second tick for its minute came: its id, not its state, refuses it."""
    engine = get_engine()
    app_id = _app(engine, {"ticks": EVERY_MINUTE})
    cleanup.append(app_id)
    scheduler_tick(sent_at=SENT)
    with engine.begin() as conn:
        conn.execute(update(Task).where(Task.app_id == app_id).values(state=TaskState.SUCCEEDED.value))

    again = scheduler_tick(sent_at=SENT)

    assert f"{app_id}/ticks" in again["already"]
    assert len(_runs(engine, app_id)) == 1
    # The next minute is a run of its own.
    scheduler_tick(sent_at="2026-12-08T10:06:01+00:00")
    assert len(_runs(engine, app_id)) == 2


def test_concurrent_ticks_for_one_minute_record_one_task(cleanup: list[str]) -> None:
    engine = get_engine()
    app_id = _app(engine, {"ticks": EVERY_MINUTE})
    cleanup.append(app_id)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def tick() -> None:
        start.wait()
        try:
            scheduler_tick(sent_at=SENT)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert errors == []
    assert [r.id for r in _runs(engine, app_id)] == [run_id(app_id, "ticks", MINUTE)]


def test_a_job_still_under_way_is_not_sent_again(cleanup: list[str]) -> None:
    """A job waiting behind a long restore gets no second run queued next minute."""
    engine = get_engine()
    app_id = _app(engine, {"ticks": EVERY_MINUTE})
    cleanup.append(app_id)
    scheduler_tick(sent_at=SENT)
    with engine.begin() as conn:
        conn.execute(update(Task).where(Task.app_id == app_id).values(state=TaskState.WAITING.value))

    later = scheduler_tick(sent_at="2026-12-08T10:06:00+00:00")

    assert f"{app_id}/ticks" in later["busy"]
    assert len(_runs(engine, app_id)) == 1


@pytest.mark.parametrize(
    ("install", "run", "sent"),
    [
        ("installed", "stopped", False),
        ("pending_install", "running", False),
        ("pending_uninstall", "running", False),
        ("error", "running", False),
        ("pending_restore", "running", True),  # the run queues behind the restore's lock
        ("pending_backup", "running", True),
    ],
)
def test_which_apps_get_their_jobs_sent(cleanup: list[str], install: str, run: str, sent: bool) -> None:
    engine = get_engine()
    app_id = _app(engine, {"ticks": EVERY_MINUTE}, install=install, run=run)
    cleanup.append(app_id)

    scheduler_tick(sent_at=SENT)

    assert len(_runs(engine, app_id)) == (1 if sent else 0)


def test_a_bad_section_in_one_app_does_not_stop_the_others(cleanup: list[str]) -> None:
    engine = get_engine()
    bad = _app(engine, {"broken": {"schedule": "99 * * * *", "command": "x"}})
    good = _app(engine, {"ticks": EVERY_MINUTE})
    cleanup.extend([bad, good])

    report = scheduler_tick(sent_at=SENT)

    assert bad in report["bad"]
    assert _runs(engine, bad) == []
    assert len(_runs(engine, good)) == 1
