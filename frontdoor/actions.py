"""What the front doors do to start work: check the request, record the task, send its message.

HTTP-free, so the REST API and the CLI refuse the same bad input with the same words before any
task exists. The checks here are the ones that can be made without Docker (manifest, location,
ports, env, the lower bounds of resources, the app's state); the task checks again when it runs,
since the box may change in between. Nothing here talks to Docker.
"""

from __future__ import annotations

import importlib
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import OperationalError

from config import get_settings
from frontdoor.errors import (
    BadRequestError,
    BrokerDownError,
    DuplicateError,
    MissingError,
    StateError,
)
from frontdoor.schemas import StartedOut
from models import FINAL_STATES, App, Archive, Backup, Task

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
#: Platform task kinds (`tasks.kinds`).
PLATFORM_KINDS = ("fullbackup", "update", "platformstart")
_ACTIVE = ("queued", "waiting", "running")
_RELEASE_URL = re.compile(r"(?:https?|file)://[!-~]{1,2040}")
#: Task arguments nest no deeper than this (MariaDB refuses JSON past 32 levels).
MAX_ARGS_DEPTH = 24
#: Attempts at recording a task whose transaction lost a race in the database (deadlock, busy).
_BUSY_ATTEMPTS = 3


def started(task_id: str, app_id: str | None) -> StartedOut:
    """A task that was recorded and sent, and where the API shows it."""
    return StartedOut(task_id=task_id, app_id=app_id, url=f"/api/v1/tasks/{task_id}")


# ---------------------------------------------------------------------------- what this server can run


def app_operations() -> list[str]:
    """The app operations hosting provides, the front doors' order first."""
    from hosting import operations

    return [op for op in operations.known() if op in APP_OPERATIONS] + [
        op for op in operations.known() if op not in APP_OPERATIONS
    ]


def platform_kinds() -> list[str]:
    return list(PLATFORM_KINDS)


#: What the actions import on first use (so that `boxtasks --help` and the reading commands stay light).
DEFERRED_IMPORTS = (
    "hosting",
    "hosting.apps",
    "hosting.errors",
    "hosting.operations",
    "hosting.apps.capabilities",
    "hosting.apps.claims",
    "hosting.apps.options",
    "hosting.apps.ports",
    "hosting.apps.state",
    "hosting.apps.manifest",
    "hosting.apps.resources",
    "hosting.backups.appconfig",
    "hosting.backups.archives",
    "tasks",
    "tasks.client",
    "tasks.errors",
)


def import_deferred() -> None:
    """Import now what the actions would import on first use. A server calls it before it takes
    requests: threads importing modules of one import cycle at the same moment can meet a half-made
    module (an ImportError, seen as 500s when 50 installs came at once)."""
    for name in DEFERRED_IMPORTS:
        importlib.import_module(name)


def capabilities() -> dict[str, Any]:
    """What `GET /platform/capabilities` and `boxtasks platform capabilities` answer."""
    from hosting.apps import capabilities as caps

    return {
        "app_operations": app_operations(),
        "platform_tasks": platform_kinds(),
        "addons": caps.provided_addons(get_settings()),
        "manifest_versions": list(caps.MANIFEST_VERSIONS),
    }


# ---------------------------------------------------------------------------- app operations


