"""A full backup that meets a busy app parks: it gives its process back, keeps its locks, resumes.

Celery-free, on MariaDB, PostgreSQL and SQLite: `tasks.runner.execute` with the same
`back_up_apps` loop the `fullbackup` task runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, update

from hosting.backups.fullbackup import back_up_apps
from lockman import Granted, lock_set
from lockman.table import lockset_to_dict
from models import Task, records
from tasks.runner import Outcome, RunContext, Runtime, execute
from tests.owners import add_owner

BACKUP_PLAN = lock_set({"task:fullbackup": "X", "platform": "S"})
APPS = ["a", "b", "c"]


class _Backup:
    """The body of a full backup over APPS; remembers which apps each run copied."""

    def __init__(self) -> None:
        self.copies: list[str] = []

    def __call__(self, ctx: RunContext) -> dict[str, Any]:
        def copy(_ctx: Any, app_id: str) -> str:
            self.copies.append(app_id)
            return f"backup-of-{app_id}"

        report = back_up_apps(ctx, APPS, copy, resumable=True)
        return {"copied": report.copied, "deferred": report.deferred, "results": report.results}


def _backup_task(engine: Engine) -> str:
    return records.create(engine, kind="fullbackup", queue="backup", args={}, app_id=None)


def test_a_busy_app_parks_the_backup_which_keeps_its_locks_and_resumes(
    runtime: tuple[Runtime, list[str]], engine: Engine
) -> None:
    rt, woken = runtime
    app_task = add_owner(engine)
    assert isinstance(rt.manager.try_acquire(app_task, {"platform": "S", "app:b": "X"}), Granted)
    backup_id = _backup_task(engine)
    body = _Backup()

    first = execute(rt, backup_id, "fullbackup", BACKUP_PLAN, body)

    assert first.outcome is Outcome.WAITING
    assert body.copies == ["a", "c"], "the free apps are copied before the task parks"
    row = records.get(engine, backup_id)
    assert row is not None and row.state == "waiting" and "app:b" in row.message
    assert row.checkpoint["fullbackup"]["copied"] == ["a", "c"]
    began = row.started_at
    assert began is not None, "parked, it has started: its work began before it parked"
    table = rt.manager.snapshot().table
    assert set(table.held_by(backup_id)) == {"task:fullbackup", "platform"}, "parked, it keeps its own plan"
    assert [b.owner for b in table.blockers_of(backup_id)] == [app_task]

    # No process, so no heartbeat: a parked holder is alive however old its last beat.
    with engine.begin() as conn:
        conn.execute(update(Task).where(Task.id == backup_id).values(heartbeat_at=dt.datetime(2000, 1, 1)))
    rt.manager.sweep()
    assert set(rt.manager.snapshot().table.held_by(backup_id)) == {"task:fullbackup", "platform"}
    assert backup_id not in records.stale_running(engine, rt.lease)

    # The app's task ends: its release names the backup as ready, and the worker wakes it.
    release = rt.manager.release(app_task)
    assert [w.owner for w in release.ready] == [backup_id]

    second = execute(rt, backup_id, "fullbackup", BACKUP_PLAN, body)

    assert second.outcome is Outcome.SUCCEEDED
    assert body.copies == ["a", "c", "b"], "each app copied once, across both runs"
    assert second.value == {
        "copied": ["a", "c", "b"],
        "deferred": ["b"],
        "results": {a: f"backup-of-{a}" for a in APPS},
    }
    row = records.get(engine, backup_id)
    assert row is not None and row.state == "succeeded" and row.percent == 100
    assert row.started_at == began, "woken from parking, its work began when it first ran"
    assert rt.manager.snapshot().table.owners() == set()
    assert woken == []  # nobody else was waiting


def test_a_release_before_the_park_is_written_runs_on_in_the_same_process(
    runtime: tuple[Runtime, list[str]], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wake-up of a release that lands between the request and the `waiting` write finds the
    task still running and is dropped: the runner must see that the app is free and go on."""
    rt, _ = runtime
    app_task = add_owner(engine)
    assert isinstance(rt.manager.try_acquire(app_task, {"platform": "S", "app:b": "X"}), Granted)
    backup_id = _backup_task(engine)
    body = _Backup()
    to_waiting = records.to_waiting

    def park_then_release(*args: Any, **kwargs: Any) -> bool:
        parked = to_waiting(*args, **kwargs)
        assert kwargs["checkpoint"] is not None  # a park, not a plain wait
        rt.manager.release(app_task)  # the app's task ends right after the backup wrote `waiting`
        return parked

    monkeypatch.setattr(records, "to_waiting", park_then_release)
    result = execute(rt, backup_id, "fullbackup", BACKUP_PLAN, body)

    assert result.outcome is Outcome.SUCCEEDED
    assert body.copies == ["a", "c", "b"]
    assert records.get(engine, backup_id).state == "succeeded"  # type: ignore[union-attr]
    assert rt.manager.snapshot().table.owners() == set()


def test_stopping_a_parked_backup_frees_what_it_held(runtime: tuple[Runtime, list[str]], engine: Engine) -> None:
    rt, _ = runtime
    app_task = add_owner(engine)
    assert isinstance(rt.manager.try_acquire(app_task, {"platform": "S", "app:b": "X"}), Granted)
    backup_id = _backup_task(engine)
    assert execute(rt, backup_id, "fullbackup", BACKUP_PLAN, _Backup()).outcome is Outcome.WAITING

    # What `tasks.client.stop` does for a task without a process.
    assert records.cancel_if_idle(engine, backup_id) == "waiting"
    rt.manager.release(backup_id)

    table = rt.manager.snapshot().table
    assert backup_id not in table.owners()
    assert lockset_to_dict(tuple(sorted((n, h.mode) for n, h in table.held_by(app_task).items()))) == {
        "app:b": "X",
        "platform": "S",
    }
    assert records.get(engine, backup_id).state == "cancelled"  # type: ignore[union-attr]
