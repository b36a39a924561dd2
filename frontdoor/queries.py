"""What the front doors read: tasks, apps, backups, archives, eventlog, notifications, locks.

HTTP-free, shared by the REST API and the CLI. Rows become the typed views of `frontdoor.schemas`
(the API's response models; the CLI's --json dumps them): tasks in snake_case, apps with the seed's
names (`portBindings`, `cpuShares`, ...), and every time as ISO 8601 UTC with a `Z`.

Every view is a read view, whatever the token's scope: secrets (an app's env values, addon and
mail passwords, any key named like a password or key) come out masked, by `models.secrets`, and
free text that quotes a secret the box holds has it scrubbed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, desc, func, select, update

from frontdoor.errors import MissingError
from frontdoor.schemas import (
    AppOut,
    ArchiveOut,
    BackupOut,
    EventOut,
    HolderOut,
    LocksOut,
    LockTaskOut,
    LogEntryOut,
    NotificationOut,
    TaskOut,
    WaiterOut,
)
from models import App, Archive, Backup, Event, Notification, PortBinding, Task, TaskState
from models.secrets import known_secrets, redact, scrub, secret_values

#: The most rows one listing returns.
MAX_LIMIT = 1000


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z` (`UTCDateTime` reads naive UTC)."""
    return None if value is None else value.isoformat(timespec="microseconds") + "Z"


# ---------------------------------------------------------------------------- tasks

_TASK_COLUMNS = (
    "id",
    "type",
    "app_id",
    "state",
    "percent",
    "message",
    "error",
    "result",
    "args",
    "queue",
    "worker",
    "pid",
    "locks",
    "retry_of",
)
_TASK_TIMES = ("created_at", "started_at", "finished_at", "heartbeat_at", "stop_requested_at")


def task_view(row: Any, known: set[str] | frozenset[str] = frozenset()) -> TaskOut:
    """The task's row as a view: secrets of its args masked, and scrubbed from its result, error and message."""
    m = row._mapping
    out = {k: m[k] for k in _TASK_COLUMNS}
    out.update({k: iso(m[k]) for k in _TASK_TIMES})
    found = secret_values(out["args"]) | known
    for key in ("args", "result", "error", "message"):
        out[key] = redact(out[key], known=found)
    out["waited_seconds"] = waited_seconds(m["created_at"], m["started_at"], m["finished_at"])
    out["error_summary"] = error_summary(out["error"])
    return TaskOut.model_validate(out)


def waited_seconds(
    created: dt.datetime | None, started: dt.datetime | None, finished: dt.datetime | None
) -> float | None:
    """How long the task waited before its work began (or before it ended, if it never began).

    Computed from the row's times, so no column keeps it: `started_at` is the claim that got the
    locks (`models.records`), so this is time queued for a worker plus time waiting for locks.
    """
    end = started or finished
    if created is None or end is None:
        return None
    return round(max(0.0, (end - created).total_seconds()), 3)


def error_summary(error: str | None) -> str | None:
    """The error's one line: a traceback's last non-empty line (`ValueError: ...`), else its first."""
    if not error:
        return None
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    return last[:512]


