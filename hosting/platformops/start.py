"""Bringing the platform up: infra containers to their versions, every app that should run, then ready.

The task holds `task:platformstart` X and `platform` X: no app task runs meanwhile (they hold
`platform` S), so apps are started without their own locks, and app tasks queued now start once
the platform is up. An app that cannot start is left in `error` (operation `start`, with the
reason) and the others go on; an infra service that cannot be brought up fails the task, with
the platform left not ready.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import select, update

from hosting.apps import state as appstate
from hosting.apps import steps
from hosting.apps.state import InstallState, RunState
from hosting.box import Box, resolve
from hosting.context import TaskContext
from hosting.errors import HostingError
from hosting.platformops import infra
from hosting.platformops import state as platform_state
from lockman import LockLostError
from models import App

logger = logging.getLogger(__name__)


def start(ctx: TaskContext, *, box: Box | None = None) -> dict[str, Any]:
    box = resolve(box)
    with ctx.fenced() as conn:
        platform_state.set_ready(conn, box.settings, False)
        state = platform_state.current(conn, box.settings)
    services = infra.parse(state.infra)
    ctx.progress(5, f"Bringing {len(services)} infra services to their versions")
    infra_done = infra.bring_up(
        box,
        services,
        task_id=ctx.task_id,
        on_step=lambda i, msg: ctx.progress(5 + 35 * i // max(1, len(services)), msg),
    )

    with ctx.fenced() as conn:
        app_ids = list(
            conn.execute(
                select(App.id)
                .where(App.run_state == RunState.RUNNING.value, App.installation_state == InstallState.INSTALLED.value)
                .order_by(App.id)
            ).scalars()
        )
    apps_done: dict[str, str] = {}
    for i, app_id in enumerate(app_ids):
        ctx.progress(40 + 55 * i // max(1, len(app_ids)), f"Starting app {app_id}")
        apps_done[app_id] = _start_app(ctx, box, app_id)

    with ctx.fenced() as conn:
        platform_state.set_ready(conn, box.settings, True)
    ctx.progress(100, f"Platform {state.version} is up: {len(services)} infra services, {len(app_ids)} apps")
    return {"version": state.version, "infra": infra_done, "apps": apps_done, "ready": True}


def _start_app(ctx: TaskContext, box: Box, app_id: str) -> str:
    """started | running | rebuilt, or `error: ...` (the app is then in `error`, retry with start)."""
    try:
        with ctx.fenced() as conn:
            app = steps.load(conn, app_id)
        info = box.docker.inspect(str(app.container_id)) if app.container_id else None
        if info is not None and info["State"].get("Running"):
            return "running"
        if info is not None:
            box.docker.start(str(app.container_id))
            return "started"
        container_id = steps.build(_quiet(ctx), box, app_id, start=True, percent=0, wait=False)
        with ctx.fenced() as conn:
            conn.execute(update(App).where(App.id == app_id).values(container_id=container_id))
        return "rebuilt"
    except LockLostError:
        raise
    except HostingError as err:
        logger.warning("platformstart: app %s did not start: %s", app_id, err)
        with ctx.fenced() as conn:
            appstate.fail(conn, app_id, "start", message=str(err), task_id=ctx.task_id, kind=err.__class__.__name__)
        return f"error: {err}"


class _Quiet:
    """The task context without progress reports: a rebuild's own percent would jump back and forth."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    def progress(self, percent: int, message: str) -> None:
        logger.info("platformstart: %s", message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def _quiet(ctx: TaskContext) -> TaskContext:
    return cast(TaskContext, _Quiet(ctx))
