"""The eventlog: one row for everything that happens to the box, written in the caller's transaction."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert

from models import Event

logger = logging.getLogger(__name__)


class Action(enum.StrEnum):
    APP_INSTALL = "app.install"
    APP_CONFIGURE = "app.configure"
    APP_START = "app.start"
    APP_STOP = "app.stop"
    APP_RESTART = "app.restart"
    APP_REPAIR = "app.repair"
    APP_UNINSTALL = "app.uninstall"
    APP_UPDATE = "app.update"
    APP_UPDATE_AVAILABLE = "app.update_available"
    APP_OOM = "app.oom"
    BACKUP_FINISH = "backup.finish"
    #: One backup run ended: a full backup task (all its app backups), or one app backup task.
    BACKUP_RUN = "backup.run"
    CERT_RENEWAL = "cert.renewal"
    PLATFORM_UPDATE_AVAILABLE = "platform.update_available"
    PLATFORM_UPDATE = "platform.update"
    BACKUP_CLEANUP = "backup.cleanup"
    TASK_INTERRUPTED = "task.interrupted"
    ALERT_RAISED = "alert.raised"
    ALERT_CLEARED = "alert.cleared"


def app_action(operation: str) -> str:
    """The eventlog action of an app operation (`install` -> `app.install`)."""
    return f"app.{operation}"


def record(
    conn: Connection,
    action: str,
    *,
    source: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> int:
    """Append one event; return its id (notifications point at it)."""
    result = conn.execute(insert(Event).values(action=str(action), source=dict(source or {}), data=dict(data or {})))
    event_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    logger.debug("event %s %s %s", event_id, action, data)
    return event_id
