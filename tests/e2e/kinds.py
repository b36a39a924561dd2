"""Task kinds for the end-to-end tests, declared with the production decorator.

Workers load them with `celery -A tasks worker -I tests.e2e.kinds`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select, update

from config import get_settings
from tasks.locking import locked_task
from tasks.runner import RunContext

#: A table of the fault tests (created by them, not by the migrations): counters written only
#: through `ctx.fenced()`, with the ids of the tasks that wrote them.
counters = Table(
    "fault_counters",
    MetaData(),
    Column("name", String(64), primary_key=True),
    Column("value", Integer, nullable=False, default=0),
    Column("writers", Text, nullable=False, default=""),
)


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
    from hosting.backups.fullbackup import back_up_apps

    def copy(inner: Any, app_id: str) -> dict[str, float]:
        return _work(ctx, seconds_per_app, f"backup {app_id}")

    report = back_up_apps(ctx, app_ids, copy, resumable=True)
    return {"copied": report.copied, "deferred": report.deferred, "results": report.results}


@locked_task(kind="t_fail", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_fail(ctx: RunContext, *, app_id: str) -> None:
    raise RuntimeError(f"app {app_id} refused")


@locked_task(kind="t_stubborn", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_stubborn(ctx: RunContext, *, app_id: str, seconds: float = 60.0) -> dict[str, Any]:
    """Stands for a task stuck where SIGTERM cannot reach it: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _work(ctx, seconds, f"stubborn {app_id}")


def trace_file(app_id: str) -> Path:
    """Where `t_traced` logs the spans of its bodies on app `app_id`."""
    return get_settings().resolved_data_dir / "traces" / f"{app_id}.jsonl"


@locked_task(kind="t_traced", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_traced(ctx: RunContext, *, app_id: str, seconds: float = 0.0) -> dict[str, Any]:
    """`t_app` that logs its body's span even when the body fails: two spans that overlap are a double grant."""
    start = time.time()
    try:
        return _work(ctx, seconds, f"traced {app_id}")
    finally:
        path = trace_file(app_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"task": ctx.task_id, "pid": os.getpid(), "start": start, "end": time.time()}) + "\n"
        with open(path, "a") as f:  # one short append per line: lines of several processes do not mix
            f.write(line)


@locked_task(kind="t_fenced_count", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_fenced_count(ctx: RunContext, *, app_id: str, counter: str = "", seconds: float = 0.0) -> dict[str, Any]:
    """Read a counter (by default the one named after the app), work `seconds`, write it back plus one,
    through `ctx.fenced()` both times.

    Two tasks that held the app at once would lose an update; a holder that lost its locks while it
    worked must be refused its write (LockLostError), and nothing of it is committed.
    """
    counter = counter or app_id
    with ctx.fenced() as conn:
        seen = conn.execute(select(counters.c.value).where(counters.c.name == counter)).scalar_one()
    ctx.progress(10, f"read {counter} = {seen}")
    time.sleep(seconds)
    with ctx.fenced() as conn:
        conn.execute(
            update(counters)
            .where(counters.c.name == counter)
            .values(value=seen + 1, writers=counters.c.writers + f"{ctx.task_id} ")
        )
    return {"seen": seen, "wrote": seen + 1}


def steps_file(app_id: str) -> Path:
    """Where `t_steps` logs each step of work it does on app `app_id`."""
    return get_settings().resolved_data_dir / "steps" / f"{app_id}.jsonl"


@locked_task(kind="t_steps", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_steps(ctx: RunContext, *, app_id: str, steps: int = 10, step_seconds: float = 0.1) -> dict[str, Any]:
    """Work on the app in steps, logging each step as it is done: two tasks whose steps interleave on one
    app worked on it at once. A step is logged only after `ctx.check()` (the task still holds its locks)."""
    path = steps_file(app_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(steps):
        ctx.progress(100 * i // steps, f"step {i + 1}/{steps} on {app_id}")
        ctx.check()
        line = json.dumps({"task": ctx.task_id, "pid": os.getpid(), "step": i, "t": time.time()}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write: a process killed meanwhile leaves no half line
        finally:
            os.close(fd)
        time.sleep(step_seconds)
    return {"steps": steps}


@locked_task(kind="t_hang", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_hang(ctx: RunContext, *, app_id: str, seconds: float = 600.0) -> None:
    """Stands for a task stuck where its soft time limit cannot end it: it swallows every Exception."""
    deadline = time.monotonic() + seconds
    step = 0
    while time.monotonic() < deadline:
        step += 1
        try:
            ctx.progress(min(99, step), f"hanging on {app_id}")
            time.sleep(0.1)
        except Exception:  # the point of this kind
            continue
