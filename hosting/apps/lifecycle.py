"""App operations: install, configure, start, stop, restart, repair, uninstall.

Each one, called as `fn(ctx, app_id, **options)` (the registry in `hosting.operations`):

1. checks its options, before anything is written (InputError: nothing changed);
2. starts with one fenced transaction: the conditional state UPDATE and every row the request
   needs (ports, resources, credentials) commit together or not at all (ConflictError: nothing changed);
3. does the Docker work, reporting progress; a failure there leaves the app in `error` with the
   reason, and the same operation may be issued again;
4. ends with one fenced transaction: `installed`, the eventlog entry, the container id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, delete, update

from hosting import datadir
from hosting.apps import addons, claims, databases, health, ports, steps
from hosting.apps import state as appstate
from hosting.apps.capabilities import check_addons
from hosting.apps.manifest import Manifest, parse_manifest, with_image
from hosting.apps.options import (
    ConfigureOptions,
    InstallOptions,
    NoOptions,
    UninstallOptions,
    check_app_id,
    check_env,
    check_location,
    parse,
)
from hosting.apps.resources import Limits, check_limits
from hosting.apps.state import RunState
from hosting.backups import archives
from hosting.box import Box, resolve
from hosting.context import TaskContext
from hosting.events import eventlog
from hosting.operations import operation
from models import App

logger = logging.getLogger(__name__)

Result = steps.Result


# ---------------------------------------------------------------------------- operations


@operation("install")
def install(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    """Install a new app (or retry a failed install of this app id) and start it."""
    box = resolve(box)
    with steps.refusal_gives_back(ctx, app_id, "install"):
        check_app_id(app_id)
        opts = parse(InstallOptions, "install", options)
        stored = with_image(opts.manifest, opts.image)
        manifest = parse_manifest(stored)
        check_addons(manifest, box.settings)
        check_location(opts.location)
        bindings = ports.check_ports(manifest, ports.new_app_ports(manifest, opts.ports))
        env = check_env(opts.env, manifest)
        limits = check_limits(
            manifest,
            box.docker.capacity(),
            cpu_shares=opts.cpu_shares,
            cpu_quota=opts.cpu_quota,
            memory_limit=opts.memory_limit,
        )

        ctx.progress(5, "Reserving ports and recording the app")
        with steps.busy_is_retryable("install"), ctx.fenced() as conn:
            # The front door claimed the row and the ports with the task's row: here they are taken over.
            _claim_for_install(conn, app_id, opts, stored, manifest, limits, env)
            ports.reserve(conn, app_id, bindings)
            addons.set_up(conn, app_id=app_id, location=opts.location, manifest=manifest, settings=box.settings)
            databases.set_up(conn, app_id=app_id, manifest=manifest, settings=box.settings)

    with steps.failures_leave_error(ctx, app_id, "install"):
        steps.provision_databases(ctx, box, app_id, percent=8)
        container_id = steps.build(ctx, box, app_id, start=True, percent=10)
        with ctx.fenced() as conn:
            steps.finish(
                ctx,
                conn,
                app_id,
                "install",
                container_id=container_id,
                run_state=RunState.RUNNING,
                manifestId=manifest.id,
                version=manifest.version,
                ports=ports.as_ports(bindings),
                **limits.as_options(),
            )
    ctx.progress(100, f"Installed {manifest.id} {manifest.version} as {app_id}")
    return steps.summary(ctx, app_id)


@operation("configure")
def configure(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    """Change ports, resources or env; limits alone are applied in place, the rest rebuilds the container."""
    box = resolve(box)
    with steps.refusal_gives_back(ctx, app_id, "configure"):
        check_app_id(app_id)
        opts = parse(ConfigureOptions, "configure", options)
        with ctx.fenced() as conn:
            app = steps.load(conn, app_id)
        manifest = parse_manifest(app.manifest)
        bindings = ports.check_ports(manifest, opts.ports) if opts.ports is not None else None
        env = check_env(opts.env, manifest) if opts.env is not None else None
        current = Limits(app.cpu_shares, app.cpu_quota, app.memory_limit)
        limits = check_limits(
            manifest,
            box.docker.capacity(),
            cpu_shares=opts.cpu_shares,
            cpu_quota=opts.cpu_quota,
            memory_limit=opts.memory_limit,
            current=current,
        )

        ctx.progress(5, "Recording the new configuration")
        with steps.busy_is_retryable("configure"), ctx.fenced() as conn:
            appstate.begin(conn, app_id, "configure")
            values: dict[str, Any] = {
                "cpu_shares": limits.cpu_shares,
                "cpu_quota": limits.cpu_quota,
                "memory_limit": limits.memory_limit,
            }
            if env is not None:
                values["env"] = env
            conn.execute(update(App).where(App.id == app_id).values(**values))
            if bindings is not None:
                ports.reserve(conn, app_id, bindings)

    with steps.failures_leave_error(ctx, app_id, "configure"):
        running = app.run_state == RunState.RUNNING
        container_id = app.container_id
        live = bool(container_id) and box.docker.inspect(str(container_id)) is not None
        if opts.only_limits and live:
            ctx.progress(50, "Applying the new CPU and memory limits")
            box.docker.update_limits(str(container_id), limits.docker_kwargs())
        else:
            container_id = steps.build(ctx, box, app_id, start=running, percent=20)
        with ctx.fenced() as conn:
            steps.finish(
                ctx, conn, app_id, "configure", container_id=container_id, changed=sorted(opts.model_fields_set)
            )
    ctx.progress(100, "Configured")
    return steps.summary(ctx, app_id)


@operation("start")
def start(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    """Start the app's container (rebuilding it first when it is gone)."""
    return _run_container(ctx, app_id, "start", resolve(box), options)


