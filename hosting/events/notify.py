"""Who hears of what: the eventlog records everything, a notification marks what matters, email is urgent.

The rules (DESIGN.md, "Data the seed asks for"):

| event | eventlog | notification | email |
| --- | --- | --- | --- |
| app OOM | yes | yes | no |
| app updated | yes | yes | no |
| cert renewal failed | yes | only under 10 days left | same as notification |
| one backup ended | yes | no | no |
| a backup run ended | yes | only when the last 5 runs of its series failed | same as notification |
| platform update available | yes | yes | no |
| platform updated | yes | yes | no |
| app update available | yes | no | no |
| task interrupted (worker killed, host lost) | yes | yes | no |

A backup *run* is one full backup task (all its app backups and the box backup) or one app backup
task; runs form series (`FULL_BACKUP_SERIES`, `app_series(app_id)`), and each run's end is one
`backup.run` event naming its task. So one full backup of 5 failing apps is one failed run (not
news the first night), and an app that fails five nights running fails five full backup runs.

Alerts are notifications with a kind, one row per kind (unique `alert_kind`), cleared when the
condition clears. Each rule writes in the caller's transaction and returns an `Outcome` whose
emails are sent after the commit (`deliver`), so no admin hears of news that was rolled back.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from config import Settings
from hosting.events import mailer
from hosting.events.eventlog import Action, record
from models import App, Event, Notification, PlatformState, Task, TaskState

logger = logging.getLogger(__name__)

#: A failed cert renewal is news only when fewer days than this remain.
CERT_NOTIFY_DAYS = 10
#: A failed backup run is news only when this many of the latest runs of its series failed in a row.
BACKUP_FAILURES_TO_NOTIFY = 5
#: The series of full backup runs; an app's own backup runs are `app_series(app_id)`.
FULL_BACKUP_SERIES = "fullbackup"


def app_series(app_id: str) -> str:
    """The series of an app's own backup runs (the `backup` app operation)."""
    return f"app:{app_id}"


@dataclass(frozen=True, slots=True)
class Outcome:
    event_id: int
    notification_id: int | None = None
    emails: tuple[EmailMessage, ...] = ()

    @property
    def notified(self) -> bool:
        return self.notification_id is not None


class AlertKind(enum.StrEnum):
    BACKUP_CONFIG = "backup_config"
    DISK_SPACE = "disk_space"
    MAIL_STATUS = "mail_status"
    REBOOT = "reboot"
    PLATFORM_UPDATED = "platform_updated"
    OS_UPDATE_REQUIRED = "os_update_required"


#: Alerts that also email the admins when first raised (the others wait on the dashboard).
EMAILED_ALERTS = frozenset(
    {AlertKind.BACKUP_CONFIG, AlertKind.DISK_SPACE, AlertKind.MAIL_STATUS, AlertKind.OS_UPDATE_REQUIRED}
)


# ---------------------------------------------------------------------------- the rules


def app_oom(conn: Connection, *, app_id: str, container_id: str) -> Outcome:
    """An app's container ran out of memory: notification, no email."""
    event_id = record(conn, Action.APP_OOM, source={"app_id": app_id}, data={"containerId": container_id})
    title = f"App {app_id} ran out of memory"
    message = (
        f"The container of app {app_id} was killed because it used all the memory it may use. "
        "If this happens again, raise the app's memory limit."
    )
    return Outcome(event_id, _notification(conn, event_id, title, message))


def app_updated(conn: Connection, *, app_id: str, from_version: str, to_version: str) -> Outcome:
    """An app was updated: notification, no email."""
    data = {"appId": app_id, "fromVersion": from_version, "toVersion": to_version}
    event_id = record(conn, Action.APP_UPDATE, source={"app_id": app_id}, data=data)
    title = f"App {app_id} was updated to {to_version}"
    return Outcome(event_id, _notification(conn, event_id, title, f"From version {from_version}."))


def cert_renewal_failed(
    conn: Connection,
    settings: Settings,
    *,
    domain: str,
    expires_at: dt.datetime,
    error: str,
    now: dt.datetime | None = None,
) -> Outcome:
    """A certificate did not renew: news (notification and email) only when under 10 days remain."""
    now = now or dt.datetime.now(dt.UTC)
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=dt.UTC)
    days_left = (expires_at - now).total_seconds() / 86400
    data = {"domain": domain, "errorMessage": error, "expiresAt": expires_at.isoformat(), "daysLeft": days_left}
    event_id = record(conn, Action.CERT_RENEWAL, data=data)
    if days_left >= CERT_NOTIFY_DAYS:
        logger.info("cert renewal of %s failed with %.1f days left: logged only", domain, days_left)
        return Outcome(event_id)
    title = f"Certificate of {domain} could not be renewed"
    message = f"It expires in {max(days_left, 0):.0f} days ({expires_at:%Y-%m-%d %H:%M} UTC). Last error: {error}"
    return _urgent(conn, settings, event_id, title, message)


