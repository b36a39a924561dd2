"""A scheduler job run in the app's container on the private dockerd: its effect, its output in the task's log,
its exit code; and the runs it skips. hosting on a real lock grant (the appcron plan), real MariaDB."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select, update

from hosting.apps import lifecycle, scheduler
from hosting.context import LocalContext
from models import App
from tasks import logstore
from tasks.errors import TaskStopped
from tasks.logstore import Bounds
from tasks.tasklog import Capture
from tests.appkit import Kit, kit, manifest, new_app_id
from tests.owners import add_owner

pytestmark = [pytest.mark.docker, pytest.mark.mariadb]
__all__ = ["kit"]  # the fixture, imported for this module

JOBS = {
    "stamp": {"schedule": "*/5 * * * *", "command": "echo ran-in-container >> /app/data/cron.log; echo wrote a line"},
    "noisy": {"schedule": "* * * * *", "command": "echo to-stderr >&2; echo first; echo second; printf no-newline"},
    "broken": {"schedule": "* * * * *", "command": "echo about to fail; exit 3"},
    "long": {
        "schedule": "* * * * *",
        "command": "i=0; while [ $i -lt 200 ]; do echo $i >> /app/data/ticks; echo tick $i; i=$((i+1)); sleep 0.1; done"
        " # runs 20 s unless stopped",
    },
}


@pytest.fixture(autouse=True)
def _uninstalled(kit: Kit) -> Iterator[None]:
    """Each test's apps are uninstalled after it: installed apps with jobs would get them run by the ticks of
    later tests that share this database (the end-to-end ones)."""
    yield
    with kit.engine.connect() as conn:
        ids = list(conn.execute(select(App.id).where(App.id.like("cron-%"))).scalars())
    for app_id in ids:
        stored = dict(kit.app(app_id).manifest)
        stored["addons"] = {k: v for k, v in stored["addons"].items() if k != "scheduler"}
        with kit.engine.begin() as conn:
            conn.execute(update(App).where(App.id == app_id).values(manifest=stored))
        kit.run(lifecycle.uninstall, app_id)


def _installed_with_jobs(k: Kit, jobs: dict[str, Any], *, stopped: bool = False) -> str:
    """An installed app (running, or stopped) whose stored manifest declares `jobs`: written to its row,
    since the manifest check of install and stop does not know the addon yet (another change's)."""
    app_id = new_app_id("cron")
    k.run(lifecycle.install, app_id, manifest=manifest(k.dockerd.image), location=app_id)
    if stopped:
        k.run(lifecycle.stop, app_id)
    stored = dict(k.app(app_id).manifest)
    stored["addons"] = {**stored["addons"], "scheduler": jobs}
    with k.engine.begin() as conn:
        conn.execute(update(App).where(App.id == app_id).values(manifest=stored))
    return app_id


@contextmanager
def _appcron(k: Kit, app_id: str) -> Iterator[tuple[LocalContext, str]]:
    """A task row and the appcron plan's locks on the app, with the task's log kept as a worker keeps it."""
    owner = add_owner(k.engine, kind=scheduler.KIND)
    grant = k.manager.acquire(owner, {"platform": "S", f"app:{app_id}": "S"}, timeout=60)
    capture = Capture(k.engine, Bounds(100, 100), line_chars=4000, flush_seconds=0.2)
    root = logging.getLogger()
    root.addHandler(capture)
    capture.begin(owner)
    try:
        yield LocalContext(k.manager, grant), owner
    finally:
        capture.end(owner)
        root.removeHandler(capture)
        capture.close()
        k.manager.release(owner)


def _log(k: Kit, task_id: str) -> list[str]:
    return [line.line for line in logstore.read(k.engine, task_id)]


def test_a_job_runs_in_the_container_and_its_output_is_in_the_task_log(kit: Kit) -> None:
    app_id = _installed_with_jobs(kit, JOBS)

    with _appcron(kit, app_id) as (ctx, task_id):
        result = scheduler.run_job(ctx, app_id, "stamp", box=kit.box)
    assert {k: result[k] for k in ("job", "exit_code", "lines")} == {"job": "stamp", "exit_code": 0, "lines": 1}
    assert result["started_at"] <= result["ended_at"]
    # The line is in the app's data volume, seen from the host.
    assert (kit.box.app_dir(app_id) / "data" / "cron.log").read_text() == "ran-in-container\n"
    assert "appcron: wrote a line" in _log(kit, task_id)
    assert ctx.reports[0] == (0, "Running stamp")

    with _appcron(kit, app_id) as (ctx, task_id):
        result = scheduler.run_job(ctx, app_id, "noisy", box=kit.box)
    assert result["lines"] == 4
    lines = [x for x in _log(kit, task_id) if x.startswith("appcron: ")]
    # stdout and stderr in the order written.
    assert lines == ["appcron: to-stderr", "appcron: first", "appcron: second", "appcron: no-newline"]


def test_a_non_zero_exit_fails_the_run_with_the_code(kit: Kit) -> None:
    app_id = _installed_with_jobs(kit, JOBS)
    with _appcron(kit, app_id) as (ctx, task_id), pytest.raises(scheduler.JobFailedError) as err:
        scheduler.run_job(ctx, app_id, "broken", box=kit.box)
    assert err.value.exit_code == 3
    assert "job 'broken' exited with code 3" in str(err.value)
    assert "appcron: about to fail" in _log(kit, task_id)


def test_runs_of_a_stopped_app_or_a_dropped_job_are_skipped(kit: Kit) -> None:
    app_id = _installed_with_jobs(kit, JOBS)
    with _appcron(kit, app_id) as (ctx, _):
        assert scheduler.run_job(ctx, app_id, "gone", box=kit.box)["skipped"] == (
            "the app's manifest no longer has job 'gone'"
        )
    stopped = _installed_with_jobs(kit, JOBS, stopped=True)
    with _appcron(kit, stopped) as (ctx, _):
        result = scheduler.run_job(ctx, stopped, "stamp", box=kit.box)
    assert result == {"job": "stamp", "skipped": "the app is installed, stopped"}
    assert ctx.reports == [(100, "Skipped: the app is installed, stopped")]


class _StoppedAtFirstProgress(LocalContext):
    """Stands for a stop (SIGTERM) arriving while the job runs: its first progress report raises TaskStopped."""

    def progress(self, percent: int, message: str) -> None:
        super().progress(percent, message)
        if message.startswith("Running long: "):
            raise TaskStopped("stopped by signal 15")


def test_a_stopped_run_ends_its_command_in_the_container(kit: Kit) -> None:
    """Once the task gives `app:A` back, nothing of the job may go on in the app's container."""
    app_id = _installed_with_jobs(kit, JOBS)
    ticks = kit.box.app_dir(app_id) / "data" / "ticks"
    with _appcron(kit, app_id) as (ctx, task_id), pytest.raises(TaskStopped):
        stopping = _StoppedAtFirstProgress(kit.manager, ctx._grant)  # the same grant, a stop on its way
        scheduler.run_job(stopping, app_id, "long", box=kit.box)
    seen = len(ticks.read_text().split())
    assert 0 < seen < 200
    time.sleep(1.5)
    assert len(ticks.read_text().split()) == seen, "the job's command went on after its run was stopped"
    log = _log(kit, task_id)
    assert "appcron: tick 0" in log and not any("boxtasks-pid" in line for line in log)
