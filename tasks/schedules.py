"""What celery beat runs besides the lock sweep: the nightly full backup and the alert checks.

Thin: the checks live in `hosting.checks`; the nightly backup is an ordinary `fullbackup` task, recorded
and enqueued like one from the API, so it shows in `boxtasks task list` and takes its locks.
"""

from __future__ import annotations

import logging

from config import get_settings
from hosting.checks import backups_supported, run_checks
from models import get_engine
from tasks import client
from tasks.celery import app
from tasks.errors import DuplicateTaskError

logger = logging.getLogger(__name__)


@app.task(name="boxtasks.check_alerts", ignore_result=True)
def check_alerts() -> dict[str, str]:
    return {r.kind.value: r.state for r in run_checks(get_engine(), get_settings())}


@app.task(name="boxtasks.nightly_fullbackup", ignore_result=True)
def nightly_fullbackup() -> str | None:
    """Start tonight's full backup, unless one is still under way or this server cannot back up."""
    if not backups_supported():
        logger.warning("nightly full backup skipped: this server has no backup support yet (hosting)")
        return None
    try:
        return client.enqueue("fullbackup", {}, engine=get_engine())
    except DuplicateTaskError as err:  # the guard (tasks.guards) answers with the one under way
        logger.info("nightly full backup skipped: %s is still under way", err.task_id)
        return None
