"""A worker bootstep that checks the prefork pool for dead children four times a second.

Celery notices a child that died (SIGKILL, the OOM killer) through an exit signal, with a 5 s
timer as the fallback; the signal path sometimes misses a death (3 of 10 idle SIGKILLs were seen
only after 2.9-4.7 s here). Until the pool notices, the task's locks stay held by a corpse. With
this step every death is seen within a quarter second, so a waiter takes over at once.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.25


class PoolWatch(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._timer: Any = None

    def start(self, worker: Any) -> None:
        hub, pool = getattr(worker, "hub", None), getattr(worker, "pool", None)
        maintain = getattr(pool, "maintain_pool", None)
        if hub is None or maintain is None:
            return  # no event loop (e.g. the filesystem broker): Celery's own timer stays in charge
        self._timer = hub.call_repeatedly(INTERVAL_SECONDS, maintain)

    def stop(self, worker: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
