"""Task kinds for `bench/scale.py`, declared with the production decorator.

Workers load them with `celery -A tasks worker -I bench.scalekinds`; every kind takes its queue
from `enqueue(..., queue=...)`, so one bench run uses queues nobody else consumes.

* `scale_app`: an apptask's plan (`platform` S, `app:<id>` X) and a short body: one progress
  write, then `seconds` of sleep (the bench draws 20-200 ms per task).
* `scale_backup`: a full backup's plan (`task:fullbackup` X, `platform` S); it lists the apps
  from the `apps` table and goes through them with `hosting.backups.fullbackup.back_up_apps`, exactly as
  the real full backup does (`app:<id>` X one app at a time, busy apps last), with
  `seconds_per_app` of sleep per app instead of an archive.

The runner records how long the granting compare-and-swap of a task's own plan took
(`tasks.locks.acquire_ms`, `cas_retries`). The nested per-app requests of the backup are not
recorded anywhere, so `scale_backup` times them itself: for the length of its body it wraps this
process's `LockManager.try_acquire` and `release` (one task at a time per pool process, so
nothing else goes through them meanwhile) and returns the samples in its result, with the
time spent in each context step that `back_up_apps` calls (progress, try_acquire_more, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lockman import Granted, LockManager
from tasks.locking import locked_task
from tasks.runner import RunContext

#: An apptask's plan and a full backup's plan (DESIGN.md "Locks").
APP_PLAN = {"platform": "S", "app:{app_id}": "X"}
BACKUP_PLAN = {"task:fullbackup": "X", "platform": "S"}


@locked_task(kind="scale_app", plan=APP_PLAN)
def scale_app(ctx: RunContext, *, app_id: str, seconds: float) -> dict[str, float]:
    start = time.time()
    ctx.progress(50, f"app {app_id}: working {seconds * 1000:.0f} ms")
    time.sleep(seconds)
    return {"start": start, "end": time.time()}


class _Timed:
    """Wraps one LockManager's try_acquire and release on the instance; `restore()` undoes it."""

    def __init__(self, manager: LockManager) -> None:
        self.manager = manager
        #: Granting try_acquire calls: (milliseconds, CAS conflicts during the call).
        self.granted: list[tuple[float, int]] = []
        #: Refused ones (the app was busy): the same.
        self.refused: list[tuple[float, int]] = []
        #: release calls: the same.
        self.released: list[tuple[float, int]] = []
        original_acquire = manager.try_acquire
        original_release = manager.release

        def measured(call: Callable[..., Any], sink: Callable[[Any], list[tuple[float, int]]]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                before = manager.stats.cas_conflicts
                started = time.perf_counter()
                value = call(*args, **kwargs)
                sink(value).append(((time.perf_counter() - started) * 1000, manager.stats.cas_conflicts - before))
                return value

            return wrapper

        manager.try_acquire = measured(  # type: ignore[method-assign]
            original_acquire, lambda d: self.granted if isinstance(d, Granted) else self.refused
        )
        manager.release = measured(original_release, lambda _: self.released)  # type: ignore[method-assign]

    def restore(self) -> None:
        # The instance attributes shadow the class's methods; deleting them brings those back.
        del self.manager.try_acquire
        del self.manager.release


class _Steps:
    """Total time spent in the context's steps that `back_up_apps` calls, per step (instance attributes)."""

    NAMES = ("progress", "try_acquire_more", "acquire_more", "release_some")

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.seconds = dict.fromkeys(self.NAMES, 0.0)
        self.calls = dict.fromkeys(self.NAMES, 0)
        for name in self.NAMES:
            setattr(ctx, name, self._timed(name, getattr(ctx, name)))

    def _timed(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        return wrapper

    def restore(self) -> None:
        for name in self.NAMES:
            delattr(self.ctx, name)

    def report(self) -> dict[str, dict[str, float]]:
        return {n: {"calls": self.calls[n], "total_s": round(self.seconds[n], 4)} for n in self.NAMES}


@locked_task(kind="scale_backup", plan=BACKUP_PLAN)
def scale_backup(ctx: RunContext, *, seconds_per_app: float) -> dict[str, Any]:
    from hosting.backups.fullbackup import apps_to_back_up, back_up_apps

    start = time.time()
    app_ids = apps_to_back_up(ctx)  # every app with backups enabled, read from the apps table

    def copy(inner: Any, app_id: str) -> None:
        time.sleep(seconds_per_app)

    timed = _Timed(ctx.runtime.manager)
    steps = _Steps(ctx)
    try:
        work_started = time.perf_counter()
        report = back_up_apps(ctx, app_ids, copy)
        loop_seconds = time.perf_counter() - work_started
    finally:
        steps.restore()
        timed.restore()
    return {
        "start": start,
        "end": time.time(),
        "apps": len(app_ids),
        "copied": len(report.copied),
        "deferred": len(report.deferred),
        "loop_s": round(loop_seconds, 4),
        "steps": steps.report(),
        "grant_ms": [round(ms, 3) for ms, _ in timed.granted],
        "grant_conflicts": [c for _, c in timed.granted],
        "refused_ms": [round(ms, 3) for ms, _ in timed.refused],
        "refused_conflicts": sum(c for _, c in timed.refused),
        "release_ms": [round(ms, 3) for ms, _ in timed.released],
        "release_conflicts": sum(c for _, c in timed.released),
    }
