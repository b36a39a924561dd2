"""History retention on every backend: old finished tasks, notifications and events go; what is referenced stays."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from config import load_settings
from config.celery import beat_schedule
from hosting.events import history
from models import Backup, Event, Notification, Task, TaskLogLine, db_utcnow

OLD = dt.timedelta(days=400)  # past every default retention
RETENTION = history.Retention(tasks_days=180, eventlog_days=365, notifications_days=180, batch_rows=2)


def _task(engine: Engine, created: dt.datetime, state: str) -> str:
    task_id = f"hist-{uuid.uuid4()}"
    with engine.begin() as conn:
        conn.execute(
            insert(Task).values(
                id=task_id, type="apptask", args={}, state=state, message="", locks={}, created_at=created
            )
        )
    return task_id


def _event(engine: Engine, created: dt.datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(insert(Event).values(action="test.history", source={}, data={}, created_at=created))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def _notification(engine: Engine, created: dt.datetime, event_id: int | None, alert_kind: str | None = None) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            insert(Notification).values(
                event_id=event_id, alert_kind=alert_kind, title="t", message="", acknowledged=False, created_at=created
            )
        )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def _ids(engine: Engine, column: Any, ids: list[Any]) -> set[Any]:
    with engine.connect() as conn:
        return set(conn.execute(select(column).where(column.in_(ids))).scalars())


def test_old_history_goes_and_what_is_referenced_stays(engine: Engine) -> None:
    with engine.connect() as conn:
        now = conn.execute(select(db_utcnow())).scalar_one()
    old, recent = now - OLD, now - dt.timedelta(days=1)

    old_done = [_task(engine, old, state) for state in ("succeeded", "failed", "cancelled", "interrupted", "failed")]
    old_running = _task(engine, old, "running")
    old_queued = _task(engine, old, "queued")
    old_backup_task = _task(engine, old, "succeeded")
    recent_done = _task(engine, recent, "succeeded")
    backup_id = f"app_hist_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(
            insert(Backup).values(
                id=backup_id, path="x", type="app", app_id="hist", version="1", state="normal", task_id=old_backup_task
            )
        )

    old_event_alone = _event(engine, old)
    old_event_of_alert = _event(engine, old)
    old_event_of_old_note = _event(engine, old)
    recent_event = _event(engine, recent)
    alert_kind = f"hist_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:  # log lines of a task that goes and of one that stays
        conn.execute(
            insert(TaskLogLine),
            [{"task_id": t, "seq": 1, "at": old, "level": "INFO", "line": "x"} for t in (old_done[0], old_backup_task)],
        )
    old_alert = _notification(engine, old, old_event_of_alert, alert_kind=alert_kind)
    old_note = _notification(engine, old, old_event_of_old_note)
    recent_note = _notification(engine, recent, recent_event)

    try:
        pruned = history.prune(engine, RETENTION)
        assert pruned.tasks >= 5 and pruned.notifications >= 1 and pruned.eventlog >= 2
        assert pruned.batches >= 3, "5 old tasks in batches of 2"

        kept_tasks = [old_running, old_queued, old_backup_task, recent_done]
        assert _ids(engine, Task.id, old_done + kept_tasks) == set(kept_tasks)
        assert _ids(engine, TaskLogLine.task_id, [old_done[0], old_backup_task]) == {old_backup_task}
        assert _ids(engine, Notification.id, [old_alert, old_note, recent_note]) == {old_alert, recent_note}
        events = [old_event_alone, old_event_of_alert, old_event_of_old_note, recent_event]
        # The old note went first, so its event went too; the alert's event stays with the alert.
        assert _ids(engine, Event.id, events) == {old_event_of_alert, recent_event}

        again = history.prune(engine, RETENTION)
        assert (again.tasks, again.notifications, again.eventlog) == (0, 0, 0)
    finally:
        with engine.begin() as conn:
            conn.execute(delete(Backup).where(Backup.id == backup_id))
            conn.execute(delete(Notification).where(Notification.alert_kind == alert_kind))
            conn.execute(delete(TaskLogLine).where(TaskLogLine.task_id == old_backup_task))
            conn.execute(delete(Task).where(Task.id.in_([old_running, old_queued, old_backup_task])))


def test_settings_and_beat() -> None:
    settings = load_settings(retain_tasks_days=30, history_batch_rows=1000, history_prune_hours=6)
    assert history.Retention.from_settings(settings) == history.Retention(30, 365, 180, 1000)
    assert beat_schedule(settings)["history-prune"] == {"task": "boxtasks.prune_history", "schedule": 6 * 3600.0}
