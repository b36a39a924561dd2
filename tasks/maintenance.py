"""The periodic sweep: covers what a crash or a lost message left behind. Celery-free."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tasks import records
from tasks.runner import Runtime, recover_dead

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    interrupted: list[str] = field(default_factory=list)
    woken: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"interrupted": self.interrupted, "woken": self.woken}


def sweep(rt: Runtime) -> SweepReport:
    """Mark silent running tasks interrupted and free their locks; wake every waiter that can go.

    A whole worker host that died leaves `running` rows whose heartbeat stops: after the lease
    they are interrupted here. A wake-up lost to a crash is covered by waking every ready
    waiter, and every `waiting` task whose queue entry is gone (it asks again at the back).
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
    if report.interrupted or report.woken:
        logger.info("sweep: interrupted %s, woke %s", report.interrupted, report.woken)
    return report