def list_tasks(
    engine: Engine,
    *,
    state: Sequence[str] = (),
    type: str | None = None,
    app_id: str | None = None,
    limit: int = 100,
) -> list[TaskOut]:
    """Newest first."""
    stmt = select(Task.__table__).order_by(desc(Task.created_at), desc(Task.id)).limit(min(limit, MAX_LIMIT))
    if state:
        stmt = stmt.where(Task.state.in_([TaskState(s).value for s in state]))
    if type:
        stmt = stmt.where(Task.type == type)
    if app_id:
        stmt = stmt.where(Task.app_id == app_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        known = known_secrets(conn) if rows else set()
    return [task_view(r, known) for r in rows]


def get_task(engine: Engine, task_id: str) -> TaskOut:
    with engine.connect() as conn:
        row = conn.execute(select(Task.__table__).where(Task.id == task_id)).first()
        if row is None:
            raise MissingError(f"no task {task_id!r}: `boxtasks task list` shows the tasks")
        known = known_secrets(conn)
    return task_view(row, known)


def task_log(engine: Engine, task_id: str, *, limit: int = 200) -> list[LogEntryOut]:
    """What is known of the task's history: its row's milestones, then the eventlog entries it wrote.

    Progress messages are not kept one by one (the row holds the latest); the eventlog holds
    what the task's operations recorded (`source.taskId`).
    """
    task = get_task(engine, task_id)
    entries = [LogEntryOut(at=task.created_at, source="task", message="Queued")]
    if task.started_at:
        entries.append(LogEntryOut(at=task.started_at, source="task", message="Started"))
    with engine.connect() as conn:
        created, args = conn.execute(select(Task.created_at, Task.args).where(Task.id == task_id)).one()
        events = conn.execute(
            select(Event.id, Event.action, Event.source, Event.data, Event.created_at)
            .where(Event.created_at >= created)
            .order_by(Event.id)
            .limit(5000)
        ).all()
        known = known_secrets(conn) | secret_values(args)
    for ev in events:
        source = ev.source or {}
        if task_id in (source.get("taskId"), source.get("task_id")):
            data = redact(ev.data or {}, known=known)
            entries.append(LogEntryOut(at=iso(ev.created_at), source=f"eventlog:{ev.id}", message=_describe(ev, data)))
    last = task.message
    if task.state in {s.value for s in (TaskState.QUEUED, TaskState.WAITING, TaskState.RUNNING)}:
        entries.append(LogEntryOut(at=None, source="task", message=f"{task.state}: {task.percent}% {last}"))
    else:
        entries.append(LogEntryOut(at=task.finished_at, source="task", message=f"{task.state}: {last}"))
    if task.error:
        entries.append(LogEntryOut(at=task.finished_at, source="task", message=f"error: {task.error}"))
    return entries[-limit:]


def _describe(ev: Any, data: dict[str, Any]) -> str:
    words = ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if v is not None and k != "ok")
    ok = data.get("ok")
    outcome = "" if ok is None else (" ok" if ok else " failed")
    return f"{ev.action}{outcome}" + (f" ({words})" if words else "")


# ---------------------------------------------------------------------------- apps


def _app_view(row: Any, bindings: Sequence[Any], known: set[str]) -> AppOut:
    """The app as a view; its env is not shown, and its error and manifest have secrets masked."""
    view = {
        "id": row.id,
        "appStoreId": row.app_store_id,
        "manifest": row.manifest,
        "version": row.version,
        "location": row.location,
        "installationState": row.installation_state,
        "runState": row.run_state,
        "error": row.error,
        "containerId": row.container_id,
        "cpuShares": row.cpu_shares,
        "cpuQuota": row.cpu_quota,
        "memoryLimit": row.memory_limit,
        "portBindings": {b.env_var: {"hostPort": b.host_port, "count": b.count, "type": b.type} for b in bindings},
        "enableBackup": bool(row.enable_backup),
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
    }
    return AppOut.model_validate(redact(view, known=known | secret_values({"env": row.env or {}})))


def list_apps(engine: Engine) -> list[AppOut]:
    with engine.connect() as conn:
        apps = conn.execute(select(App.__table__).order_by(App.location)).all()
        bindings = conn.execute(select(PortBinding.__table__)).all()
        known = known_secrets(conn) if apps else set()
    by_app: dict[str, list[Any]] = {}
    for b in bindings:
        by_app.setdefault(b.app_id, []).append(b)
    return [_app_view(a, by_app.get(a.id, []), known) for a in apps]


def get_app(engine: Engine, app_id: str) -> AppOut:
    with engine.connect() as conn:
        row = conn.execute(select(App.__table__).where(App.id == app_id)).first()
        if row is None:
            raise MissingError(f"no app {app_id!r}: `boxtasks app list` shows the apps")
        bindings = conn.execute(select(PortBinding.__table__).where(PortBinding.app_id == app_id)).all()
        known = known_secrets(conn)
    return _app_view(row, bindings, known)


# ---------------------------------------------------------------------------- backups and archives


