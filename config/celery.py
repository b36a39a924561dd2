"""The Celery configuration, built from Settings (never at import time)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery.beat import BeatLazyFunc
from celery.schedules import crontab

from config.filemodes import private_dir
from config.settings import Settings

#: One queue per kind of work, so a long full backup never stands in front of an app install.
#: `maintenance` carries the short housekeeping tasks (the lock sweep), which must not wait behind
#: a platformstart on the `platform` queue.
QUEUES = ("apptask", "backup", "update", "platform", "maintenance")

TASK_QUEUES = {
    "boxtasks.apptask": "apptask",
    "boxtasks.fullbackup": "backup",
    "boxtasks.update": "update",
    "boxtasks.platformstart": "platform",
    "boxtasks.sweep": "maintenance",
    "boxtasks.check_alerts": "maintenance",
    "boxtasks.nightly_fullbackup": "maintenance",
    "boxtasks.prune_history": "maintenance",
    "boxtasks.appcron": "apptask",
    "boxtasks.scheduler_tick": "maintenance",
}

#: A scheduler tick that waited longer than this for a worker is dropped: after an outage, the
#: minutes missed are not all run at once (cron does not make up missed runs either).
SCHEDULER_TICK_EXPIRES = 600.0


def beat_sent_at() -> str:
    """When beat sends a tick (UTC, ISO 8601): the tick runs the jobs of that minute, however late it runs."""
    return dt.datetime.now(dt.UTC).isoformat()


def kombu_broker_url(settings: Settings) -> str:
    """The broker URL as kombu gets it: the embedded `filesystem://` with a host named.

    The filesystem transport ignores the host, but kombu, given none, logs "No hostname was
    supplied. Reverting to default 'localhost'" for every connection each process makes.
    """
    url = settings.effective_broker_url
    return "filesystem://localhost//" if url == "filesystem://" else url


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's options for the broker: the embedded broker's folders, else `BOXTASKS_BROKER_TRANSPORT_OPTIONS`."""
    if settings.effective_broker_url != "filesystem://":
        return dict(settings.broker_transport_options)
    root = settings.resolved_data_dir / "broker"
    for sub in ("queue", "processed", "control"):
        private_dir(root / sub)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "processed_folder": str(root / "processed"),
        "store_processed": False,
        # Fanout exchanges live here: broadcast control (revoke, terminate, inspect) works.
        "control_folder": str(root / "control"),
    }


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """What celery beat sends: the lock sweep, the alert checks, history pruning, the apps' cron jobs' tick and
    (unless off) the nightly backup.

    The nightly task only enqueues a `fullbackup` like the API does (tasks/schedules.py). Backup
    retention has no entry of its own: each full backup applies it when it ends (hosting).
    """
    schedule: dict[str, Any] = {
        "lock-sweep": {"task": "boxtasks.sweep", "schedule": settings.sweep_seconds},
        "alert-checks": {"task": "boxtasks.check_alerts", "schedule": settings.alert_check_seconds},
        "history-prune": {"task": "boxtasks.prune_history", "schedule": settings.history_prune_hours * 3600},
        # Apps' cron jobs (the manifest's `scheduler` addon): each minute, with the minute it was sent in.
        "scheduler-tick": {
            "task": "boxtasks.scheduler_tick",
            "schedule": crontab(),
            "kwargs": {"sent_at": BeatLazyFunc(beat_sent_at)},
            "options": {"expires": SCHEDULER_TICK_EXPIRES},
        },
    }
    if settings.backup_time is not None:
        hour, minute = settings.backup_time
        schedule["nightly-full-backup"] = {
            "task": "boxtasks.nightly_fullbackup",
            "schedule": crontab(hour=hour, minute=minute),
        }
    return schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    """Settings for long, killable tasks.

    * A locked task's message is acknowledged when a worker process takes it (`LockedTask.acks_late`
      off), not when the task ends: a task runs for hours (a nightly full backup), longer than RabbitMQ lets a consumer
      hold an unacknowledged delivery (`consumer_timeout`, 30 minutes by default: past it the broker
      closes the channel and the node stops) and longer than Redis keeps a delivery invisible
      (`visibility_timeout`: past it another node runs it too). The task row is the record and the
      claim (queued|waiting -> running, one winner) the guard against a second run; a message
      acknowledged but never claimed (its node died in between) leaves a `queued` row that the
      sweep sends again (`tasks.maintenance`).
    * A node reserves messages only for its free processes: with RabbitMQ the window follows them
      (`tasks.flow`), with Redis `worker_disable_prefetch`; so a message never waits in a busy node
      while another could run it. The short housekeeping tasks keep acks_late (the default here).
    * reject_on_worker_lost stays False: a child killed mid-task (SIGKILL, OOM, a hard time limit)
      is not re-run, since operations on apps are not idempotent; the task is marked (`interrupted`,
      or `failed` for a time limit) and its locks are freed once the process is gone.
    * Time limits per kind and app operation come from settings (`tasks.timelimits`), not from here.
    * track_started + task events: Flower shows STARTED and our custom PROGRESS/WAITING states.
    * No result backend is polled by clients: the `tasks` table is the record.
    """
    private_dir(settings.resolved_data_dir)
    return {
        "broker_url": kombu_broker_url(settings),
        "broker_transport_options": broker_transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,  # locked tasks: False (tasks.locking)
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": settings.broker_is_redis,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": "apptask",
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_create_missing_queues": True,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": beat_schedule(settings),
        "beat_schedule_filename": str(settings.resolved_data_dir / "celerybeat-schedule"),
    }
