"""What the front doors do to start work: check the request, record the task, send its message.

HTTP-free, so the REST API and the CLI refuse the same bad input with the same words before any
task exists. The checks here are the ones that can be made without Docker (manifest, location,
ports, env, the lower bounds of resources, the app's state); the task checks again when it runs,
since the box may change in between. Nothing here talks to Docker.
"""

from __future__ import annotations

import importlib.util
import logging
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select

from api.errors import (
    BadRequestError,
    BrokerDownError,
    DuplicateError,
    MissingError,
    NotAvailableError,
    StateError,
)
from models import FINAL_STATES, App, Backup, PortReservation, Task

logger = logging.getLogger(__name__)

#: Every app operation the front doors offer; `hosting.operations.known()` says which run here today.
APP_OPERATIONS = (
    "install",
    "configure",
    "update",
    "backup",
    "restore",
    "clone",
    "uninstall",
    "start",
    "stop",
    "restart",
    "repair",
)
#: Platform task kinds and the hosting modules each one needs (as `tasks.kinds` and they import them).
PLATFORM_KINDS: Mapping[str, tuple[str, ...]] = {
    "fullbackup": ("hosting.backups", "hosting.boxbackup", "hosting.retention"),
    "update": ("hosting.platform_update",),
    "platformstart": ("hosting.platform_start",),
}
_ACTIVE = ("queued", "waiting", "running")
#: Upper bounds the front door cannot know (they are the Docker host's): checked by the task.
_NO_HOST_LIMIT = (1 << 20, 1 << 62)


@dataclass(frozen=True, slots=True)
class Started:
    """A task that was recorded and sent."""

    task_id: str
    app_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "app_id": self.app_id, "url": f"/api/v1/tasks/{self.task_id}"}


# ---------------------------------------------------------------------------- what this server can run


def app_operations() -> list[str]:
    """The app operations hosting provides in this process (a dynamic list: read it each time)."""
    from hosting import operations

    return [op for op in operations.known() if op in APP_OPERATIONS] + [
        op for op in operations.known() if op not in APP_OPERATIONS
    ]


def platform_kinds() -> list[str]:
    return [kind for kind, modules in PLATFORM_KINDS.items() if all(_importable(m) for m in modules)]


def require_operation(operation: str) -> None:
    known = app_operations()
    if operation not in known:
        raise NotAvailableError(
            f"app operation {operation!r} is not available on this server yet "
            f"(available: {', '.join(known) or 'none'}); nothing was started"
        )