def _backup_view(row: Any, known: set[str]) -> BackupOut:
    """The backup as a view: its `app_config` keeps the env names, not their values."""
    view = {
        "id": row.id,
        "type": row.type,
        "app_id": row.app_id,
        "version": row.version,
        "state": row.state,
        "format": row.format,
        "size": row.size,
        "checksum": row.checksum,
        "depends_on": list(row.depends_on or []),
        "app_config": _app_config(row.app_config),
        "error": row.error,
        "created_at": iso(row.created_at),
    }
    return BackupOut.model_validate(redact(view, known=known | secret_values(row.app_config or {})))


def list_backups(
    engine: Engine, *, app_id: str | None = None, type: str | None = None, limit: int = 100
) -> list[BackupOut]:
    stmt = select(Backup.__table__).order_by(desc(Backup.created_at), desc(Backup.id)).limit(min(limit, MAX_LIMIT))
    if app_id:
        stmt = stmt.where(Backup.app_id == app_id)
    if type:
        stmt = stmt.where(Backup.type == type)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        known = known_secrets(conn) if rows else set()
    return [_backup_view(r, known) for r in rows]


def get_backup(engine: Engine, backup_id: str) -> BackupOut:
    with engine.connect() as conn:
        row = conn.execute(select(Backup.__table__).where(Backup.id == backup_id)).first()
        if row is None:
            raise MissingError(f"no backup {backup_id!r}: `boxtasks backup list` shows the backups")
        known = known_secrets(conn)
    return _backup_view(row, known)


