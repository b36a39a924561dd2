"""The periodic sweep: covers what a crash or a lost message left behind. Celery-free."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from models import Task, TaskState, db_utcnow, records
from tasks.runner import Runtime, recover_dead

logger = logging.getLogger(__name__)

#: How many messages are ready in a queue (None: the broker could not say).
ReadyCount = Callable[[str], "int | None"]
#: Sends the messages of queued tasks (rows with id, type, queue, args) again.
Resend = Callable[[Sequence[Any]], object]

#: At most this many queued tasks are sent again per sweep: a backlog is not flooded with copies.
_RESEND_BATCH = 100


@dataclass
class SweepReport:
    interrupted: list[str] = field(default_factory=list)
    woken: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"interrupted": self.interrupted, "woken": self.woken, "resent": self.resent}


@dataclass(frozen=True)
class Requeue:
    """How the sweep finds and re-sends queued tasks whose message is gone (see `sweep`)."""

    after: dt.timedelta
    ready_count: ReadyCount
    resend: Resend


def sweep(rt: Runtime, requeue: Requeue | None = None) -> SweepReport:
    """Mark silent running tasks interrupted and free their locks; wake every waiter that can go;
    send queued tasks that lost their message again.

    A whole worker host that died leaves `running` rows whose heartbeat stops: after the lease
    they are interrupted here. A wake-up lost to a crash is covered by waking every ready
    waiter, and every `waiting` task whose queue entry is gone (it asks again at the back).
    A message is acknowledged when a worker process takes it (config.celery): a node that died
    before the claim leaves its task `queued` with no message anywhere; with `requeue`, such tasks
    are sent again (`requeue_lost`).
    """
    report = SweepReport()
    stale = records.stale_running(rt.engine, rt.lease)
    if stale:
        report.interrupted = recover_dead(rt, stale, reason="its heartbeat stopped (worker gone?)")
    release = rt.manager.sweep()
    table = rt.manager.snapshot().table
    queued = {w.owner for w in table.waiters}
    lost = [row.id for row in records.waiting(rt.engine) if row.id not in queued]
    to_wake = list(dict.fromkeys([w.owner for w in release.ready] + lost))
    if to_wake:
        rt.wake(to_wake)
        report.woken = to_wake
    if requeue is not None:
        report.resent = requeue_lost(rt.engine, requeue)
    if report.interrupted or report.woken or report.resent:
        logger.info("sweep: interrupted %s, woke %s, resent %s", report.interrupted, report.woken, report.resent)
    return report


def requeue_lost(engine: Engine, requeue: Requeue) -> list[str]:
    """Send again the tasks queued longer than `requeue.after` in a queue where no message is ready.

    A task whose message still waits in its queue (a backlog) is left alone: its queue is not
    empty. One whose message sits reserved in a node whose processes are all busy may be sent a
    second time: whichever copy a process takes first claims the row, the other finds it claimed
    and is dropped (`tasks.runner`), so at worst it starts sooner on another node.
    """
    old = _queued_since(engine, requeue.after)
    resent: list[str] = []
    for queue in sorted({row.queue for row in old}):
        try:
            ready = requeue.ready_count(queue)
        except Exception:  # the broker may be down: the next sweep looks again
            logger.warning("sweep: could not count the messages in queue %s", queue, exc_info=True)
            continue
        if ready != 0:
            continue
        rows = [row for row in old if row.queue == queue]
        requeue.resend(rows)
        ids = [row.id for row in rows]
        logger.warning("sweep: queue %s is empty, yet %d task(s) are queued in it: sent again %s", queue, len(ids), ids)
        resent += ids
    return resent


def _queued_since(engine: Engine, age: dt.timedelta) -> list[Any]:
    """Tasks `queued` (no stop asked for) since before `age` ago on the database clock, oldest first."""
    tasks = Task.__table__
    with engine.connect() as conn:
        now = conn.execute(select(db_utcnow())).scalar_one()
        rows = conn.execute(
            select(tasks.c.id, tasks.c.type, tasks.c.queue, tasks.c.args)
            .where(
                tasks.c.state == TaskState.QUEUED.value,
                tasks.c.stop_requested_at.is_(None),
                tasks.c.created_at < now - age,
            )
            .order_by(tasks.c.created_at)
            .limit(_RESEND_BATCH)
        ).all()
    return list(rows)
