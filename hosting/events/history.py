"""History that stays small: finished tasks, notifications and eventlog entries older than their settings go.

Applied by beat (`boxtasks.prune_history`), in bounded transactions of `history_batch_rows` rows, so
the task path never waits long behind a delete. Never deleted:

* a task that is not final (queued, waiting, running: its row is its lock owner's proof of life),
  nor one a backup row names (`backups.task_id`: stale cleanup asks whether that task lives);
* an alert (a notification with `alert_kind`: it goes when its condition clears);
* an eventlog entry a kept notification points at.

Each batch selects the oldest matching ids by an index (`created_at`), then deletes those ids with
the same conditions again, so a row that changed in between is left alone. A task's log lines
(`task_logs`, bounded per task) go in the same transaction as its row.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, select
from sqlalchemy.orm import InstrumentedAttribute

from config import Settings
from models import FINAL_STATES, Backup, Event, Notification, Task, TaskLogLine, db_utcnow

logger = logging.getLogger(__name__)

_FINAL = sorted(s.value for s in FINAL_STATES)


@dataclass(frozen=True, slots=True)
class Retention:
    tasks_days: int
    eventlog_days: int
    notifications_days: int
    batch_rows: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(
            settings.retain_tasks_days,
            settings.retain_eventlog_days,
            settings.retain_notifications_days,
            settings.history_batch_rows,
        )


@dataclass
class Pruned:
    tasks: int = 0
    notifications: int = 0
    eventlog: int = 0
    batches: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "tasks": self.tasks,
            "notifications": self.notifications,
            "eventlog": self.eventlog,
            "batches": self.batches,
            "seconds": self.seconds,
        }


def _old_tasks(cutoff: dt.datetime) -> ColumnElement[bool]:
    named_by_backup = select(Backup.id).where(Backup.task_id == Task.id).exists()
    return (Task.created_at < cutoff) & Task.state.in_(_FINAL) & ~named_by_backup


def _old_notifications(cutoff: dt.datetime) -> ColumnElement[bool]:
    return (Notification.created_at < cutoff) & Notification.alert_kind.is_(None)


def _old_events(cutoff: dt.datetime) -> ColumnElement[bool]:
    pointed_at = select(Notification.id).where(Notification.event_id == Event.id).exists()
    return (Event.created_at < cutoff) & ~pointed_at


def prune(engine: Engine, retention: Retention, *, now: dt.datetime | None = None) -> Pruned:
    """Delete what is past its retention, batch by batch; returns how many rows of each table went."""
    with engine.connect() as conn:
        now = now or conn.execute(select(db_utcnow())).scalar_one()
    out = Pruned()

    def step(
        name: str,
        key: InstrumentedAttribute[Any],
        order: InstrumentedAttribute[Any],
        where: Any,
        with_rows_of: InstrumentedAttribute[Any] | None = None,
    ) -> int:
        started = time.perf_counter()
        deleted, out.batches = _in_batches(
            engine, key, order, where, retention.batch_rows, out.batches, with_rows_of=with_rows_of
        )
        out.seconds[name] = round(time.perf_counter() - started, 3)
        return deleted

    cutoff = now - dt.timedelta(days=retention.tasks_days)
    out.tasks = step("tasks", Task.id, Task.created_at, _old_tasks(cutoff), with_rows_of=TaskLogLine.task_id)
    # Notifications before the eventlog: an event loses its last notification, then may go too.
    cutoff = now - dt.timedelta(days=retention.notifications_days)
    out.notifications = step("notifications", Notification.id, Notification.id, _old_notifications(cutoff))
    cutoff = now - dt.timedelta(days=retention.eventlog_days)
    out.eventlog = step("eventlog", Event.id, Event.created_at, _old_events(cutoff))
    if out.tasks or out.notifications or out.eventlog:
        logger.info(
            "history pruned: %d tasks, %d notifications, %d eventlog entries in %d batches",
            out.tasks,
            out.notifications,
            out.eventlog,
            out.batches,
        )
    return out


def _in_batches(
    engine: Engine,
    key: InstrumentedAttribute[Any],
    order: InstrumentedAttribute[Any],
    where: ColumnElement[bool],
    batch_rows: int,
    batches: int,
    *,
    with_rows_of: InstrumentedAttribute[Any] | None = None,
) -> tuple[int, int]:
    """Delete the rows matching `where`, oldest first, `batch_rows` per transaction: (rows deleted, batches).

    `with_rows_of`: a column naming these rows' keys in another table, whose rows go with them.
    """
    pick = select(key).where(where).order_by(order).limit(batch_rows)
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(pick).scalars())
            if ids:
                if with_rows_of is not None:
                    going = select(key).where(key.in_(ids), where)
                    conn.execute(delete(with_rows_of.class_).where(with_rows_of.in_(going)))
                total += conn.execute(delete(key.class_).where(key.in_(ids), where)).rowcount or 0
                batches += 1
        if len(ids) < batch_rows:
            return total, batches
