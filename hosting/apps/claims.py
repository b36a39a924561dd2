"""A new app's claim on its location and host ports, made by the front door with the task's row.

The front door writes, in the one transaction that records the task: the app's row in the
operation's pending state (its location is unique in `apps`) and its `port_reservations` (unique
per port). Of two requests for one location or port, the database lets one commit; the other's
transaction fails on the constraint and is rolled back whole, task row included, so a refused
request leaves nothing behind, on every backend. The task then finds its own app in its pending
state and goes on (`hosting.apps.lifecycle.install`, `hosting.backups.restore.clone` accept it).

A claim whose task never began (refused by the task's own checks, cancelled while queued, or
never sent) is dropped by `release_unstarted`: the row goes only while it is still the untouched
claim (pending, no container, no error), so an app that did begin is never removed here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from hosting.apps import ports
from hosting.apps import state as appstate
from hosting.errors import LocationConflictError
from models import App, Task

logger = logging.getLogger(__name__)

#: Operations that make a new app at a location of its own.
NEW_APP_OPERATIONS = ("install", "clone")
_ACTIVE = ("queued", "waiting", "running")


def claim_new_app(
    conn: Connection,
    app_id: str,
    operation: str,
    values: Mapping[str, Any],
    bindings: Sequence[ports.Binding],
    *,
    task_id: str,
) -> None:
    """Insert the app in `operation`'s pending state with its ports, inside the caller's transaction.

    An existing row is taken over only when the operation may start from its state (a retry of a
    failed install, say) and no other task of the app is active. Raises LocationConflictError,
    PortConflictError or StateConflictError naming the holder; the caller rolls back.
    """
    if conn.execute(select(App.id).where(App.id == app_id)).first() is not None:
        busy = conn.execute(
            select(Task.id)
            .where(Task.app_id == app_id, Task.type == "apptask", Task.state.in_(_ACTIVE), Task.id != task_id)
            .limit(1)
        ).first()
        if busy is not None:
            raise LocationConflictError(f"app {app_id} is busy with task {busy.id}: wait for it, or stop it")
    take_app_row(conn, app_id, operation, values)
    ports.reserve(conn, app_id, bindings)


def take_app_row(conn: Connection, app_id: str, operation: str, values: Mapping[str, Any]) -> None:
    """Insert the app in `operation`'s pending state, or take over its row where the operation may start
    from its state: the row the front door claimed for this task, or a failed install being retried.

    The front door (`claim_new_app`) and the tasks (install, clone, restore of an archive) share it.
    Raises LocationConflictError naming the holder, or StateConflictError; the caller rolls back.
    """
    pending = appstate.rule(operation).pending.value
    # A plain read first: an UPDATE of a missing row would take an InnoDB gap lock, and two
    # installs doing that and then inserting into the same gap deadlock.
    exists = conn.execute(select(App.id).where(App.id == app_id)).first() is not None
    try:
        with conn.begin_nested():
            if not exists:
                conn.execute(insert(App).values(id=app_id, installation_state=pending, **values))
            elif (
                conn.execute(
                    update(App)
                    .where(App.id == app_id, appstate.may_start(operation))
                    .values(installation_state=pending, **values)
                ).rowcount
                != 1
            ):
                raise appstate.refusal(conn, app_id, operation)
    except IntegrityError as err:
        location = values["location"]
        holder = conn.execute(
            # A locking read sees the latest commit, not this transaction's snapshot (InnoDB).
            select(App.id).where(App.location == location, App.id != app_id).with_for_update(read=True)
        ).scalar()
        if holder is not None:
            raise LocationConflictError(
                f"location {location!r} is already used by app {holder}; choose another location"
            ) from err
        raise LocationConflictError(
            f"an app with id {app_id!r} was created at the same moment; choose another app id"
        ) from err


def release_unstarted(conn: Connection, app_id: str, operation: str) -> bool:
    """Drop the claim of a new app whose task never began; True when something was dropped."""
    if operation not in NEW_APP_OPERATIONS:
        return False
    pending = appstate.rule(operation).pending.value
    untouched = (
        App.id == app_id,
        App.installation_state == pending,
        App.container_id.is_(None),
        App.error.is_(None),
    )
    if conn.execute(select(App.id).where(*untouched)).first() is None:
        return False
    ports.release(conn, app_id)
    dropped = conn.execute(delete(App).where(*untouched)).rowcount == 1
    if dropped:
        logger.info("app %s: dropped the claim of a %s that never began", app_id, operation)
    return dropped


def give_back(conn: Connection, app_id: str, operation: str) -> None:
    """What the front door claimed for a task of `operation` that will never begin: a new app's
    untouched row and ports, or the host ports a configure reserved and has not bound."""
    if operation == "configure":
        ports.drop_unbound(conn, app_id)
    else:
        release_unstarted(conn, app_id, operation)


def give_back_for_task(engine: Engine, task_id: str) -> None:
    """`give_back` for the app task `task_id`, cancelled before it began (other tasks claim nothing)."""
    with engine.begin() as conn:
        row = conn.execute(select(Task.type, Task.app_id, Task.args).where(Task.id == task_id)).first()
        args = row.args if row is not None and isinstance(row.args, dict) else {}
        if row is not None and row.type == "apptask" and row.app_id and args.get("operation"):
            give_back(conn, str(row.app_id), str(args["operation"]))
