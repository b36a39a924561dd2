"""Task kinds for the end-to-end tests, declared with the production decorator.

Workers load them with `celery -A tasks worker -I tests.e2e.kinds`.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from tasks.locking import locked_task
from tasks.runner import RunContext


def _work(ctx: RunContext, seconds: float, label: str) -> dict[str, Any]:
    start = time.time()
    steps = max(1, int(seconds / 0.1))
    for i in range(steps):
        ctx.progress(100 * i // steps, f"{label} step {i + 1}/{steps}")
        time.sleep(seconds / steps)
    return {"start": start, "end": time.time()}


@locked_task(kind="t_app", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_app(ctx: RunContext, *, app_id: str, seconds: float = 0.0) -> dict[str, Any]:
    return _work(ctx, seconds, f"app {app_id}")


@locked_task(kind="t_update", plan={"task:update": "X"}, queue="update")
def t_update(ctx: RunContext, *, prepare: float = 0.0, seconds: float = 0.0) -> dict[str, Any]:
    prepared = _work(ctx, prepare, "prepare")
    ctx.acquire_more({"platform": "X"})
    part = _work(ctx, seconds, "update part")
    return {"prepare": prepared, "start": part["start"], "end": part["end"]}


@locked_task(kind="t_fullbackup", plan={"task:fullbackup": "X", "platform": "S"}, queue="backup")
def t_fullbackup(ctx: RunContext, *, app_ids: list[str], seconds_per_app: float = 0.0) -> dict[str, Any]:
    from hosting.fullbackup import back_up_apps

    def copy(inner: Any, app_id: str) -> dict[str, float]:
        return _work(ctx, seconds_per_app, f"backup {app_id}")

    report = back_up_apps(ctx, app_ids, copy)
    return {"copied": report.copied, "deferred": report.deferred, "results": report.results}


@locked_task(kind="t_fail", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_fail(ctx: RunContext, *, app_id: str) -> None:
    raise RuntimeError(f"app {app_id} refused")


@locked_task(kind="t_stubborn", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_stubborn(ctx: RunContext, *, app_id: str, seconds: float = 60.0) -> dict[str, Any]:
    """Stands for a task stuck where SIGTERM cannot reach it: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _work(ctx, seconds, f"stubborn {app_id}")
