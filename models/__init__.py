"""SQLAlchemy 2.0 models, the engine, and the migrations of boxtasks' database."""

from __future__ import annotations

from models import liveness
from models.app import App, AppAddon, PortBinding, PortReservation
from models.backup import Archive, Backup
from models.base import Base
from models.clock import db_utcnow
from models.engine import dispose_after_fork, get_engine, make_engine, new_session
from models.errors import MigrationError, ModelError
from models.events import Event, Notification
from models.lock import LockRow
from models.platform import PlatformState
from models.task import FINAL_STATES, PROCESSLESS_STATES, Task, TaskGuard, TaskState
from models.tasklog import TaskLogLine
from models.token import ApiToken

__all__ = [
    # errors
    "MigrationError",
    "ModelError",
    # tables
    "ApiToken",
    "App",
    "AppAddon",
    "Archive",
    "Backup",
    "Base",
    "Event",
    "LockRow",
    "Notification",
    "PlatformState",
    "PortBinding",
    "PortReservation",
    "Task",
    "TaskGuard",
    "TaskLogLine",
    # task states
    "FINAL_STATES",
    "PROCESSLESS_STATES",
    "TaskState",
    # database
    "db_utcnow",
    "liveness",
    "dispose_after_fork",
    "get_engine",
    "make_engine",
    "new_session",
]
