"""A consumer bootstep for RabbitMQ: a node takes messages only for the processes it has free.

A locked task's message is acknowledged when a process takes it (`LockedTask.acks_late` off), so
that no delivery stays unacknowledged for the hours a task may run (RabbitMQ's `consumer_timeout`).
The prefetch window counts only unacknowledged messages, so without this step a node whose every
process runs a long task would go on reserving messages that wait there for hours while another
node sits idle (and time out in turn). Here the window is the number of free processes, set before
each acknowledgement; with none free the node stops consuming, and starts again as soon as a
process is free (checked four times a second). Other tasks (the sweep, the alert checks) are short
and keep `acks_late`: they hold their place in the window while they run.

Redis needs none of this (`worker_disable_prefetch`), nor the embedded filesystem broker (one node).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.worker.state import active_requests

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.25


class _Flow:
    consumer: Any = None
    paused = False


_FLOW = _Flow()


def _size(c: Any) -> int:
    return int(getattr(c.controller, "max_concurrency", None) or c.pool.num_processes)


def adjust(taking: Any = None) -> None:
    """Set the window to the free processes (`taking`: a request a process is taking now); none free: pause."""
    c = _FLOW.consumer
    if c is None or c.task_consumer is None or c.qos is None:
        return
    busy = {id(r) for r in active_requests if not r.task.acks_late}
    if taking is not None:
        busy.add(id(taking))
    free = _size(c) - len(busy)
    if free <= 0:
        if not _FLOW.paused:
            c.task_consumer.cancel()
            _FLOW.paused = True
            logger.debug("flow: every process busy; not consuming")
        return
    if c.qos.value != free:
        c.qos.value = free
        c.qos.update()
    if _FLOW.paused:
        c.task_consumer.consume()
        _FLOW.paused = False
        logger.debug("flow: %d process(es) free; consuming again", free)


class Flow(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._timer: Any = None

    def start(self, c: Any) -> None:
        if c.connection is None or c.connection.transport.driver_type != "amqp":
            return
        # Started again after each reconnect, with a new consumer and window.
        _FLOW.consumer, _FLOW.paused = c, False
        adjust()
        self._timer = c.timer.call_repeatedly(INTERVAL_SECONDS, adjust)

    def stop(self, c: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        _FLOW.consumer = None

    shutdown = stop