def _app_config(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored app config as `AppConfig` reads it (the keys it had); one that does not fit, as stored."""
    from hosting.backups.appconfig import AppConfig
    from hosting.errors import CorruptBackupError

    if stored is None:
        return None
    try:
        return AppConfig.from_json(stored).to_json()
    except CorruptBackupError:
        return stored


def _archive_view(row: Any, known: set[str]) -> ArchiveOut:
    view = {
        "id": row.id,
        "backup_id": row.backup_id,
        "app_id": row.app_id,
        "app_config": _app_config(row.app_config) or {},
        "has_icon": row.icon is not None,
        "created_at": iso(row.created_at),
    }
    return ArchiveOut.model_validate(redact(view, known=known | secret_values(row.app_config or {})))


def list_archives(engine: Engine, *, limit: int = 100) -> list[ArchiveOut]:
    stmt = select(Archive.__table__).order_by(desc(Archive.created_at), desc(Archive.id)).limit(min(limit, MAX_LIMIT))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        known = known_secrets(conn) if rows else set()
    return [_archive_view(r, known) for r in rows]


def get_archive(engine: Engine, archive_id: str) -> ArchiveOut:
    with engine.connect() as conn:
        row = conn.execute(select(Archive.__table__).where(Archive.id == archive_id)).first()
        if row is None:
            raise MissingError(f"no archive {archive_id!r}: GET /api/v1/archives lists them")
        known = known_secrets(conn)
    return _archive_view(row, known)


def delete_archive(engine: Engine, archive_id: str) -> None:
    """Forget the archive, and its backup unless another archive or a box backup still needs it."""
    from config import get_settings
    from hosting.backups.archives import delete_archive as forget
    from hosting.errors import BackupNotFoundError

    try:
        forget(engine, get_settings(), archive_id)
    except BackupNotFoundError as err:
        raise MissingError(f"no archive {archive_id!r}: GET /api/v1/archives lists them") from err


# ---------------------------------------------------------------------------- eventlog and notifications


def eventlog(
    engine: Engine, *, action: str | None = None, before: int | None = None, limit: int = 100
) -> list[EventOut]:
    """Newest first; page with `before` (an event id)."""
    stmt = select(Event.__table__).order_by(desc(Event.id)).limit(min(limit, MAX_LIMIT))
    if action:
        stmt = stmt.where(Event.action == action)
    if before is not None:
        stmt = stmt.where(Event.id < before)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        known = known_secrets(conn) if rows else set()
    return [
        EventOut.model_validate(
            redact(
                {"id": r.id, "action": r.action, "source": r.source, "data": r.data, "created_at": iso(r.created_at)},
                known=known,
            )
        )
        for r in rows
    ]


def _notification_view(row: Any, known: set[str]) -> NotificationOut:
    view = {
        "id": row.id,
        "event_id": row.event_id,
        "alert_kind": row.alert_kind,
        "title": row.title,
        "message": row.message,
        "acknowledged": bool(row.acknowledged),
        "created_at": iso(row.created_at),
    }
    return NotificationOut.model_validate(redact(view, known=known))


def notifications(engine: Engine, *, acknowledged: bool | None = None, limit: int = 100) -> list[NotificationOut]:
    stmt = select(Notification.__table__).order_by(desc(Notification.id)).limit(min(limit, MAX_LIMIT))
    if acknowledged is not None:
        stmt = stmt.where(Notification.acknowledged == acknowledged)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        known = known_secrets(conn) if rows else set()
    return [_notification_view(r, known) for r in rows]


def acknowledge(engine: Engine, notification_id: int) -> NotificationOut:
    with engine.begin() as conn:
        conn.execute(update(Notification).where(Notification.id == notification_id).values(acknowledged=True))
        row = conn.execute(select(Notification.__table__).where(Notification.id == notification_id)).first()
        known = known_secrets(conn)
    if row is None:
        raise MissingError(f"no notification {notification_id}: GET /api/v1/notifications lists them")
    return _notification_view(row, known)


# ---------------------------------------------------------------------------- counts (metrics)


def tasks_by_state(engine: Engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Task.type, Task.state, func.count()).group_by(Task.type, Task.state)).all()
    return [(r[0], r[1], int(r[2])) for r in rows]


def lock_acquire_figures(engine: Engine, *, limit: int = 1000) -> list[tuple[float, int]]:
    """(acquire ms, compare-and-swap retries) of the latest finished tasks, as their workers recorded them."""
    stmt = select(Task.locks).where(Task.finished_at.is_not(None)).order_by(desc(Task.finished_at)).limit(limit)
    figures = []
    with engine.connect() as conn:
        for (locks,) in conn.execute(stmt):
            if isinstance(locks, dict) and isinstance(locks.get("acquire_ms"), int | float):
                figures.append((float(locks["acquire_ms"]), int(locks.get("cas_retries") or 0)))
    return figures


def oldest_waiting(engine: Engine) -> tuple[int, float]:
    """How many tasks wait for locks, and how long the longest has existed (seconds, database clock)."""
    from models import db_utcnow

    with engine.connect() as conn:
        now = conn.execute(select(db_utcnow())).scalar_one()
        row = conn.execute(
            select(func.count(), func.min(Task.created_at)).where(Task.state == TaskState.WAITING.value)
        ).one()
    if not row[0] or row[1] is None:
        return 0, 0.0
    oldest = dt.datetime.fromisoformat(row[1]) if isinstance(row[1], str) else row[1]
    current = dt.datetime.fromisoformat(now) if isinstance(now, str) else now
    return int(row[0]), max(0.0, (current - oldest).total_seconds())


# ---------------------------------------------------------------------------- locks


def locks_report(table: Any, version: int, engine: Engine | None = None) -> LocksOut:
    """Holders and waiters of a lock snapshot, each waiter with the words of why it waits.

    With an engine, each entry also carries its task's type, state and message from the `tasks` table.
    """
    owners = sorted({h.owner for h in table.holders} | {w.owner for w in table.waiters})
    info: dict[str, LockTaskOut] = {}
    if engine is not None and owners:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Task.id, Task.type, Task.state, Task.message, Task.app_id, Task.args).where(Task.id.in_(owners))
            ).all()
            known = known_secrets(conn)
        for r in rows:
            message = scrub(r.message, known | secret_values(r.args or {}))
            info[r.id] = LockTaskOut(type=r.type, state=r.state, message=message, app_id=r.app_id)
    return LocksOut(
        version=version,
        holders=[
            HolderOut(
                owner=h.owner,
                label=h.label,
                name=h.name,
                mode=h.mode.value,
                token=h.token,
                task=info.get(h.owner),
            )
            for h in table.holders
        ],
        waiters=[
            WaiterOut(
                owner=w.owner,
                label=w.label,
                seq=w.seq,
                locks={n: m.value for n, m in w.locks},
                nested=w.nested,
                blocked_by=[b.describe() for b in table.blockers_of(w.owner)],
                blocking_locks=sorted({b.name for b in table.blockers_of(w.owner)}),
                task=info.get(w.owner),
            )
            for w in table.waiters
        ],
    )