def install(
    engine: Engine, options: Mapping[str, Any], *, app_id: str | None = None, retry_of: str | None = None
) -> StartedOut:
    """Check an install request (the seed's names: manifest, image, location, ports, cpuShares, ...) and start it.

    The app's row (its location) and its host ports are claimed in the transaction that records
    the task (`hosting.apps.claims`): of two requests for one location or port, one gets its task and
    the other a 409 naming the holder, with nothing of it left behind. The task gets the manifest as
    stored (with its `dockerImage`) and every declared port resolved (defaults filled in).
    """
    from hosting.apps import ports
    from hosting.apps.capabilities import check_addons
    from hosting.apps.manifest import parse_manifest, with_image
    from hosting.apps.options import InstallOptions, check_app_id, check_env, check_location, parse

    app_id = app_id or str(uuid.uuid4())
    with _input_errors():
        check_app_id(app_id)
        opts = parse(InstallOptions, "install", options)
        stored = with_image(opts.manifest, opts.image)
        manifest = parse_manifest(stored)
        check_addons(manifest, get_settings())
        check_location(opts.location)
        wanted = ports.new_app_ports(manifest, opts.ports)
        bindings = ports.check_ports(manifest, wanted)
        check_env(opts.env, manifest)
        _check_limits(manifest, opts.cpu_shares, opts.cpu_quota, opts.memory_limit)
    _note_unknown_fields(manifest)
    values = {
        "app_store_id": opts.app_store_id or manifest.id,
        "manifest": stored,
        "version": manifest.version,
        "location": opts.location,
    }
    task_options = opts.model_dump(by_alias=True, exclude_unset=True, exclude={"image"})
    task_options.update(manifest=stored, ports=wanted)
    return _enqueue_app(
        engine,
        app_id,
        "install",
        task_options,
        claim=_new_app_claim(app_id, "install", values, bindings),
        retry_of=retry_of,
    )


def configure(engine: Engine, app_id: str, options: Mapping[str, Any], *, retry_of: str | None = None) -> StartedOut:
    """Check a configure request; new host ports are claimed with the task's row, as install does."""
    from hosting.apps import ports
    from hosting.apps.manifest import parse_manifest
    from hosting.apps.options import ConfigureOptions, check_env, parse

    with _input_errors():
        opts = parse(ConfigureOptions, "configure", options)
    bindings: list[Any] | None = None
    with engine.connect() as conn:
        row = _precheck(conn, app_id, "configure")
    if row is not None:
        with _input_errors():
            manifest = parse_manifest(row.manifest)
            if opts.ports is not None:
                bindings = ports.check_ports(manifest, opts.ports)
            if opts.env is not None:
                check_env(opts.env, manifest)
            _check_limits(manifest, opts.cpu_shares, opts.cpu_quota, opts.memory_limit)
    claim = None
    if bindings is not None:
        wanted = bindings

        def claim(conn: Connection, task_id: str) -> None:
            ports.claim_more(conn, app_id, wanted)

    return _enqueue_app(
        engine,
        app_id,
        "configure",
        opts.model_dump(by_alias=True, exclude_unset=True),
        claim=claim,
        retry_of=retry_of,
    )


def app_operation(
    engine: Engine,
    app_id: str,
    operation: str,
    options: Mapping[str, Any] | None = None,
    *,
    precheck: bool = True,
    retry_of: str | None = None,
) -> StartedOut:
    """Any other app operation (start, stop, restart, repair, uninstall, update, backup, restore, clone).

    The options are checked with the model the task checks them with, so a bad option is refused
    here, not by the task. `precheck=False` skips the app's state check (restoring an archive:
    the app is gone by design).
    """
    if operation not in APP_OPERATIONS or operation in {"install", "configure"}:
        raise BadRequestError(f"unknown app operation {operation!r}; use one of {', '.join(APP_OPERATIONS)}")
    if operation == "clone":
        return clone(engine, app_id, options or {}, retry_of=retry_of)
    opts = _parse_options(operation, options or {})
    row = None
    with engine.connect() as conn:
        if precheck:
            row = _precheck(conn, app_id, operation)
        if operation == "restore":
            _check_restore(conn, app_id, opts, app_exists=row is not None or not precheck)
    task_options = dict(options or {})
    if operation == "update":
        task_options = _check_update(app_id, row, opts, task_options)
    return _enqueue_app(engine, app_id, operation, task_options, retry_of=retry_of)


