"""Task kinds for `bench/tasks.py`, declared with the production decorator.

Workers load them with `celery -A tasks worker -I bench.kinds`. Every kind takes its queue from
`enqueue(..., queue=...)`, so one bench run uses queues nobody else consumes.

Bodies return wall-clock stamps (`time.time()`, one host) of where they began and ended, so the
bench can measure hand-off and recovery from inside the body, not from the record around it.
"""

from __future__ import annotations

import time
from typing import Any

from tasks.celery import app
from tasks.locking import locked_task
from tasks.runner import RunContext

#: An apptask's plan (DESIGN.md "Locks").
APP_PLAN = {"platform": "S", "app:{app_id}": "X"}
#: The old way: one lock for everything.
GLOBAL_PLAN = {"global": "X"}
#: A full backup's plan; it then takes `app:<id>` X per app while copying it.
BACKUP_PLAN = {"task:fullbackup": "X", "platform": "S"}
#: How often a working body reports progress (a row write and a Celery event, like a real task).
STEP = 0.25


def _work(ctx: RunContext, seconds: float, label: str) -> dict[str, float]:
    start = time.time()
    steps = max(1, round(seconds / STEP))
    for i in range(steps):
        ctx.progress(1 + 98 * i // steps, f"{label} step {i + 1}/{steps}")
        time.sleep(seconds / steps)
    return {"start": start, "end": time.time()}


@app.task(name="bench.bare", ignore_result=True)  # type: ignore[untyped-decorator]
def bench_bare() -> None:
    """The baseline: a Celery task that writes nothing anywhere."""


@locked_task(kind="bench_noop", plan=APP_PLAN)
def bench_noop(ctx: RunContext, *, app_id: str) -> None:
    """A locked apptask whose body does nothing."""


@locked_task(kind="bench_app", plan=APP_PLAN)
def bench_app(ctx: RunContext, *, app_id: str, seconds: float = 0.0) -> dict[str, float]:
    if seconds <= 0:
        now = time.time()
        return {"start": now, "end": now}
    return _work(ctx, seconds, f"app {app_id}")


@locked_task(kind="bench_backup", plan=BACKUP_PLAN)
def bench_backup(ctx: RunContext, *, app_ids: list[str], seconds_per_app: float) -> dict[str, Any]:
    from hosting.fullbackup import back_up_apps

    # The body runs again after each park for a busy app: its first start is kept in the checkpoint.
    start = ctx.checkpoint.setdefault("start", time.time())

    def copy(inner: Any, app_id: str) -> dict[str, float]:
        return _work(ctx, seconds_per_app, f"backup {app_id}")

    report = back_up_apps(ctx, app_ids, copy, resumable=True)
    return {"start": start, "end": time.time(), "copied": report.copied, "deferred": report.deferred}


@locked_task(kind="bench_global_app", plan=GLOBAL_PLAN)
def bench_global_app(ctx: RunContext, *, app_id: str, seconds: float = 0.0) -> dict[str, float]:
    return _work(ctx, seconds, f"app {app_id}")


@locked_task(kind="bench_global_backup", plan=GLOBAL_PLAN)
def bench_global_backup(ctx: RunContext, *, app_ids: list[str], seconds_per_app: float) -> dict[str, Any]:
    start = time.time()
    for app_id in app_ids:
        _work(ctx, seconds_per_app, f"backup {app_id}")
    return {"start": start, "end": time.time(), "copied": list(app_ids), "deferred": []}
