"""The installation state machine of apps: the one table of which operation may start from which state.

An operation starts with a conditional UPDATE (`... WHERE id = :id AND installation_state IN (...)`):
one row matched, and the app is ours in its pending state; none, and the operation is refused
with the current state named. It ends `installed`, or `error` with the reason and the failed
operation, which may then be issued again (a retry). `repair` and `uninstall` start from any state.
An operation may also start from its own pending state: that is a task that died half-way, re-issued.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from hosting.errors import NotFoundError, StateConflictError
from models import App, db_utcnow


class InstallState(enum.StrEnum):
    PENDING_INSTALL = "pending_install"
    PENDING_CLONE = "pending_clone"
    PENDING_CONFIGURE = "pending_configure"
    PENDING_UPDATE = "pending_update"
    PENDING_BACKUP = "pending_backup"
    PENDING_RESTORE = "pending_restore"
    PENDING_START = "pending_start"
    PENDING_STOP = "pending_stop"
    PENDING_RESTART = "pending_restart"
    PENDING_REPAIR = "pending_repair"
    PENDING_UNINSTALL = "pending_uninstall"
    INSTALLED = "installed"
    ERROR = "error"


class RunState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


ANY_STATE = frozenset(InstallState)
_INSTALLED = frozenset({InstallState.INSTALLED})


@dataclass(frozen=True, slots=True)
class Rule:
    """`pending`: the state while the operation runs; `start_from`: where it may begin (see module doc)."""

    pending: InstallState
    start_from: frozenset[InstallState]


#: THE state table. Besides `start_from`, every operation may begin from its own pending state
#: (re-issued after a crash) and from `error` when it is the operation that failed (a retry).
OPERATIONS: Mapping[str, Rule] = {
    # A new app has no row yet: install inserts it. An existing row is only a retry.
    "install": Rule(InstallState.PENDING_INSTALL, frozenset()),
    "clone": Rule(InstallState.PENDING_CLONE, frozenset()),
    "configure": Rule(InstallState.PENDING_CONFIGURE, _INSTALLED),
    "update": Rule(InstallState.PENDING_UPDATE, _INSTALLED),
    "backup": Rule(InstallState.PENDING_BACKUP, _INSTALLED),
    # Restoring a backup is a way out of a broken app, so it may start from error.
    "restore": Rule(InstallState.PENDING_RESTORE, frozenset({InstallState.INSTALLED, InstallState.ERROR})),
    "start": Rule(InstallState.PENDING_START, _INSTALLED),
    "stop": Rule(InstallState.PENDING_STOP, _INSTALLED),
    "restart": Rule(InstallState.PENDING_RESTART, _INSTALLED),
    "repair": Rule(InstallState.PENDING_REPAIR, ANY_STATE),
    "uninstall": Rule(InstallState.PENDING_UNINSTALL, ANY_STATE),
}


def rule(operation: str) -> Rule:
    try:
        return OPERATIONS[operation]
    except KeyError:
        raise ValueError(
            f"no state rule for operation {operation!r}; add it to hosting.apps.state.OPERATIONS"
        ) from None


def may_start(operation: str) -> ColumnElement[bool]:
    """The WHERE clause of the conditional UPDATE that starts `operation`."""
    r = rule(operation)
    return or_(
        App.installation_state.in_(sorted(s.value for s in {*r.start_from, r.pending})),
        and_(App.installation_state == InstallState.ERROR.value, App.error_operation == operation),
    )


def begin(conn: Connection, app_id: str, operation: str) -> None:
    """Move the app to the operation's pending state, or refuse (StateConflictError, NotFoundError)."""
    r = rule(operation)
    result = conn.execute(
        update(App)
        .where(App.id == app_id, may_start(operation))
        .values(installation_state=r.pending.value, updated_at=db_utcnow())
    )
    if result.rowcount != 1:
        raise refusal(conn, app_id, operation)


def refusal(conn: Connection, app_id: str, operation: str) -> NotFoundError | StateConflictError:
    """Why `operation` may not start: no such app, or the state it is in."""
    row = conn.execute(select(App.installation_state, App.error_operation, App.error).where(App.id == app_id)).first()
    if row is None:
        return NotFoundError(f"no app {app_id!r}: install it first, or check the id")
    state = row.installation_state
    r = rule(operation)
    allowed = ", ".join(sorted(r.start_from)) or "no state (it makes a new app)"
    if state == InstallState.ERROR:
        reason = (row.error or {}).get("message", "unknown reason")
        detail = f"it is in error after a failed {row.error_operation or 'operation'} ({reason})"
        hint = f"issue {row.error_operation} again, or repair or uninstall it" if row.error_operation else "repair it"
    elif state.startswith("pending_"):
        detail = f"it is {state}, left by an operation that did not finish"
        hint = f"issue {state.removeprefix('pending_')} again, or repair or uninstall it"
    else:
        detail = f"it is {state}"
        hint = f"{operation} starts from: {allowed}"
    return StateConflictError(
        f"cannot {operation} app {app_id}: {detail}; {hint}", app_id=app_id, operation=operation, state=state
    )


def succeed(conn: Connection, app_id: str, operation: str, *, run_state: RunState | None = None) -> None:
    """End the operation: `installed`, error cleared, and the run state it left the app in."""
    values: dict[str, Any] = {
        "installation_state": InstallState.INSTALLED.value,
        "error": None,
        "error_operation": None,
        "updated_at": db_utcnow(),
    }
    if run_state is not None:
        values["run_state"] = run_state.value
    conn.execute(
        update(App).where(App.id == app_id, App.installation_state == rule(operation).pending.value).values(**values)
    )


def fail(conn: Connection, app_id: str, operation: str, *, message: str, task_id: str, kind: str) -> None:
    """End the operation in `error`, keeping why, so it can be issued again."""
    conn.execute(
        update(App)
        .where(App.id == app_id)
        .values(
            installation_state=InstallState.ERROR.value,
            error={"operation": operation, "message": message, "kind": kind, "task_id": task_id},
            error_operation=operation,
            updated_at=db_utcnow(),
        )
    )