def clone(engine: Engine, source_app_id: str, options: Mapping[str, Any], *, retry_of: str | None = None) -> StartedOut:
    """A new app from a backup of `source_app_id`: the task runs under the NEW app's lock.

    The source app needs no lock (a backup does not change), so cloning never waits for it; the
    backup must exist, be usable and belong to the source app. The new app's location and ports
    are checked against the backup's manifest and claimed with the task's row, as install does.
    """
    from hosting.apps import ports
    from hosting.apps.capabilities import check_addons
    from hosting.apps.manifest import parse_manifest
    from hosting.apps.options import CloneOptions, check_app_id, check_env, check_location, parse
    from hosting.backups.appconfig import AppConfig
    from hosting.errors import CorruptBackupError

    opts = dict(options)
    new_id = str(opts.pop("appId", None) or uuid.uuid4())
    with _input_errors():
        check_app_id(new_id)
        check_app_id(source_app_id)
        parsed = parse(CloneOptions, "clone", opts)
        check_location(parsed.location)
    with engine.connect() as conn:
        if parsed.archive_id:
            found = conn.execute(select(Archive.backup_id).where(Archive.id == parsed.archive_id)).first()
            if found is None:
                raise MissingError(f"no archive {parsed.archive_id!r}: GET /api/v1/archives lists them")
            backup_id = str(found.backup_id)
        else:
            backup_id = str(parsed.backup_id)
        row = _usable_backup(conn, backup_id, of_app=None if parsed.archive_id else source_app_id)
        stored = row.app_config
        if parsed.archive_id:
            archived = conn.execute(select(Archive.app_config).where(Archive.id == parsed.archive_id)).scalar()
            stored = archived or stored  # an archive's own config first, as the clone task reads it
    try:
        config = AppConfig.from_json(stored)
    except CorruptBackupError as err:
        raise StateError(f"backup {backup_id!r}: {err}; clone another backup") from err
    if not config.manifest:
        raise StateError(
            f"backup {backup_id!r} holds no app config (made by an older version): it cannot make a new app"
        )
    with _input_errors():
        manifest = parse_manifest(config.manifest)
        check_addons(manifest, get_settings())
        bindings = ports.check_ports(manifest, parsed.ports)
        check_env(dict(config.env or {}), manifest)
    values = {
        "app_store_id": str(config.app_store_id or manifest.id),
        "manifest": dict(config.manifest),
        "version": manifest.version,
        "location": parsed.location,
    }
    claim = _new_app_claim(new_id, "clone", values, bindings)
    return _enqueue_app(engine, new_id, "clone", opts, claim=claim, retry_of=retry_of)


Claim = Callable[[Connection, str], None]


def _new_app_claim(app_id: str, operation: str, values: dict[str, Any], bindings: list[Any]) -> Claim:
    def claim(conn: Connection, task_id: str) -> None:
        from hosting.apps import claims

        claims.claim_new_app(conn, app_id, operation, values, bindings, task_id=task_id)

    return claim


def _enqueue_app(
    engine: Engine,
    app_id: str,
    operation: str,
    options: dict[str, Any],
    *,
    claim: Claim | None = None,
    retry_of: str | None = None,
) -> StartedOut:
    args = {"app_id": app_id, "operation": operation, "options": options}
    try:
        return started(_enqueue(engine, "apptask", args, app_id=app_id, claim=claim, retry_of=retry_of), app_id)
    except BrokerDownError:
        if claim is not None:
            release_claim(engine, app_id, operation)
        raise


def release_claim(engine: Engine, app_id: str, operation: str) -> None:
    """Give back what the front door claimed for a task that will never begin (see `hosting.apps.claims`)."""
    from hosting.apps import claims

    with engine.begin() as conn:
        claims.give_back(conn, app_id, operation)


def _parse_options(operation: str, options: Mapping[str, Any]) -> Any:
    from hosting.apps import options as o

    models: dict[str, type[Any]] = {
        "update": o.UpdateOptions,
        "restore": o.RestoreOptions,
        "uninstall": o.UninstallOptions,
    }
    with _input_errors():
        return o.parse(models.get(operation, o.NoOptions), operation, options)