def require_platform(kind: str) -> None:
    if kind not in platform_kinds():
        missing = ", ".join(m for m in PLATFORM_KINDS[kind] if not _importable(m))
        raise NotAvailableError(
            f"platform task {kind!r} is not available on this server yet ({missing} not installed); nothing was started"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


# ---------------------------------------------------------------------------- app operations


def install(engine: Engine, options: Mapping[str, Any], *, app_id: str | None = None) -> Started:
    """Check an install request (the seed's names: manifest, location, ports, cpuShares, ...) and start it."""
    from hosting import InputError, ports
    from hosting.manifest import parse_manifest
    from hosting.options import InstallOptions, check_app_id, check_env, check_location, parse

    require_operation("install")
    app_id = app_id or str(uuid.uuid4())
    try:
        check_app_id(app_id)
        opts = parse(InstallOptions, "install", options)
        manifest = parse_manifest(opts.manifest)
        check_location(opts.location)
        bindings = ports.check_ports(manifest, opts.ports)
        check_env(opts.env, manifest)
        _check_limits(manifest, opts.cpu_shares, opts.cpu_quota, opts.memory_limit)
    except InputError as err:
        raise BadRequestError(str(err)) from err
    with engine.connect() as conn:
        existing = conn.execute(select(App.id).where(App.id == app_id)).first()
        if existing is not None:
            _check_state(conn, app_id, "install")
        taken = conn.execute(select(App.id).where(App.location == opts.location, App.id != app_id)).first()
        if taken is not None:
            raise StateError(f"location {opts.location!r} is taken by app {taken.id}; choose another location")
        _check_ports_free(conn, app_id, [(b.type, p, b.env_var) for b in bindings for p in b.host_ports])
    return _enqueue_app(engine, app_id, "install", opts.model_dump(by_alias=True, exclude_unset=True))


def configure(engine: Engine, app_id: str, options: Mapping[str, Any]) -> Started:
    from hosting import InputError, ports
    from hosting.manifest import parse_manifest
    from hosting.options import ConfigureOptions, check_env, parse

    require_operation("configure")
    try:
        opts = parse(ConfigureOptions, "configure", options)
    except InputError as err:
        raise BadRequestError(str(err)) from err
    with engine.connect() as conn:
        row = _precheck(conn, app_id, "configure")
        if row is not None:
            try:
                manifest = parse_manifest(row.manifest)
                if opts.ports is not None:
                    bindings = ports.check_ports(manifest, opts.ports)
                    _check_ports_free(conn, app_id, [(b.type, p, b.env_var) for b in bindings for p in b.host_ports])
                if opts.env is not None:
                    check_env(opts.env, manifest)
                _check_limits(manifest, opts.cpu_shares, opts.cpu_quota, opts.memory_limit)
            except InputError as err:
                raise BadRequestError(str(err)) from err
    return _enqueue_app(engine, app_id, "configure", opts.model_dump(by_alias=True, exclude_unset=True))


def app_operation(
    engine: Engine,
    app_id: str,
    operation: str,
    options: Mapping[str, Any] | None = None,
    *,
    precheck: bool = True,
) -> Started:
    """Any other app operation (start, stop, restart, repair, uninstall, update, backup, restore, clone).

    `precheck=False` skips the app's state check (restoring an archive: the app is gone by design).
    """
    if operation not in APP_OPERATIONS or operation in {"install", "configure"}:
        raise BadRequestError(f"unknown app operation {operation!r}; use one of {', '.join(APP_OPERATIONS)}")
    require_operation(operation)
    if precheck:
        with engine.connect() as conn:
            _precheck(conn, app_id, operation)
    return _enqueue_app(engine, app_id, operation, dict(options or {}))


def clone(engine: Engine, source_app_id: str, options: Mapping[str, Any]) -> Started:
    """A new app from a backup of `source_app_id`: the task runs under the NEW app's lock.

    The source app needs no lock (a backup does not change), so cloning never waits for it; the
    backup must exist, be usable and belong to the source app.
    """
    from hosting.options import check_app_id

    require_operation("clone")
    opts = dict(options)
    new_id = str(opts.pop("appId", None) or uuid.uuid4())
    try:
        check_app_id(new_id)
        check_app_id(source_app_id)
    except ValueError as err:
        raise BadRequestError(str(err)) from err
    backup_id = opts.get("backupId")
    with engine.connect() as conn:
        row = conn.execute(select(Backup.app_id, Backup.state).where(Backup.id == backup_id)).first()
        if row is None or row.app_id != source_app_id:
            raise MissingError(
                f"no backup {backup_id!r} of app {source_app_id!r}: `boxtasks backup list` shows the backups"
            )
        if row.state != "normal":
            raise StateError(f"backup {backup_id!r} is {row.state}, not usable: choose a backup in state normal")
        if conn.execute(select(App.id).where(App.id == new_id)).first() is not None:
            raise StateError(f"an app with id {new_id!r} exists already: choose another new app id")
    return _enqueue_app(engine, new_id, "clone", opts)


def _enqueue_app(engine: Engine, app_id: str, operation: str, options: dict[str, Any]) -> Started:
    args = {"app_id": app_id, "operation": operation, "options": options}
    return Started(_enqueue(engine, "apptask", args, app_id=app_id), app_id)


def _precheck(conn: Connection, app_id: str, operation: str) -> Any:
    """Refuse what is certainly wrong now: no such app, or a state the operation cannot start from.

    While other tasks of the app are queued or running, the state is theirs to change, so the
    check is left to the task itself (it waits for the app's lock, then decides).
    """
    from hosting.options import check_app_id

    try:
        check_app_id(app_id)
    except ValueError as err:
        raise BadRequestError(str(err)) from err
    row = conn.execute(select(App.__table__).where(App.id == app_id)).first()
    busy = conn.execute(
        select(Task.id).where(Task.app_id == app_id, Task.state.in_(_ACTIVE), Task.type == "apptask").limit(1)
    ).first()
    if busy is not None:
        return row
    if row is None:
        raise MissingError(f"no app {app_id!r}: install it first, or check the id (`boxtasks app list`)")
    _check_state(conn, app_id, operation)
    return row


def _check_state(conn: Connection, app_id: str, operation: str) -> None:
    from hosting import appstate
    from hosting.errors import NotFoundError

    if conn.execute(select(App.id).where(App.id == app_id, appstate.may_start(operation))).first() is not None:
        return
    refusal = appstate.refusal(conn, app_id, operation)
    if isinstance(refusal, NotFoundError):
        raise MissingError(str(refusal))
    raise StateError(str(refusal))


def _check_ports_free(conn: Connection, app_id: str, wanted: list[tuple[str, int, str]]) -> None:
    if not wanted:
        return
    taken = []
    for proto, port, env_var in wanted:
        holder = conn.execute(
            select(PortReservation.app_id).where(
                PortReservation.type == proto, PortReservation.port == port, PortReservation.app_id != app_id
            )
        ).first()
        if holder is not None:
            taken.append(f"{env_var}: {port}/{proto} is held by app {holder.app_id}")
    if taken:
        raise StateError("ports taken: " + "; ".join(taken) + "; choose other host ports")


def _check_limits(manifest: Any, cpu_shares: int | None, cpu_quota: int | None, memory_limit: int | None) -> None:
    """The bounds that do not depend on the Docker host (its CPUs and memory are the task's to check)."""
    from hosting.resources import HostCapacity, check_limits

    check_limits(
        manifest,
        HostCapacity(ncpu=_NO_HOST_LIMIT[0], memory=_NO_HOST_LIMIT[1]),
        cpu_shares=cpu_shares,
        cpu_quota=cpu_quota,
        memory_limit=memory_limit,
    )


# ---------------------------------------------------------------------------- platform tasks


def platform_task(engine: Engine, kind: str, args: Mapping[str, Any] | None = None) -> Started:
    """Start a platform task; one of its kind already queued, waiting or running answers DuplicateError (409)."""
    from tasks.errors import DuplicateTaskError

    if kind not in PLATFORM_KINDS:
        raise BadRequestError(f"unknown platform task {kind!r}; use one of {', '.join(PLATFORM_KINDS)}")
    require_platform(kind)
    try:
        return Started(_enqueue(engine, kind, dict(args or {}), app_id=None), None)
    except DuplicateTaskError as err:
        raise DuplicateError(str(err), task_id=err.task_id) from err


# ---------------------------------------------------------------------------- retrying

#: States a task may be retried from.
RETRYABLE = frozenset({"failed", "interrupted", "cancelled"})
#: The task being retried, while `retry` passes the request through the front door again: `_enqueue`
#: records it on the new row. Set only inside `retry`, so the front-door functions keep their signatures.
_retry_of: ContextVar[str | None] = ContextVar("retry_of", default=None)


def retry(engine: Engine, task_id: str) -> Started:
    """Start a failed, interrupted or cancelled task again with the same arguments, checked again.

    The arguments go through the same front-door function as a new request (a retried install is
    refused if its location was taken meanwhile); the new task's `retry_of` names the old one.
    """
    from tasks import records

    row = records.get(engine, task_id)
    if row is None:
        raise MissingError(f"no task {task_id!r}: `boxtasks task list` shows the tasks")
    if row.state not in RETRYABLE:
        raise StateError(f"task {task_id} is {row.state}: only a failed, interrupted or cancelled task can be retried")
    with engine.connect() as conn:
        again = conn.execute(
            select(Task.id).where(Task.retry_of == task_id, Task.state.in_(_ACTIVE)).limit(1)
        ).scalar_one_or_none()
    if again is not None:
        raise DuplicateError(f"task {task_id} is being retried already: task {again}; follow it", task_id=again)
    token = _retry_of.set(task_id)
    try:
        return _start_again(engine, str(row.type), dict(row.args or {}))
    finally:
        _retry_of.reset(token)


def _start_again(engine: Engine, kind: str, args: dict[str, Any]) -> Started:
    if kind in PLATFORM_KINDS:
        return platform_task(engine, kind, args)
    if kind != "apptask":
        raise StateError(f"tasks of type {kind} are not retried: start a new one instead")
    app_id, operation = str(args.get("app_id") or ""), str(args.get("operation") or "")
    options = dict(args.get("options") or {})
    if operation == "install":
        return install(engine, options, app_id=app_id)
    if operation == "configure":
        return configure(engine, app_id, options)
    if operation == "clone":
        with engine.connect() as conn:
            source = conn.execute(select(Backup.app_id).where(Backup.id == options.get("backupId"))).scalar()
        if source is None:
            gone = options.get("backupId")
            raise MissingError(f"the backup {gone!r} that task cloned from is gone: start a new clone")
        return clone(engine, source, {**options, "appId": app_id})
    # Restoring an archive: the app is gone by design, as when it was first asked for.
    return app_operation(engine, app_id, operation, options, precheck="archiveId" not in options)


# ---------------------------------------------------------------------------- stopping


def check_stoppable(engine: Engine, task_id: str) -> str:
    """The task's state now, or MissingError; a final state means there is nothing to stop."""
    from tasks import records

    row = records.get(engine, task_id)
    if row is None:
        raise MissingError(f"no task {task_id!r}: `boxtasks task list` shows the tasks")
    return str(row.state)


def stop(engine: Engine, task_id: str, *, wait: bool = True) -> str:
    """Stop a task (SIGTERM, then SIGKILL after the grace when `wait`); return its state."""
    from tasks import client
    from tasks.errors import TaskNotFoundError

    state = check_stoppable(engine, task_id)
    if state in {s.value for s in FINAL_STATES}:
        return state
    try:
        return client.stop(task_id, engine=engine, wait=wait)
    except TaskNotFoundError as err:
        raise MissingError(str(err)) from err


def _enqueue(engine: Engine, kind: str, args: dict[str, Any], *, app_id: str | None) -> str:
    from tasks import client
    from tasks.errors import BrokerUnavailableError

    try:
        task_id = client.enqueue(kind, args, app_id=app_id, engine=engine, retry_of=_retry_of.get())
    except BrokerUnavailableError as err:
        raise BrokerDownError(f"{err}; start the broker and ask again") from err
    logger.info("enqueued %s %s (app %s)", kind, task_id, app_id)
    return task_id
