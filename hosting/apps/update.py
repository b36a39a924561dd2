"""Updating one app to a new manifest (a new image and version).

1. The new manifest is checked (same app, every bound port still declared) before anything is done.
2. The app is backed up first, unless `force` (a failed backup stops the update: error, app as it was).
3. The new image is fetched and the new container created (under a temporary name) while the old
   one still runs; then the old one is stopped, the new one started, and only then the old one
   removed and the new one renamed. If the new one does not start, the old one is started again
   and the app is left in `error` with the reason (the container still runs the old version).
4. The app's record gets the new manifest and version, and `notify.app_updated` says so.

Both containers never run at once: they share the data directory and the host ports.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sqlalchemy import update

from hosting.apps import addons, databases, ports, steps
from hosting.apps import docker_engine as de
from hosting.apps import state as appstate
from hosting.apps.capabilities import check_addons
from hosting.apps.container import create_kwargs
from hosting.apps.manifest import parse_manifest, with_image
from hosting.apps.options import UpdateOptions, check_app_id, parse
from hosting.apps.state import RunState
from hosting.backups.appbackup import create_app_backup
from hosting.box import Box, resolve
from hosting.context import TaskContext
from hosting.errors import ContainerError, OptionsError
from hosting.events import notify
from hosting.operations import operation
from models import App

logger = logging.getLogger(__name__)

NEXT_SUFFIX = "-next"


@operation("update")
def update_app(ctx: TaskContext, app_id: str, *, box: Box | None = None, **options: Any) -> dict[str, Any]:
    """Move the app to a new manifest; backed up first unless `force`."""
    box = resolve(box)
    check_app_id(app_id)
    opts = parse(UpdateOptions, "update", options)
    stored = with_image(opts.manifest, opts.image)
    new = parse_manifest(stored)
    check_addons(new, box.settings)
    with ctx.fenced() as conn:
        app = steps.load(conn, app_id)
        bound = ports.bindings_of(conn, app_id, parse_manifest(app.manifest))
    old = parse_manifest(app.manifest)
    if new.id != old.id:
        raise OptionsError(f"the new manifest is of {new.id}, but app {app_id} is {old.id}: install it instead")
    dropped = [b.env_var for b in bound if new.port_spec(b.env_var) is None]
    if dropped:
        raise OptionsError(
            f"the new manifest no longer declares {', '.join(dropped)}: configure the app without them first"
        )

    with ctx.fenced() as conn:
        appstate.begin(conn, app_id, "update")
    backup_id = None
    with steps.failures_leave_error(ctx, app_id, "update"):
        if not opts.force:
            backup_id = create_app_backup(ctx, box, app_id, percent=(5, 40)).id
        ctx.progress(45, f"Fetching image {new.image}")
        box.docker.ensure_image(new.image)
        with ctx.fenced() as conn:
            # A database addon the new version asks for is there before it starts (the old one ignores it).
            databases.set_up(conn, app_id=app_id, manifest=new, settings=box.settings)
        steps.provision_databases(ctx, box, app_id, percent=50)
        with ctx.fenced() as conn:
            spec = dataclasses.replace(
                steps.app_spec(conn, box, app_id), manifest=new, bindings=ports.bindings_of(conn, app_id, new)
            )
        ctx.progress(55, "Creating the new container")
        next_name = de.container_name(app_id) + NEXT_SUFFIX
        timeout = box.settings.app_stop_timeout_seconds
        box.docker.remove_container(next_name, stop_timeout=timeout)  # a leftover of a crashed update
        kwargs = {**create_kwargs(spec, network=box.settings.app_network, task_id=ctx.task_id), "name": next_name}
        fresh = str(box.docker.create(kwargs).id)
        running = app.run_state == RunState.RUNNING
        _switch(ctx, box, app_id, app.container_id, fresh, start=running, timeout=timeout)
        ctx.progress(85, "Recording the new version")
        with ctx.fenced() as conn:
            conn.execute(
                update(App).where(App.id == app_id).values(manifest=stored, version=new.version, container_id=fresh)
            )
            addons.set_up(conn, app_id=app_id, location=app.location, manifest=new, settings=box.settings)
            appstate.succeed(conn, app_id, "update")
            outcome = notify.app_updated(conn, app_id=app_id, from_version=old.version, to_version=new.version)
        notify.deliver(box.settings, outcome)
    ctx.progress(100, f"Updated from {old.version} to {new.version}")
    return {**steps.summary(ctx, app_id), "fromVersion": old.version, "toVersion": new.version, "backupId": backup_id}


def _switch(
    ctx: TaskContext, box: Box, app_id: str, old_id: str | None, fresh: str, *, start: bool, timeout: int
) -> None:
    """Stop the old container, start the new one; on failure put the old one back. Then drop the old one."""
    old_info = box.docker.inspect(str(old_id)) if old_id else None
    was_running = old_info is not None and bool(old_info["State"].get("Running"))
    if start:
        ctx.progress(65, "Stopping the old container and starting the new one")
        if was_running:
            box.docker.stop(str(old_id), timeout=timeout)
        try:
            box.docker.start(fresh)
        except ContainerError as err:
            logger.warning("new container %s did not start (%s); starting the old one again", fresh[:12], err)
            box.docker.remove_container(fresh, stop_timeout=timeout)
            if was_running:
                box.docker.start(str(old_id))
            raise ContainerError(f"the new version did not start: {err}; the old version runs again") from err
    ctx.progress(75, "Removing the old container")
    if old_info is not None:
        box.docker.remove_container(str(old_id), stop_timeout=timeout)
    box.docker.rename(fresh, de.container_name(app_id))