def _usable_backup(conn: Connection, backup_id: str, *, of_app: str | None) -> Any:
    """The backup row, if it exists, is an app backup (of `of_app`, when given) and is usable."""
    row = conn.execute(
        select(Backup.id, Backup.app_id, Backup.type, Backup.state, Backup.app_config).where(Backup.id == backup_id)
    ).first()
    if row is None or row.type != "app" or (of_app is not None and row.app_id != of_app):
        whose = f" of app {of_app!r}" if of_app is not None else ""
        raise MissingError(f"no app backup {backup_id!r}{whose}: `boxtasks backup list` shows the backups")
    if row.state != "normal":
        raise StateError(f"backup {backup_id!r} is {row.state}, not usable: choose a backup in state normal")
    return row


def _check_restore(conn: Connection, app_id: str, opts: Any, *, app_exists: bool) -> None:
    if opts.archive_id:
        found = conn.execute(select(Archive.app_id, Archive.backup_id).where(Archive.id == opts.archive_id)).first()
        if found is None or found.app_id != app_id:
            raise MissingError(f"no archive {opts.archive_id!r} of app {app_id!r}: GET /api/v1/archives lists them")
        if conn.execute(select(App.id).where(App.id == app_id)).first() is not None:
            raise StateError(f"app {app_id} exists: restore it from one of its backups (backupId), not an archive")
        _usable_backup(conn, opts.backup_id or found.backup_id, of_app=None)
        return
    if not app_exists:
        return  # a task of the app is active: the app's row is its to change; the task checks again
    _usable_backup(conn, str(opts.backup_id), of_app=app_id)


