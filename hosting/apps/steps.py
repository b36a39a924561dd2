"""The steps app operations share: build the container, load the app, record the end or the failure.

Public because the app operations (`lifecycle`), `update`, and restore/clone (`hosting.backups.restore`)
all go through them; each operation module keeps only what is its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import OperationalError

from hosting import datadir
from hosting.apps import addons, claims, databases, health, ports
from hosting.apps import state as appstate
from hosting.apps.container import AppSpec, create_kwargs
from hosting.apps.manifest import parse_manifest
from hosting.apps.resources import Limits
from hosting.apps.state import RunState
from hosting.box import Box
from hosting.context import TaskContext
from hosting.errors import BusyError, NotFoundError
from hosting.events import eventlog
from lockman import LockLostError
from models import App

logger = logging.getLogger(__name__)

Result = dict[str, Any]


def build(ctx: TaskContext, box: Box, app_id: str, *, start: bool, percent: int, wait: bool = True) -> str:
    """Data dir, image, a fresh container from the app's record; started when asked, and then waited
    for until it answers its health check (`hosting.apps.health`; `wait=False`: not). Returns its id."""
    with ctx.fenced() as conn:
        spec = app_spec(conn, box, app_id)
    ctx.progress(percent, "Preparing the app's data directory")
    datadir.make(spec.data_dir.parent)
    ctx.progress(percent + 10, f"Fetching image {spec.manifest.image}")
    box.docker.ensure_image(spec.manifest.image)
    ctx.progress(percent + 40, "Creating the container")
    box.docker.remove_app_containers(app_id, stop_timeout=box.settings.app_stop_timeout_seconds)
    container = box.docker.create(create_kwargs(spec, network=box.settings.app_network, task_id=ctx.task_id))
    if start:
        ctx.progress(percent + 60, "Starting the container")
        box.docker.start(container.id)
        if wait:
            health.wait_healthy(ctx, box, str(container.id), spec.manifest, percent=min(percent + 65, 95))
    return str(container.id)


def provision_databases(ctx: TaskContext, box: Box, app_id: str, *, percent: int) -> dict[str, dict[str, Any]]:
    """Make the app's databases and users on their servers, as its records say (before its container starts).

    Returns the app's addon records, for a caller that goes on to copy data in.
    """
    with ctx.fenced() as conn:
        configs = addons.stored(conn, app_id)
    if any(a in configs for a in databases.DATABASE_ADDONS):
        ctx.progress(percent, "Provisioning the app's databases")
        databases.provision(box.settings, configs)
    return configs


def app_spec(conn: Connection, box: Box, app_id: str) -> AppSpec:
    app = load(conn, app_id)
    manifest = parse_manifest(app.manifest)
    addon_configs = addons.stored(conn, app_id)
    return AppSpec(
        app_id=app_id,
        location=app.location,
        manifest=manifest,
        bindings=ports.bindings_of(conn, app_id, manifest),
        limits=Limits(app.cpu_shares, app.cpu_quota, app.memory_limit),
        env=dict(app.env or {}),
        addon_env={**addons.env_for(addon_configs), **databases.env_for(addon_configs)},
        data_dir=box.app_dir(app_id) / "data",
    )


def finish(
    ctx: TaskContext,
    conn: Connection,
    app_id: str,
    op: str,
    *,
    container_id: str | None,
    run_state: RunState | None = None,
    **data: Any,
) -> None:
    conn.execute(update(App).where(App.id == app_id).values(container_id=container_id))
    appstate.succeed(conn, app_id, op, run_state=run_state)
    eventlog.record(conn, eventlog.app_action(op), source=source(ctx, app_id), data={"ok": True, **data})


#: Deadlock and lock-wait errors: MySQL/MariaDB error codes, PostgreSQL SQLSTATEs, SQLite's busy lock.
#: (1305, "SAVEPOINT does not exist", is how a deadlock inside a savepoint surfaces: InnoDB rolled back.)
_BUSY_MYSQL = {1205, 1213, 1305}
_BUSY_SQLSTATE = {"40001", "40P01", "55P03"}


@contextmanager
def busy_is_retryable(op: str) -> Iterator[None]:
    """A write that lost a race in the database (nothing was committed) becomes a BusyError to retry."""
    try:
        yield
    except OperationalError as err:
        orig = err.orig
        code = orig.args[0] if orig is not None and orig.args else None
        busy = (
            code in _BUSY_MYSQL
            or getattr(orig, "sqlstate", None) in _BUSY_SQLSTATE
            or "database is locked" in str(orig)
        )
        if not busy:
            raise
        raise BusyError(
            f"cannot {op} now: the database was busy with a change at the same moment; issue {op} again"
        ) from err


@contextmanager
def refusal_gives_back(ctx: TaskContext, app_id: str, op: str) -> Iterator[None]:
    """A task that refuses before it begins gives back what its front door claimed (`hosting.apps.claims`).

    Refused input or a conflict found by the task's own checks (the box changed since the front
    door), an unusable backup, an unreachable Docker host: a new app's untouched row and ports,
    or the ports a configure had reserved, are freed. A task that lost its locks writes nothing.
    """
    try:
        yield
    except LockLostError:
        raise
    except Exception:
        try:
            with ctx.fenced() as conn:
                claims.give_back(conn, app_id, op)
        except Exception:
            logger.exception("app %s: could not give back the claim of a refused %s", app_id, op)
        raise


@contextmanager
def failures_leave_error(ctx: TaskContext, app_id: str, op: str) -> Iterator[None]:
    """Any failure after the operation began leaves the app in `error`, with the reason, and re-raises."""
    try:
        yield
    except LockLostError:
        raise  # we hold nothing any more: we may write nothing
    except Exception as err:
        message = str(err) or err.__class__.__name__
        logger.warning("app %s: %s failed: %s", app_id, op, message)
        try:
            with ctx.fenced() as conn:
                appstate.fail(conn, app_id, op, message=message, task_id=ctx.task_id, kind=err.__class__.__name__)
                eventlog.record(
                    conn,
                    eventlog.app_action(op),
                    source=source(ctx, app_id),
                    data={"ok": False, "error": message, "errorKind": err.__class__.__name__},
                )
        except Exception:
            logger.exception("app %s: could not record that %s failed", app_id, op)
        raise


def load(conn: Connection, app_id: str) -> Any:
    row = conn.execute(select(App.__table__).where(App.id == app_id)).first()
    if row is None:
        raise NotFoundError(f"no app {app_id!r}: install it first, or check the id")
    return row


def source(ctx: TaskContext, app_id: str) -> dict[str, Any]:
    return {"taskId": ctx.task_id, "appId": app_id}


def summary(ctx: TaskContext, app_id: str) -> Result:
    with ctx.fenced() as conn:
        app = load(conn, app_id)
        manifest = parse_manifest(app.manifest)
        bound = ports.bindings_of(conn, app_id, manifest)
    return {
        "appId": app_id,
        "installationState": app.installation_state,
        "runState": app.run_state,
        "containerId": app.container_id,
        "ports": ports.as_ports(bound),
        **Limits(app.cpu_shares, app.cpu_quota, app.memory_limit).as_options(),
    }
