"""Scheduler jobs end to end: the tick, real workers, the app's container on the private dockerd.

The lock promise: a job sent while an apptask holds the app (a restore-like `t_app`, `app:A` X) waits,
says for whom, and runs only once it ended; two jobs of one app run at the same time (`app:A` S twice).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from hosting.apps.scheduler import run_id, tick_minute
from models import App, get_engine
from tasks import logstore
from tasks.client import enqueue
from tasks.schedules import scheduler_tick
from tests.appkit import manifest
from tests.dockerd import Dockerd
from tests.e2e.harness import Env, Worker, row, wait_for, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq, pytest.mark.docker]


def _job(name: str, seconds: float) -> dict[str, str]:
    order = "/app/data/order"
    return {
        "schedule": "* * * * *",
        "command": f"echo start-{name} >> {order}; sleep {seconds}; echo end-{name} >> {order}; echo {name} done",
    }


def _app_with_jobs(dockerd: Dockerd, env: Env, start_worker: Callable[..., Worker], *, seconds: float = 2) -> str:
    """A worker of 3 processes on the private dockerd, and an app it installed, with jobs `a` and `b`."""
    env.extra.update(BOXTASKS_DOCKER_HOST=dockerd.base_url, BOXTASKS_APP_NETWORK="none")
    start_worker(concurrency=3)
    app_id = f"cron{uuid.uuid4().hex[:8]}"
    options = {"manifest": manifest(dockerd.image), "location": app_id}
    install = enqueue("apptask", {"app_id": app_id, "operation": "install", "options": options}, app_id=app_id)
    installed = wait_state(install, "succeeded", "failed", timeout=120)
    assert installed.state == "succeeded", installed.error
    # The jobs go into the stored manifest (install's manifest check does not know the addon yet).
    stored = dict(row_manifest(app_id))
    stored["addons"] = {**stored["addons"], "scheduler": {"a": _job("a", seconds), "b": _job("b", seconds)}}
    with get_engine().begin() as conn:
        conn.execute(update(App).where(App.id == app_id).values(manifest=stored))
    return app_id


def test_jobs_wait_for_an_apptask_then_run_side_by_side_in_the_container(
    dockerd: Dockerd, e2e_env: Env, start_worker: Callable[..., Worker]
) -> None:
    app_id = _app_with_jobs(dockerd, e2e_env, start_worker)

    restore = enqueue("t_app", {"app_id": app_id, "seconds": 8.0}, app_id=app_id, queue="apptask")
    wait_state(restore, "running")
    sent_at = dt.datetime.now(dt.UTC)
    report = scheduler_tick(sent_at=sent_at.isoformat())
    assert sorted(x for x in report["sent"] if x.startswith(f"{app_id}/")) == [f"{app_id}/a", f"{app_id}/b"]
    jobs = [run_id(app_id, name, tick_minute(sent_at)) for name in ("a", "b")]

    for job in jobs:
        waiting = wait_state(job, "waiting", timeout=30)
        assert waiting.message == f"Waiting for t_app (task {restore[:8]}…) to release app:{app_id}"
    assert row(restore).state == "running"

    ended = wait_state(restore, "succeeded", timeout=60)
    runs = [wait_state(job, "succeeded", "failed", timeout=60) for job in jobs]
    for run in runs:
        assert run.state == "succeeded", run.error
        # The command began after the apptask's body ended (both stamped by their bodies, on this host's clock).
        began = dt.datetime.fromisoformat(run.result["started_at"]).timestamp()
        assert began >= ended.result["end"], "a job ran inside the apptask"
        assert run.result["exit_code"] == 0
    # Both started before either ended: they ran at the same time, in the app's container.
    order = (e2e_env.data_dir / "apps" / app_id / "data" / "order").read_text().split()
    assert sorted(order[:2]) == ["start-a", "start-b"] and sorted(order[2:]) == ["end-a", "end-b"], order
    # Their output is in their task logs.
    for job, name in zip(jobs, ("a", "b"), strict=True):
        line = f"appcron: {name} done"
        wait_for(_logged(job, line), timeout=10, what=f"{line!r} in the log of task {job}")


def test_an_apptask_waits_for_a_running_job(
    dockerd: Dockerd, e2e_env: Env, start_worker: Callable[..., Worker]
) -> None:
    # Jobs long enough for the apptask to be taken by a process while they run, on a loaded machine too.
    app_id = _app_with_jobs(dockerd, e2e_env, start_worker, seconds=8)
    sent_at = dt.datetime.now(dt.UTC)
    scheduler_tick(sent_at=sent_at.isoformat())
    job = run_id(app_id, "a", tick_minute(sent_at))
    wait_state(job, "running", timeout=30)

    apptask = enqueue("t_app", {"app_id": app_id, "seconds": 0.1}, app_id=app_id, queue="apptask")
    waiting = wait_state(apptask, "waiting", timeout=30)
    assert waiting.message.startswith("Waiting for appcron (task ") and waiting.message.endswith(f"app:{app_id}")

    ran = wait_state(job, "succeeded", "failed", timeout=60)
    assert ran.state == "succeeded", ran.error
    after = wait_state(apptask, "succeeded", timeout=60)
    assert after.result["start"] >= dt.datetime.fromisoformat(ran.result["ended_at"]).timestamp()


def _logged(task_id: str, line: str) -> Callable[[], bool]:
    """Whether the task's log has `line` (its last lines are written as the task ends, just after its row)."""
    return lambda: line in [x.line for x in logstore.read(get_engine(), task_id)]


def row_manifest(app_id: str) -> dict[str, Any]:
    with get_engine().connect() as conn:
        found = conn.execute(App.__table__.select().where(App.id == app_id)).first()
    assert found is not None
    return dict(found.manifest)