def _check_update(app_id: str, row: Any, opts: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The new manifest: valid, with an image, asking only for provided addons, of the same app.

    Returns the task's options: the manifest as it will be stored (its `dockerImage` set).
    `row` is None while another task of the app is active: the task compares the ids then.
    """
    from hosting.apps.capabilities import check_addons
    from hosting.apps.manifest import parse_manifest, with_image

    with _input_errors():
        stored = with_image(opts.manifest, opts.image)
        new = parse_manifest(stored)
        check_addons(new, get_settings())
        old = parse_manifest(row.manifest) if row is not None else None
    if old is not None and new.id != old.id:
        raise BadRequestError(f"the new manifest is of {new.id}, but app {app_id} is {old.id}: install it instead")
    _note_unknown_fields(new)
    task_options = {k: v for k, v in options.items() if k != "image"}
    task_options["manifest"] = stored
    return task_options


def _note_unknown_fields(manifest: Any) -> None:
    """Optional addons left out, and keys the format does not document (kept as given): say so, for the packager."""
    from hosting.apps.capabilities import skipped

    left_out = skipped(manifest, get_settings())
    if left_out:
        logger.info(
            "manifest of %s: optional addon(s) %s are not provided here; installed without", manifest.id, left_out
        )
    unknown = manifest.unknown_fields()
    if unknown:
        logger.info("manifest of %s carries field(s) the format does not document, kept: %s", manifest.id, unknown)


@contextmanager
def _input_errors() -> Iterator[None]:
    """hosting's InputError (a bad manifest, port, option, resource) as the front doors' 422."""
    from hosting import InputError

    try:
        yield
    except InputError as err:
        raise BadRequestError(str(err)) from err


def _precheck(conn: Connection, app_id: str, operation: str) -> Any:
    """Refuse what is certainly wrong now: no such app, or a state the operation cannot start from.

    While other tasks of the app are queued or running, the state is theirs to change, so the
    check is left to the task itself (it waits for the app's lock, then decides).
    """
    from hosting.apps.options import check_app_id

    with _input_errors():
        check_app_id(app_id)
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
    from hosting.apps import state as appstate
    from hosting.errors import NotFoundError

    if conn.execute(select(App.id).where(App.id == app_id, appstate.may_start(operation))).first() is not None:
        return
    refusal = appstate.refusal(conn, app_id, operation)
    if isinstance(refusal, NotFoundError):
        raise MissingError(str(refusal))
    raise StateError(str(refusal))


def _check_limits(manifest: Any, cpu_shares: int | None, cpu_quota: int | None, memory_limit: int | None) -> None:
    """The one resource check (`hosting.apps.resources.check_limits`), with the bounds known without the Docker host.

    The Docker host's CPUs and memory are the task's to check: here the upper bounds are the most
    boxtasks accepts at all, and the message says so rather than naming host figures.
    """
    from hosting.apps.resources import check_limits

    check_limits(manifest, None, cpu_shares=cpu_shares, cpu_quota=cpu_quota, memory_limit=memory_limit)


# ---------------------------------------------------------------------------- platform tasks


def platform_task(
    engine: Engine, kind: str, args: Mapping[str, Any] | None = None, *, retry_of: str | None = None
) -> StartedOut:
    """Start a platform task; one of its kind already queued, waiting or running answers 409 with its id."""
    from tasks.errors import DuplicateTaskError

    if kind not in PLATFORM_KINDS:
        raise BadRequestError(f"unknown platform task {kind!r}; use one of {', '.join(PLATFORM_KINDS)}")
    args = dict(args or {})
    _check_platform_args(engine, kind, args)
    try:
        return started(_enqueue(engine, kind, args, app_id=None, retry_of=retry_of), None)
    except DuplicateTaskError as err:
        raise DuplicateError(str(err), task_id=err.task_id) from err


def _check_platform_args(engine: Engine, kind: str, args: dict[str, Any]) -> None:
    """What the platform task would refuse, refused before it exists: unknown keys, bad or unknown app ids."""
    from hosting.apps.options import check_app_id

    known = {"fullbackup": {"app_ids"}, "update": {"release_url"}, "platformstart": set()}[kind]
    unknown = sorted(set(args) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise BadRequestError(f"unknown option(s) {', '.join(unknown)} for {kind} (allowed: {allowed})")
    if kind == "fullbackup" and args.get("app_ids") is not None:
        app_ids = args["app_ids"]
        if not isinstance(app_ids, list) or not app_ids:
            raise BadRequestError("appIds must be a non-empty list of app ids (leave it out to back up every app)")
        with _input_errors():
            for app_id in app_ids:
                check_app_id(app_id)
        with engine.connect() as conn:
            found = set(conn.execute(select(App.id).where(App.id.in_(app_ids))).scalars())
        missing = [a for a in app_ids if a not in found]
        if missing:
            raise MissingError(f"no app(s) {', '.join(map(repr, missing))}: `boxtasks app list` shows the apps")
    if kind == "update" and args.get("release_url") is not None:
        url = args["release_url"]
        if not isinstance(url, str) or not _RELEASE_URL.fullmatch(url):
            raise BadRequestError(f"releaseUrl {url!r} is not a file://, http:// or https:// URL")


# ---------------------------------------------------------------------------- retrying

#: States a task may be retried from.
RETRYABLE = frozenset({"failed", "interrupted", "cancelled"})


def retry(engine: Engine, task_id: str) -> StartedOut:
    """Start a failed, interrupted or cancelled task again with the same arguments, checked again.

    The arguments go through the same front-door function as a new request (a retried install is
    refused if its location was taken meanwhile); the new task's `retry_of` names the old one.
    """
    from models import records

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
    return _start_again(engine, str(row.type), dict(row.args or {}), retry_of=task_id)


def _start_again(engine: Engine, kind: str, args: dict[str, Any], *, retry_of: str) -> StartedOut:
    if kind in PLATFORM_KINDS:
        return platform_task(engine, kind, args, retry_of=retry_of)
    if kind != "apptask":
        raise StateError(f"tasks of type {kind} are not retried: start a new one instead")
    app_id, operation = str(args.get("app_id") or ""), str(args.get("operation") or "")
    options = dict(args.get("options") or {})
    if operation == "install":
        return install(engine, options, app_id=app_id, retry_of=retry_of)
    if operation == "configure":
        return configure(engine, app_id, options, retry_of=retry_of)
    if operation == "clone":
        with engine.connect() as conn:
            source = conn.execute(select(Backup.app_id).where(Backup.id == options.get("backupId"))).scalar()
        if source is None:
            gone = options.get("backupId")
            raise MissingError(f"the backup {gone!r} that task cloned from is gone: start a new clone")
        return clone(engine, source, {**options, "appId": app_id}, retry_of=retry_of)
    # Restoring an archive: the app is gone by design, as when it was first asked for.
    return app_operation(engine, app_id, operation, options, precheck="archiveId" not in options, retry_of=retry_of)


# ---------------------------------------------------------------------------- stopping


def check_stoppable(engine: Engine, task_id: str) -> str:
    """The task's state now, or MissingError; a final state means there is nothing to stop."""
    from models import records

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
        final = client.stop(task_id, engine=engine, wait=wait)
    except TaskNotFoundError as err:
        raise MissingError(str(err)) from err
    if state in {"queued", "waiting"} and final == "cancelled":
        _release_after_cancel(engine, task_id)
    return final


def _release_after_cancel(engine: Engine, task_id: str) -> None:
    """A task stopped before it ran gives back what its front door claimed (a new app's row and ports)."""
    from hosting.apps import claims

    claims.give_back_for_task(engine, task_id)


def _enqueue(
    engine: Engine,
    kind: str,
    args: dict[str, Any],
    *,
    app_id: str | None,
    claim: Claim | None = None,
    retry_of: str | None = None,
) -> str:
    """Record and send the task; what the claim refuses (a taken location or port) is a 409, and no task."""
    from hosting.apps.manifest import json_depth
    from hosting.errors import ConflictError, InputError, NotFoundError
    from tasks import client
    from tasks.errors import BrokerUnavailableError

    if json_depth(args) > MAX_ARGS_DEPTH:
        raise BadRequestError(f"the request nests deeper than {MAX_ARGS_DEPTH - 3} levels: flatten it")
    for attempt in range(1, _BUSY_ATTEMPTS + 1):
        try:
            task_id = client.enqueue(kind, args, app_id=app_id, engine=engine, claim=claim, retry_of=retry_of)
            break
        except BrokerUnavailableError as err:
            raise BrokerDownError(f"{err}; start the broker and ask again") from err
        except NotFoundError as err:
            raise MissingError(str(err)) from err
        except ConflictError as err:
            raise StateError(str(err)) from err
        except InputError as err:
            raise BadRequestError(str(err)) from err
        except OperationalError as err:
            if claim is None or attempt == _BUSY_ATTEMPTS or not _lost_a_race(err):
                raise
            logger.info("recording %s for app %s lost a race in the database; trying again", kind, app_id)
    logger.info("enqueued %s %s (app %s)", kind, task_id, app_id)
    return task_id


#: Deadlock and lock-wait errors: MySQL/MariaDB codes, PostgreSQL SQLSTATEs (SQLite: "database is locked").
_RACE_MYSQL = {1205, 1213}
_RACE_SQLSTATE = {"40001", "40P01", "55P03"}


def _lost_a_race(err: OperationalError) -> bool:
    """Whether the database rolled the transaction back for a race (nothing was committed: ask again)."""
    orig = err.orig
    code = orig.args[0] if orig is not None and orig.args else None
    return code in _RACE_MYSQL or getattr(orig, "sqlstate", None) in _RACE_SQLSTATE or "database is locked" in str(orig)
