"""GET /metrics: Prometheus text, computed at scrape time from what the API process can see itself.

Every figure comes from the database, which all workers share, so it is right whichever process
did the work: tasks by type and state (the `tasks` table), the lock queue (one snapshot of the lock
row: holders, waiters, and for each waiter the locks that block it), how long the oldest waiting
task has existed, and the lock row's version (it grows by one per successful compare-and-swap, so
its rate is the lock-write rate of the whole system).

Lock acquire latency and compare-and-swap retries: each worker records, with a task's final
state, how long the granting compare-and-swap took and how many of its writes lost a race
(`tasks.locks.acquire_ms`, `cas_retries`); the histogram here is over the latest 1,000 finished
tasks, so it describes recent behaviour across all workers without a per-process exporter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from frontdoor import queries
from lockman import LockError, LockManager
from models import TaskState
from models.secrets import describe_db_error

logger = logging.getLogger(__name__)

_STATES = [s.value for s in TaskState]
_ACQUIRE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class BoxCollector(Collector):
    """Reads the tasks table and the lock row on each scrape; a database that does not answer gives up=0."""

    def __init__(self, engine: Callable[[], Engine], manager: Callable[[], LockManager]) -> None:
        self._engine = engine
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        up = GaugeMetricFamily("boxtasks_database_up", "1 when the database answered this scrape")
        try:
            families = list(self._families())
        except (SQLAlchemyError, LockError) as err:
            logger.warning("metrics: database did not answer: %s", describe_db_error(err))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
        took = GaugeMetricFamily("boxtasks_scrape_seconds", "how long reading the figures of this scrape took")
        took.add_metric([], time.monotonic() - started)
        yield took

    def _families(self) -> Iterator[Metric]:
        engine = self._engine()
        tasks = GaugeMetricFamily(
            "boxtasks_tasks", "tasks in the tasks table, by type and state", labels=["type", "state"]
        )
        counts: dict[tuple[str, str], int] = {}
        for kind, state, n in queries.tasks_by_state(engine):
            counts[(kind, state)] = n
        for kind in sorted({k for k, _ in counts}):
            for state in _STATES:
                tasks.add_metric([kind, state], counts.get((kind, state), 0))
        yield tasks

        waiting, oldest = queries.oldest_waiting(engine)
        age = GaugeMetricFamily(
            "boxtasks_waiting_oldest_seconds", "age of the oldest task now waiting for locks (0: none waits)"
        )
        age.add_metric([], oldest if waiting else 0.0)
        yield age

        snap = self._manager().snapshot()
        by_lock: dict[str, set[str]] = {}
        for w in snap.table.waiters:
            for b in snap.table.blockers_of(w.owner):
                by_lock.setdefault(b.name, set()).add(w.owner)
        blocked = GaugeMetricFamily(
            "boxtasks_waiting_tasks", "tasks in the lock queue, by a lock that blocks them", labels=["lock"]
        )
        for name, owners in sorted(by_lock.items()):
            blocked.add_metric([name], len(owners))
        yield blocked

        waiters = GaugeMetricFamily("boxtasks_lock_waiters", "entries in the lock queue")
        waiters.add_metric([], len(snap.table.waiters))
        yield waiters

        holders = GaugeMetricFamily("boxtasks_lock_holders", "granted locks, by lock and mode", labels=["lock", "mode"])
        held: dict[tuple[str, str], int] = {}
        for h in snap.table.holders:
            held[(h.name, h.mode.value)] = held.get((h.name, h.mode.value), 0) + 1
        for (name, mode), n in sorted(held.items()):
            holders.add_metric([name, mode], n)
        yield holders

        figures = queries.lock_acquire_figures(engine)
        acquire = HistogramMetricFamily(
            "boxtasks_lock_acquire_seconds",
            "time the granting compare-and-swap took, over the latest 1000 finished tasks",
        )
        within = [float(sum(1 for ms, _ in figures if ms / 1000 <= bound)) for bound in _ACQUIRE_BUCKETS]
        acquire.add_metric(
            [],
            buckets=[
                *((str(b), c) for b, c in zip(_ACQUIRE_BUCKETS, within, strict=True)),
                ("+Inf", float(len(figures))),
            ],
            sum_value=sum(ms for ms, _ in figures) / 1000,
        )
        yield acquire
        retries = GaugeMetricFamily(
            "boxtasks_lock_cas_retries",
            "compare-and-swap writes that lost a race while granting, summed over the latest 1000 finished tasks",
        )
        retries.add_metric([], sum(r for _, r in figures))
        yield retries

        writes = CounterMetricFamily(
            "boxtasks_lock_writes", "successful compare-and-swap writes of the lock row (its version)"
        )
        writes.add_metric([], snap.version)
        yield writes


def registry(engine: Callable[[], Engine], manager: Callable[[], LockManager]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(BoxCollector(engine, manager))
    return reg


def render(reg: CollectorRegistry) -> tuple[bytes, dict[str, Any]]:
    return generate_latest(reg), {"Content-Type": CONTENT_TYPE_LATEST}
