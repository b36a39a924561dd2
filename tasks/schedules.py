"""What celery beat runs besides the lock sweep: nightly full backup, alert checks, history pruning, OOM watch,
and the minute tick that sends the apps' cron jobs (`hosting.apps.scheduler`).

The OOM watch (`hosting.apps.oom.watch_forever`) is a thread of the beat process, started when beat starts:
a deployment runs one beat and has one Docker engine, so each OOM kill is recorded once, whatever
the number of workers and hosts (a worker-side watcher would need a lease to elect one per engine).

Thin: the checks live in `hosting.events.alerts`; the nightly backup is an ordinary `fullbackup` task, recorded
and enqueued like one from the API, so it shows in `boxtasks task list` and takes its locks.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from celery import signals

from config import get_settings
from hosting.apps import scheduler
from hosting.apps.oom import watch_forever
from hosting.box import default_box
from hosting.events import history
from hosting.events.alerts import run_checks
from models import get_engine
from tasks import client
from tasks.celery import app
from tasks.errors import DuplicateTaskError

logger = logging.getLogger(__name__)

#: Set to stop the OOM watch (tests; beat itself just exits, and the thread with it).
oom_watch_stop = threading.Event()


@signals.beat_init.connect
def _start_oom_watch(**_: Any) -> None:
    """Beat is starting: watch the Docker engine for OOM kills of app containers (unless turned off)."""
    if not get_settings().oom_watch:
        logger.info("OOM watch is off (BOXTASKS_OOM_WATCH=false)")
        return
    box = default_box()
    logger.info("watching %s for app containers killed out of memory", box.docker.base_url)
    threading.Thread(
        target=watch_forever,
        args=(box, get_engine()),
        kwargs={"stop": oom_watch_stop},
        name="oom-watch",
        daemon=True,
    ).start()


@app.task(name="boxtasks.check_alerts", ignore_result=True)
def check_alerts() -> dict[str, str]:
    return {r.kind.value: r.state for r in run_checks(get_engine(), get_settings())}


@app.task(name="boxtasks.prune_history", ignore_result=True)
def prune_history() -> dict[str, object]:
    """Drop finished tasks, notifications and eventlog entries past their retention (hosting.events.history)."""
    settings = get_settings()
    return history.prune(get_engine(), history.Retention.from_settings(settings)).as_dict()


@app.task(name="boxtasks.nightly_fullbackup", ignore_result=True)
def nightly_fullbackup() -> str | None:
    """Start tonight's full backup, unless one is still under way."""
    try:
        return client.enqueue("fullbackup", {}, engine=get_engine())
    except DuplicateTaskError as err:  # the guard (tasks.guards) answers with the one under way
        logger.info("nightly full backup skipped: %s is still under way", err.task_id)
        return None


@app.task(name="boxtasks.scheduler_tick", ignore_result=True)
def scheduler_tick(sent_at: str | None = None) -> dict[str, Any]:
    """Send the apps' cron jobs due in the minute beat sent this tick in (now, without `sent_at`)."""
    at = dt.datetime.fromisoformat(sent_at) if sent_at else dt.datetime.now(dt.UTC)
    engine = get_engine()

    def send(run: scheduler.Run) -> None:
        client.enqueue(scheduler.KIND, run.args, app_id=run.app_id, engine=engine, task_id=run.task_id)

    return scheduler.send_due(engine, scheduler.tick_minute(at), send).as_dict()