@operation("stop")
def stop(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    """Stop the app's container; it stays stopped across reboots until started."""
    return _run_container(ctx, app_id, "stop", resolve(box), options)


@operation("restart")
def restart(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    return _run_container(ctx, app_id, "restart", resolve(box), options)


@operation("repair")
def repair(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    """Rebuild the container from the app's record, whatever state the app is in."""
    box = resolve(box)
    check_app_id(app_id)
    parse(NoOptions, "repair", options)
    with ctx.fenced() as conn:
        appstate.begin(conn, app_id, "repair")
        app = steps.load(conn, app_id)
    with steps.failures_leave_error(ctx, app_id, "repair"):
        manifest = parse_manifest(app.manifest)
        with ctx.fenced() as conn:
            addons.set_up(conn, app_id=app_id, location=app.location, manifest=manifest, settings=box.settings)
            databases.set_up(conn, app_id=app_id, manifest=manifest, settings=box.settings)
        steps.provision_databases(ctx, box, app_id, percent=5)
        container_id = steps.build(ctx, box, app_id, start=app.run_state == RunState.RUNNING, percent=10)
        with ctx.fenced() as conn:
            steps.finish(ctx, conn, app_id, "repair", container_id=container_id)
    ctx.progress(100, "Repaired")
    return steps.summary(ctx, app_id)


@operation("uninstall")
def uninstall(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> Result:
    """Remove the container, the databases, the data, the addon credentials, the ports and the app's record.

    With `archive=True` the app is backed up first and an archive kept (`hosting.backups.archives`), from
    which it can be restored later; if that backup fails, nothing is removed.
    """
    box = resolve(box)
    check_app_id(app_id)
    opts = parse(UninstallOptions, "uninstall", options)
    with ctx.fenced() as conn:
        appstate.begin(conn, app_id, "uninstall")
    archived: dict[str, Any] = {}
    with steps.failures_leave_error(ctx, app_id, "uninstall"):
        if opts.archive:
            ctx.progress(5, "Backing up the app for its archive")
            archived = archives.archive_app(ctx, box, app_id, icon=opts.icon, app_store_icon=opts.app_store_icon)
        ctx.progress(20, "Removing the container")
        box.docker.remove_app_containers(app_id, stop_timeout=box.settings.app_stop_timeout_seconds)
        ctx.progress(50, "Dropping the app's databases")
        with ctx.fenced() as conn:
            configs = addons.stored(conn, app_id)
        databases.tear_down(box.settings, configs)
        ctx.progress(60, "Deleting the app's data")
        datadir.remove(box.app_dir(app_id))
        ctx.progress(90, "Releasing ports and credentials")
        with ctx.fenced() as conn:
            addons.tear_down(conn, app_id)
            ports.release(conn, app_id)
            conn.execute(delete(App).where(App.id == app_id))
            eventlog.record(conn, eventlog.app_action("uninstall"), source=steps.source(ctx, app_id), data={"ok": True})
    ctx.progress(100, "Uninstalled")
    return {"appId": app_id, "uninstalled": True, **archived}


# ---------------------------------------------------------------------------- steps


def _run_container(ctx: TaskContext, app_id: str, op: str, box: Box, options: Mapping[str, Any]) -> Result:
    check_app_id(app_id)
    parse(NoOptions, op, options)
    with ctx.fenced() as conn:
        appstate.begin(conn, app_id, op)
        app = steps.load(conn, app_id)
    timeout = box.settings.app_stop_timeout_seconds
    with steps.failures_leave_error(ctx, app_id, op):
        container_id = app.container_id
        live = bool(container_id) and box.docker.inspect(str(container_id)) is not None
        if op == "stop":
            ctx.progress(30, "Stopping the container")
            if live:
                box.docker.stop(str(container_id), timeout=timeout)
            else:
                logger.info("app %s has no container: nothing to stop", app_id)
            run_state = RunState.STOPPED
        else:
            if not live:
                ctx.progress(10, "The container is gone: rebuilding it")
                container_id = steps.build(ctx, box, app_id, start=False, percent=20)
            ctx.progress(70, f"{'Restarting' if op == 'restart' else 'Starting'} the container")
            if op == "restart" and live:
                box.docker.restart(str(container_id), timeout=timeout)
            else:
                box.docker.start(str(container_id))
            health.wait_healthy(ctx, box, str(container_id), parse_manifest(app.manifest), percent=80)
            run_state = RunState.RUNNING
        with ctx.fenced() as conn:
            steps.finish(ctx, conn, app_id, op, container_id=container_id, run_state=run_state)
    ctx.progress(100, {"start": "Started", "stop": "Stopped", "restart": "Restarted"}[op])
    return steps.summary(ctx, app_id)


def _claim_for_install(
    conn: Connection,
    app_id: str,
    opts: InstallOptions,
    stored: dict[str, Any],
    manifest: Manifest,
    limits: Limits,
    env: dict[str, str],
) -> None:
    """Insert the app as pending_install, or take over its row when this is a retry of a failed install."""
    values: dict[str, Any] = {
        "app_store_id": opts.app_store_id or manifest.id,
        "manifest": stored,
        "version": manifest.version,
        "location": opts.location,
        "run_state": RunState.RUNNING.value,
        "cpu_shares": limits.cpu_shares,
        "cpu_quota": limits.cpu_quota,
        "memory_limit": limits.memory_limit,
        "env": env,
    }
    claims.take_app_row(conn, app_id, "install", values)


#: Operations by name, for callers that do not go through the registry.
OPERATIONS: Mapping[str, Callable[..., Result]] = {
    "install": install,
    "configure": configure,
    "start": start,
    "stop": stop,
    "restart": restart,
    "repair": repair,
    "uninstall": uninstall,
}
