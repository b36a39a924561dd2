"""The alert checks (`hosting.events.alerts`): disk space of the data dir, and the backup configuration.

Each check looks at the box, then raises its alert (made once, its text updated when it changes)
or clears it, in one transaction; the emails of a newly raised alert go out after the commit.
Messages use rounded figures, so an alert that stays raised does not change (and lose its
acknowledgement) at every check.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, select

from config import Settings
from hosting.events.notify import AlertKind, Outcome, clear_alert, deliver, raise_alert
from models import App, Backup, db_utcnow

logger = logging.getLogger(__name__)

GIB = 1024**3

Usage = Callable[[Path], Any]


@dataclass(frozen=True, slots=True)
class CheckResult:
    kind: AlertKind
    state: Literal["raised", "cleared", "ok"]
    message: str = ""


def disk_space(
    conn: Connection, settings: Settings, *, usage: Usage = shutil.disk_usage
) -> tuple[CheckResult, Outcome | None]:
    """Alert `disk_space` while less than BOXTASKS_DISK_MIN_FREE_PERCENT of the data dir's disk is free."""
    path = settings.resolved_data_dir
    path.mkdir(parents=True, exist_ok=True)
    du = usage(path)
    free_pct = 100.0 * du.free / du.total if du.total else 100.0
    if free_pct < settings.disk_min_free_percent:
        title = "Low disk space"
        message = (
            f"Only {free_pct:.0f}% of the disk holding {path} is free ({du.free / GIB:.0f} GiB of "
            f"{du.total / GIB:.0f} GiB; the alert clears above {settings.disk_min_free_percent:g}%). "
            "Free some space or grow the disk: app data and backups need room."
        )
        outcome = raise_alert(conn, settings, AlertKind.DISK_SPACE, title=title, message=message)
        return CheckResult(AlertKind.DISK_SPACE, "raised", message), outcome
    cleared = clear_alert(conn, AlertKind.DISK_SPACE)
    return CheckResult(AlertKind.DISK_SPACE, "cleared" if cleared else "ok"), None


def backup_config(conn: Connection, settings: Settings) -> tuple[CheckResult, Outcome | None]:
    """Alert `backup_config` while backups cannot be trusted to happen: off, impossible, or overdue."""
    problem = _backup_problem(conn, settings)
    if problem is None:
        cleared = clear_alert(conn, AlertKind.BACKUP_CONFIG)
        return CheckResult(AlertKind.BACKUP_CONFIG, "cleared" if cleared else "ok"), None
    title, message = problem
    outcome = raise_alert(conn, settings, AlertKind.BACKUP_CONFIG, title=title, message=message)
    return CheckResult(AlertKind.BACKUP_CONFIG, "raised", message), outcome


def _backup_problem(conn: Connection, settings: Settings) -> tuple[str, str] | None:
    if settings.backup_time is None:
        return (
            "Automatic backups are off",
            "BOXTASKS_BACKUP_AT is empty, so no nightly full backup runs. Set it (a UTC time like 02:00), "
            "or back up by hand with `boxtasks platform backup`.",
        )
    max_age = dt.timedelta(hours=settings.backup_max_age_hours)
    now = conn.execute(select(db_utcnow())).scalar_one()
    oldest_app = conn.execute(select(func.min(App.created_at))).scalar_one_or_none()
    if oldest_app is None or oldest_app + max_age > now:
        return None  # nothing has been there long enough to need a backup yet
    last = conn.execute(
        select(func.max(Backup.created_at)).where(Backup.type == "box", Backup.state == "normal")
    ).scalar_one_or_none()
    if last is not None and last + max_age > now:
        return None
    since = "never" if last is None else f"last on {last:%Y-%m-%d %H:%M} UTC"
    return (
        "Full backups are overdue",
        f"No full backup succeeded in the last {settings.backup_max_age_hours:g} hours ({since}). "
        "Look at the failed fullbackup tasks (`boxtasks task list --type fullbackup`) and the backup target.",
    )


CHECKS = (disk_space, backup_config)


def run_checks(engine: Engine, settings: Settings) -> list[CheckResult]:
    """Run every check, each in its own transaction; one that fails is logged and the others still run."""
    results = []
    for check in CHECKS:
        try:
            with engine.begin() as conn:
                result, outcome = check(conn, settings)
        except Exception:
            logger.exception("alert check %s failed", check.__name__)
            continue
        if outcome is not None:
            deliver(settings, outcome)
        if result.state != "ok":
            logger.info("alert %s %s %s", result.kind.value, result.state, result.message)
        results.append(result)
    return results