def backup_finished(
    conn: Connection,
    settings: Settings,
    *,
    backup_id: str | None,
    error: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> Outcome:
    """One backup (an app's or the box's) ended: eventlog only. News is per run (`backup_run_finished`)."""
    return Outcome(
        record(conn, Action.BACKUP_FINISH, source=source, data={"backupId": backup_id, "errorMessage": error})
    )


def backup_run_finished(
    conn: Connection,
    settings: Settings,
    *,
    task_id: str,
    series: str,
    error: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> Outcome:
    """A backup run ended: news (notification and email) only when it and the 4 runs of its series before it failed.

    The run is the task `task_id`; `series` is `FULL_BACKUP_SERIES` or `app_series(app_id)`.
    """
    data = {"series": series, "taskId": task_id, "failed": error is not None, "errorMessage": error}
    event_id = record(conn, Action.BACKUP_RUN, source=source, data=data)
    if error is None:
        return Outcome(event_id)
    latest = conn.execute(
        select(Event.data)
        .where(Event.action == Action.BACKUP_RUN.value, Event.data["series"].as_string() == series)
        .order_by(Event.id.desc())
        .limit(BACKUP_FAILURES_TO_NOTIFY)
    ).scalars()
    failed = sum(1 for run in latest if (run or {}).get("failed"))
    if failed < BACKUP_FAILURES_TO_NOTIFY:
        logger.info(
            "backup run %s of %s failed (%d of the last %d failed): logged only",
            task_id,
            series,
            failed,
            BACKUP_FAILURES_TO_NOTIFY,
        )
        return Outcome(event_id)
    if series == FULL_BACKUP_SERIES:
        title = f"The last {BACKUP_FAILURES_TO_NOTIFY} full backups failed"
    else:
        title = f"The last {BACKUP_FAILURES_TO_NOTIFY} backups of app {series.removeprefix('app:')} failed"
    message = f"Last error (task {task_id}): {error}. Check the backup configuration and the apps named."
    return _urgent(conn, settings, event_id, title, message)


def task_interrupted(
    conn: Connection, *, task_id: str, kind: str, app_id: str | None, reason: str, operation: str | None = None
) -> Outcome:
    """A task's process died under it: notification naming the task and the state it left behind, no email."""
    what = f"{kind} {operation}" if operation else kind
    if app_id:
        app = conn.execute(select(App.installation_state, App.run_state).where(App.id == app_id)).first()
        if app is None:
            left = f"App {app_id} no longer exists."
        else:
            left = f"App {app_id} is now {app.installation_state} ({app.run_state})."
            if str(app.installation_state).startswith("pending_"):
                again = str(app.installation_state).removeprefix("pending_")
                left += f" Issue {again} again (boxtasks task retry {task_id}), or repair or uninstall it."
        title = f"Task {what} of app {app_id} was interrupted"
    else:
        platform = conn.execute(select(PlatformState.version, PlatformState.ready)).first()
        left = (
            "The platform has no recorded state yet."
            if platform is None
            else f"The platform is at version {platform.version}, {'ready' if platform.ready else 'not ready'}."
        )
        left += f" Retry it with `boxtasks task retry {task_id}`."
        title = f"Task {what} was interrupted"
    data = {"taskId": task_id, "type": kind, "operation": operation, "appId": app_id, "reason": reason, "left": left}
    event_id = record(conn, Action.TASK_INTERRUPTED, source={"taskId": task_id, "app_id": app_id}, data=data)
    message = f"Task {task_id} stopped before it finished: {reason}. {left}"
    return Outcome(event_id, _notification(conn, event_id, title, message))


def report_interrupted(engine: Engine, task_ids: Sequence[str], *, reason: str) -> list[Outcome]:
    """`task_interrupted` for each task that ended `interrupted` (a stop asked for is no news).

    Each in a transaction of its own; a failure is logged, never raised: the caller is freeing the
    dead task's locks, and that must go on.
    """
    outcomes: list[Outcome] = []
    for task_id in task_ids:
        try:
            with engine.begin() as conn:
                row = conn.execute(
                    select(Task.type, Task.app_id, Task.args, Task.state).where(Task.id == task_id)
                ).first()
                if row is None or row.state != TaskState.INTERRUPTED.value:
                    continue
                operation = (row.args or {}).get("operation") if row.type == "apptask" else None
                outcomes.append(
                    task_interrupted(
                        conn, task_id=task_id, kind=row.type, app_id=row.app_id, reason=reason, operation=operation
                    )
                )
        except Exception:
            logger.exception("could not record the notification of interrupted task %s", task_id)
    return outcomes


def platform_update_available(conn: Connection, *, version: str, changelog: str = "") -> Outcome:
    """A new platform release: notification, no email."""
    event_id = record(conn, Action.PLATFORM_UPDATE_AVAILABLE, data={"version": version})
    title = f"Platform update {version} is available"
    return Outcome(event_id, _notification(conn, event_id, title, changelog))


def platform_updated(
    conn: Connection, *, from_version: str, to_version: str, source: Mapping[str, Any] | None = None
) -> Outcome:
    """The platform was updated: notification, no email (the seed: "box update - notification only")."""
    data = {"fromVersion": from_version, "toVersion": to_version}
    event_id = record(conn, Action.PLATFORM_UPDATE, source=source, data=data)
    title = f"The platform was updated to {to_version}"
    return Outcome(event_id, _notification(conn, event_id, title, f"From version {from_version}."))


def app_update_available(conn: Connection, *, app_id: str, version: str) -> Outcome:
    """A new app release: eventlog only; the dashboard shows its own update marker."""
    return Outcome(record(conn, Action.APP_UPDATE_AVAILABLE, source={"app_id": app_id}, data={"version": version}))


# ---------------------------------------------------------------------------- alerts


def raise_alert(conn: Connection, settings: Settings, kind: AlertKind, *, title: str, message: str) -> Outcome:
    """Set the one alert of `kind` (made, or updated when its text changed); email when newly raised."""
    kind = AlertKind(kind)
    event_id = record(conn, Action.ALERT_RAISED, data={"kind": kind.value, "title": title, "message": message})
    current = conn.execute(
        select(Notification.id, Notification.title, Notification.message)
        .where(Notification.alert_kind == kind.value)
        .with_for_update()
    ).first()
    if current is None:
        try:
            with conn.begin_nested():
                new_id = _notification(conn, event_id, title, message, alert_kind=kind.value)
        except IntegrityError:  # raised by someone else at the same moment: theirs stands
            current = conn.execute(
                select(Notification.id, Notification.title, Notification.message).where(
                    Notification.alert_kind == kind.value
                )
            ).one()
        else:
            emails = _emails(settings, title, message) if kind in EMAILED_ALERTS else ()
            return Outcome(event_id, new_id, emails)
    if (current.title, current.message) != (title, message):
        conn.execute(
            update(Notification)
            .where(Notification.id == current.id)
            .values(title=title, message=message, acknowledged=False, event_id=event_id)
        )
    return Outcome(event_id, current.id)


def clear_alert(conn: Connection, kind: AlertKind) -> bool:
    """The condition cleared: drop the alert of `kind`. False when there was none."""
    kind = AlertKind(kind)
    gone = conn.execute(delete(Notification).where(Notification.alert_kind == kind.value)).rowcount or 0
    if gone:
        record(conn, Action.ALERT_CLEARED, data={"kind": kind.value})
    return bool(gone)


# ---------------------------------------------------------------------------- delivery


def deliver(settings: Settings, outcome: Outcome) -> int:
    """Send the outcome's emails (after its transaction committed); a failure is logged, not raised."""
    return mailer.send_quietly(settings, outcome.emails)


def report(engine: Engine, settings: Settings, rule: Callable[..., Outcome], /, **kwargs: Any) -> Outcome:
    """Apply a rule in a transaction of its own, commit, then send its emails.

    For callers outside an app's fenced transaction: `report(engine, settings, cert_renewal_failed,
    settings=settings, domain=..., expires_at=..., error=...)`.
    """
    with engine.begin() as conn:
        outcome = rule(conn, **kwargs)
    deliver(settings, outcome)
    return outcome


# ---------------------------------------------------------------------------- helpers


def _notification(conn: Connection, event_id: int, title: str, message: str, *, alert_kind: str | None = None) -> int:
    result = conn.execute(
        insert(Notification).values(
            event_id=event_id, alert_kind=alert_kind, title=title[:255], message=message, acknowledged=False
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def _emails(settings: Settings, title: str, message: str) -> tuple[EmailMessage, ...]:
    msg = mailer.compose(settings, subject=title, body=message)
    return (msg,) if msg is not None else ()


def _urgent(conn: Connection, settings: Settings, event_id: int, title: str, message: str) -> Outcome:
    return Outcome(event_id, _notification(conn, event_id, title, message), _emails(settings, title, message))
