"""Task-engine figures: locked tasks beside bare Celery, parallel makespan, hand-off and recovery.

    .venv/bin/python -m bench.tasks                  # readable table, each figure beside its target
    .venv/bin/python -m bench.tasks --quick --json   # a smoke test, one JSON object on stdout

One run makes its own database on the server (`bt_bench_<random>`, migrated, dropped at the end),
its own queues on the broker (`bench_<run>_apptask`, `_backup`, `_staged`; deleted at the end)
and starts one real worker, `celery -A tasks worker -I bench.kinds -c 4`, in a process group of
its own that is stopped whatever happens. Every figure is measured against that same worker,
broker and database in the same run; none is compared with a remembered number.

(a) throughput. N locked no-op apptasks (`bench_noop`: plan platform S + app:<id> X, N distinct
    apps, a body that does nothing) against N bare Celery no-op tasks (`bench.bare`, a plain
    `@app.task` that writes nothing: this project's Celery configuration keeps no results), on
    the same broker, worker and database. Two references beside them: `bench_row_only`, our
    task row (INSERT at enqueue, claim, final state) with no locks, which is what any design that
    keeps a durable record per task pays; and `bench.celery_db`, a Celery no-op that Celery
    itself records in the same database, as it does when given its database result backend
    (STARTED and SUCCESS rows in `celery_taskmeta`; the backend is made in the worker's main
    process so each pool process keeps a pooled connection). Each kind goes to the same queue
    and worker; rounds rotate which kind goes first, after a warm-up that lets every pool
    process make its connections. Time runs from just before the first enqueue (for our kinds,
    `tasks.client.enqueue`: the row INSERT, then the message) to the last task finished: for
    ours the latest `finished_at` in the tasks table (database clock, this host); for Celery's
    the latest `task-succeeded` event of the worker (its clock, this host), which the engine's
    configuration sends for every task anyway.
(a') the same, with the queue filled first while the worker does not consume it, then timed from
    `add_consumer` to the last task finished: the worker's rate alone, without the enqueue loop
    of this process (which can be what limits the bare tasks above). Shown for reference.
(b) makespan. 8 apptasks on 8 apps, 2 s of work each, and a full backup over those 8 apps
    (0.1 s per app, the app's lock taken while it is copied) on 4 worker processes, sent
    backup-first and apps-first; beside it the same load where every task takes one global
    lock (`{"global": "X"}`, the old way). Ideal = total work / 4 (here larger than any one
    task or chain of tasks); also shown: the best schedule that keeps each task on one
    process, since the 2 s apptasks cannot be split.
(c) hand-off. Pairs of tasks on one app, sent together (two pairs at a time): the one that
    gets the lock works 0.3 s, the other must wait (it sends `task-waiting`); latency = the
    waiter's body start minus the holder's body end (both `time.time()` on this host).
(d) recovery. A holder works on an app, a waiter waits for the same app; SIGKILL to the pool
    process that runs the holder (the pid in its tasks row, checked to be our worker's child);
    latency = the waiter's body start minus the moment of the kill.

Exit status: 0 when every task ended as intended (targets missed are printed MISSED, not
failed), 1 on an error (a task failed, a lock left behind, a worker that would not start).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Row, Table, select, text
from sqlalchemy.engine import make_url

from bench.taskrig import (
    EventLog,
    Worker,
    apply_environment,
    bench_database,
    delete_queues,
    finish_run,
    load_average,
    log,
    raise_on_sigterm,
    record_failure,
    wait_for,
)
from lockman import LockManager
from models import FINAL_STATES, Task, get_engine
from tasks.celery import app
from tasks.client import enqueue

DEFAULT_DATABASE = os.environ.get("BOXTASKS_BENCH_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306")
DEFAULT_BROKER = os.environ.get("BOXTASKS_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")

TARGET_RATIO = 0.8
TARGET_MAKESPAN = 1.15
TARGET_HANDOFF_P50_MS = 200.0
TARGET_HANDOFF_P99_MS = 1000.0
TARGET_RECOVERY_S = 2.0

_tasks: Table = Task.__table__  # type: ignore[assignment]
_FINAL = {s.value for s in FINAL_STATES}


@dataclass(frozen=True)
class Params:
    concurrency: int = 4
    throughput_n: int = 200
    throughput_rounds: int = 2
    warmup: int = 100
    makespan_apps: int = 8
    app_seconds: float = 2.0
    backup_seconds_per_app: float = 0.1
    handoff_pairs: int = 50
    handoff_hold: float = 0.3
    recovery_repeats: int = 5


QUICK = Params(
    throughput_n=40,
    throughput_rounds=1,
    warmup=20,
    app_seconds=0.5,
    backup_seconds_per_app=0.05,
    handoff_pairs=6,
    recovery_repeats=2,
)


class BenchError(Exception):
    """Something went wrong that makes a figure meaningless (not a missed target)."""


def _epoch(value: dt.datetime | None) -> float:
    if value is None:
        raise BenchError("a finished task has no finished_at")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Ledger:
    """Every task the run sent, and the final state it must end in."""

    locked: dict[str, str] = field(default_factory=dict)
    bare: list[str] = field(default_factory=list)

    def expect(self, task_id: str, state: str = "succeeded") -> str:
        self.locked[task_id] = state
        return task_id


class Bench:
    def __init__(self, params: Params, worker: Worker, events: EventLog, run: str) -> None:
        self.p = params
        self.worker = worker
        self.events = events
        self.run = run
        self.q_app = f"bench_{run}_apptask"
        self.q_backup = f"bench_{run}_backup"
        #: Filled while nobody consumes it, then drained: the worker-only rate.
        self.q_staged = f"bench_{run}_staged"
        self.ledger = Ledger()
        self.engine = get_engine()
        self._apps = 0

    # ------------------------------------------------------------------ helpers

    def new_app(self) -> str:
        self._apps += 1
        return f"b{self.run}-{self._apps}"

    def send_locked(
        self, kind: str, args: dict[str, Any], *, app_id: str | None, queue: str, expect: str = "succeeded"
    ) -> str:
        return self.ledger.expect(enqueue(kind, args, app_id=app_id, queue=queue), expect)

    def rows(self, ids: Sequence[str]) -> dict[str, Row[Any]]:
        found: dict[str, Row[Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                found.update({r.id: r for r in conn.execute(select(_tasks).where(_tasks.c.id.in_(chunk)))})
        return found

    def row(self, task_id: str) -> Row[Any]:
        found = self.rows([task_id]).get(task_id)
        if found is None:
            raise BenchError(f"no row for task {task_id}")
        return found

    def wait_final(self, ids: Sequence[str], timeout: float) -> dict[str, Row[Any]]:
        """Poll the states (one cheap query) until every task is final; then read the rows whole."""
        stmt = select(_tasks.c.id, _tasks.c.state).where(_tasks.c.id.in_(list(ids)))
        deadline = time.monotonic() + timeout
        while True:
            with self.engine.connect() as conn:
                states = {r.id: r.state for r in conn.execute(stmt)}
            if len(states) == len(ids) and all(s in _FINAL for s in states.values()):
                return self.rows(ids)
            if time.monotonic() >= deadline:
                left = {s for s in states.values() if s not in _FINAL}
                raise BenchError(
                    f"{sum(s not in _FINAL for s in states.values())} task(s) not final after {timeout:g}s: {left}"
                )
            time.sleep(0.05)

    def wait_row(self, task_id: str, predicate: Callable[[Row[Any]], bool], what: str, timeout: float = 60) -> Row[Any]:
        found: Row[Any] = wait_for(
            lambda: (r := self.row(task_id)) is not None and predicate(r) and r,
            timeout=timeout,
            what=f"task {task_id[:8]} {what}",
        )
        return found

    # ------------------------------------------------------------------ (a) throughput

    def bare_batch(self, n: int, *, staged: bool = False, name: str = "bench.bare") -> dict[str, Any]:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        self.ledger.bare.extend(ids)
        queue = self.q_staged if staged else self.q_app
        t0 = time.time()
        for task_id in ids:
            app.send_task(name, task_id=task_id, queue=queue)
        sent = time.time()
        enqueue_seconds = sent - t0
        if staged:
            t0 = self.start_consuming(queue)
        try:
            ok, bad = self.events.wait_done(ids, timeout=max(60.0, n * 0.5))
        finally:
            if staged:
                self.stop_consuming(queue)
        if ok + bad < n:
            raise BenchError(f"only {ok + bad} of {n} bare tasks reported an end (events)")
        if bad:
            raise BenchError(f"{bad} bare task(s) failed")
        end = max(self.events.stamp(t, "task-succeeded") or 0.0 for t in ids)
        return {"tasks": n, "seconds": end - t0, "enqueue_seconds": enqueue_seconds}

    def locked_batch(self, n: int, *, staged: bool = False, kind: str = "bench_noop") -> dict[str, Any]:
        """N tasks recorded in the tasks table (sent by `enqueue`), by default locked no-ops on N apps."""
        apps = [self.new_app() for _ in range(n)]
        queue = self.q_staged if staged else self.q_app
        args: Callable[[str], dict[str, Any]] = (lambda a: {"app_id": a}) if kind == "bench_noop" else (lambda a: {})
        t0 = time.time()
        ids = [self.send_locked(kind, args(a), app_id=a, queue=queue) for a in apps]
        sent = time.time()
        enqueue_seconds = sent - t0
        if staged:
            t0 = self.start_consuming(queue)
        try:
            rows = self.wait_final(ids, timeout=max(60.0, n * 1.0))
        finally:
            if staged:
                self.stop_consuming(queue)
        failed = [r for r in rows.values() if r.state != "succeeded"]
        if failed:
            raise BenchError(
                f"{len(failed)} {kind} task(s) did not succeed, e.g. {failed[0].state}: {failed[0].message}"
            )
        end = max(_epoch(r.finished_at) for r in rows.values())
        # Cross-check on the instrument the bare tasks use: the worker's task-succeeded events.
        self.events.wait_done(ids, timeout=10)
        event_end = max((self.events.stamp(t, "task-succeeded") or 0.0) for t in ids)
        waited = sum(1 for t in ids if self.events.stamp(t, "task-waiting") is not None)
        return {
            "tasks": n,
            "seconds": end - t0,
            "enqueue_seconds": enqueue_seconds,
            "seconds_by_events": (event_end - t0) if event_end else None,
            "waited": waited,
        }

    def start_consuming(self, queue: str) -> float:
        """Let the worker drain a pre-filled queue; returns the moment it was asked to."""
        t0 = time.time()
        replies = app.control.add_consumer(queue, destination=[self.worker.nodename], reply=True, timeout=10)
        if not replies:
            raise BenchError(f"worker {self.worker.nodename} did not answer add_consumer({queue})")
        return t0

    def stop_consuming(self, queue: str) -> None:
        app.control.cancel_consumer(queue, destination=[self.worker.nodename], reply=True, timeout=10)

    def celery_rows(self) -> int:
        """How many SUCCESS rows Celery's database backend wrote for this run (it writes one per task)."""
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")).scalar_one())

    def throughput(self) -> dict[str, Any]:
        p = self.p
        batches: dict[str, Callable[..., dict[str, Any]]] = {
            "bare": self.bare_batch,
            "celery_db": partial(self.bare_batch, name="bench.celery_db"),
            "row_only": partial(self.locked_batch, kind="bench_row_only"),
            "locked": self.locked_batch,
        }
        # Every pool process must have made its connections (database, lock manager, broker)
        # before timing: a new MariaDB connection costs tens of ms here (see the report).
        log(f"(a) warm-up: {p.warmup} tasks of each kind ({', '.join(batches)})")
        for batch in batches.values():
            batch(p.warmup)
            batch(p.warmup // 4, staged=True)
        rounds: list[dict[str, Any]] = []
        kinds = list(batches)
        for i in range(p.throughput_rounds):
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]  # each round starts with another kind
            rnd: dict[str, Any] = {}
            for staged in (False, True):
                for kind in order:
                    key = f"{kind}_prefilled" if staged else kind
                    rnd[key] = batches[kind](p.throughput_n, staged=staged)
                    log(
                        f"(a) round {i + 1} {key:<20} {p.throughput_n} tasks in {rnd[key]['seconds']:.2f}s "
                        f"({p.throughput_n / rnd[key]['seconds']:.1f}/s; enqueue {rnd[key]['enqueue_seconds']:.2f}s)"
                    )
            rounds.append(rnd)

        def total(key: str) -> dict[str, Any]:
            tasks = sum(r[key]["tasks"] for r in rounds)
            seconds = sum(r[key]["seconds"] for r in rounds)
            return {
                "tasks": tasks,
                "seconds": _r(seconds),
                "tasks_per_s": _r(tasks / seconds, 1),
                "enqueue_seconds": _r(sum(r[key]["enqueue_seconds"] for r in rounds)),
            }

        def ratios(suffix: str, baseline: str) -> dict[str, Any]:
            rate = {k: totals[k + suffix]["tasks_per_s"] for k in kinds}
            return {
                "ratio": _r(rate["locked"] / rate[baseline]),
                "ratio_per_round": [
                    _r(r[baseline + suffix]["seconds"] / r["locked" + suffix]["seconds"]) for r in rounds
                ],
            }

        totals = {key: total(key) for key in rounds[0]}
        section = {k: totals[k] for k in kinds}
        prefilled = {k: totals[f"{k}_prefilled"] for k in kinds}
        headline = ratios("", "bare")
        recorded = ratios("", "celery_db")
        # What a locked task costs a worker process beyond a bare one, from the drain rates.
        extra_ms = (
            (1 / prefilled["locked"]["tasks_per_s"] - 1 / prefilled["bare"]["tasks_per_s"]) * p.concurrency * 1000
        )
        section["locked"]["seconds_by_events"] = _r(sum(r["locked"]["seconds_by_events"] or 0 for r in rounds))
        section["locked"]["waited"] = sum(r["locked"]["waited"] for r in rounds)
        return {
            "n": p.throughput_n,
            "rounds": p.throughput_rounds,
            "concurrency": p.concurrency,
            **section,
            "method": "first enqueue to last end: locked and row_only = latest tasks.finished_at, "
            "bare and celery_db = latest task-succeeded worker event",
            "kinds": {
                "bare": "bare Celery no-op that writes nothing (no result backend)",
                "celery_db": "bare Celery no-op recorded in the same database by Celery's database result "
                "backend (STARTED and SUCCESS rows in celery_taskmeta)",
                "row_only": "our task row only (INSERT at enqueue, claim, final state), no locks",
                "locked": "locked no-op apptask (platform S + app:<id> X), task row and lock row",
            },
            "baseline": "bare",
            **headline,
            "target": TARGET_RATIO,
            "met": headline["ratio"] >= TARGET_RATIO,
            "vs_celery_db": recorded,
            "celery_db_rows": self.celery_rows(),
            "row_only_vs_bare": _r(section["row_only"]["tasks_per_s"] / section["bare"]["tasks_per_s"]),
            "prefilled": {
                "method": "queue filled while not consumed, timed from add_consumer to the last end",
                **prefilled,
                **ratios("_prefilled", "bare"),
                "vs_celery_db": ratios("_prefilled", "celery_db"),
            },
            "extra_process_ms_per_locked_task": _r(extra_ms, 1),
        }

    # ------------------------------------------------------------------ (b) makespan

    def makespan_run(self, mode: str, order: str) -> dict[str, Any]:
        p = self.p
        apps = [self.new_app() for _ in range(p.makespan_apps)]
        app_kind, backup_kind = (
            ("bench_app", "bench_backup") if mode == "lockman" else ("bench_global_app", "bench_global_backup")
        )
        ids: dict[str, str] = {}

        def send_backup() -> None:
            ids["backup"] = self.send_locked(
                backup_kind,
                {"app_ids": apps, "seconds_per_app": p.backup_seconds_per_app},
                app_id=None,
                queue=self.q_backup,
            )

        def send_apps() -> None:
            for a in apps:
                ids[a] = self.send_locked(app_kind, {"app_id": a, "seconds": p.app_seconds}, app_id=a, queue=self.q_app)

        t0 = time.time()
        for send in (send_backup, send_apps) if order == "backup_first" else (send_apps, send_backup):
            send()
        total_work = p.makespan_apps * (p.app_seconds + p.backup_seconds_per_app)
        rows = self.wait_final(list(ids.values()), timeout=total_work * 3 + 60)
        bad = [r for r in rows.values() if r.state != "succeeded"]
        if bad:
            raise BenchError(
                f"makespan {mode}/{order}: {len(bad)} task(s) did not succeed: {bad[0].state} {bad[0].message}"
            )
        end = max(_epoch(r.finished_at) for r in rows.values())
        timeline = []
        for name, task_id in ids.items():
            r = rows[task_id]
            timeline.append(
                {
                    "task": name,
                    "pid": r.pid,
                    "body_start": _r(r.result["start"] - t0),
                    "body_end": _r(r.result["end"] - t0),
                    "waited": self.events.stamp(task_id, "task-waiting") is not None,
                }
            )
        timeline.sort(key=lambda e: e["body_start"])
        backup = rows[ids["backup"]].result
        return {
            "mode": mode,
            "order": order,
            "makespan_s": _r(end - t0),
            "backup_deferred": len(backup.get("deferred", [])),
            "timeline": timeline,
        }

    def makespan(self) -> dict[str, Any]:
        p = self.p
        total = p.makespan_apps * p.app_seconds + p.makespan_apps * p.backup_seconds_per_app
        backup_work = p.makespan_apps * p.backup_seconds_per_app
        ideal = max(total / p.concurrency, p.app_seconds, backup_work)
        whole = _best_whole_task_schedule(p.makespan_apps, p.app_seconds, backup_work, p.concurrency)
        runs = []
        for mode, order in (("lockman", "backup_first"), ("lockman", "apps_first"), ("global", "backup_first")):
            log(f"(b) {mode}, {order.replace('_', ' ')}: {p.makespan_apps} x {p.app_seconds:g}s apptasks + backup")
            run = self.makespan_run(mode, order)
            run["vs_ideal"] = _r(run["makespan_s"] / ideal)
            run["met"] = run["vs_ideal"] <= TARGET_MAKESPAN
            log(f"(b)   makespan {run['makespan_s']:.2f}s = {run['vs_ideal']:.2f}x ideal {ideal:.2f}s")
            runs.append(run)
        lockman_runs = [r for r in runs if r["mode"] == "lockman"]
        return {
            "apps": p.makespan_apps,
            "app_seconds": p.app_seconds,
            "backup_seconds_per_app": p.backup_seconds_per_app,
            "processes": p.concurrency,
            "total_work_s": _r(total),
            "ideal_s": _r(ideal),
            "ideal_basis": f"total work / {p.concurrency} (larger than any single task or chain)",
            "best_whole_task_schedule_s": _r(whole),
            "runs": runs,
            "target": TARGET_MAKESPAN,
            "met": all(r["met"] for r in lockman_runs),
        }

    # ------------------------------------------------------------------ (c) hand-off

    def handoff(self) -> dict[str, Any]:
        p = self.p
        in_flight = max(1, p.concurrency // 2)
        samples: list[float] = []
        not_waited = 0
        done = 0
        log(f"(c) hand-off: {p.handoff_pairs} pairs, {in_flight} at a time, holder works {p.handoff_hold:g}s")
        while done < p.handoff_pairs:
            batch = min(in_flight, p.handoff_pairs - done)
            pairs = []
            for _ in range(batch):
                a = self.new_app()
                first = self.send_locked(
                    "bench_app", {"app_id": a, "seconds": p.handoff_hold}, app_id=a, queue=self.q_app
                )
                second = self.send_locked(
                    "bench_app", {"app_id": a, "seconds": p.handoff_hold}, app_id=a, queue=self.q_app
                )
                pairs.append((first, second))
            rows = self.wait_final([t for pair in pairs for t in pair], timeout=60)
            for pair in pairs:
                if any(rows[t].state != "succeeded" for t in pair):
                    raise BenchError(f"hand-off pair {pair} did not succeed")
                earlier, later = sorted(pair, key=lambda t: rows[t].result["start"])
                if self.events.stamp(later, "task-waiting") is None:
                    not_waited += 1  # it was never blocked: no hand-off to measure
                    continue
                samples.append((rows[later].result["start"] - rows[earlier].result["end"]) * 1000)
            done += batch
        if not samples:
            raise BenchError("no hand-off was observed (no second task ever waited)")
        ordered = sorted(samples)
        p50, p99 = statistics.median(ordered), _percentile(ordered, 99)
        return {
            "method": "waiter body start - holder body end, time.time() on this host",
            "pairs": p.handoff_pairs,
            "measured": len(samples),
            "not_waited": not_waited,
            "median_ms": _r(p50, 1),
            "p99_ms": _r(p99, 1),
            "min_ms": _r(ordered[0], 1),
            "max_ms": _r(ordered[-1], 1),
            "target_median_ms": TARGET_HANDOFF_P50_MS,
            "target_p99_ms": TARGET_HANDOFF_P99_MS,
            "met": p50 <= TARGET_HANDOFF_P50_MS and p99 <= TARGET_HANDOFF_P99_MS,
        }

    # ------------------------------------------------------------------ (d) recovery

    def recovery(self) -> dict[str, Any]:
        p = self.p
        samples: list[float] = []
        noticed: list[float] = []
        log(f"(d) recovery: SIGKILL a holder's process while a waiter waits, {p.recovery_repeats} times")
        for _ in range(p.recovery_repeats):
            # The pool refills after a kill; start each repeat with every process there.
            wait_for(lambda: len(self.worker.children()) >= p.concurrency, timeout=30, what="pool refilled")
            a = self.new_app()
            holder = self.send_locked(
                "bench_app", {"app_id": a, "seconds": 120.0}, app_id=a, queue=self.q_app, expect="interrupted"
            )
            running = self.wait_row(holder, lambda r: r.state == "running" and r.percent > 0 and bool(r.pid), "working")
            waiter = self.send_locked("bench_app", {"app_id": a, "seconds": 0.0}, app_id=a, queue=self.q_app)
            self.wait_row(waiter, lambda r: r.state == "waiting", "waiting")
            pid = int(running.pid)
            if pid not in self.worker.children():
                raise BenchError(f"pid {pid} of task {holder} is not a pool process of the bench worker")
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            rows = self.wait_final([holder, waiter], timeout=60)
            if rows[holder].state != "interrupted" or rows[waiter].state != "succeeded":
                raise BenchError(f"recovery: holder {rows[holder].state}, waiter {rows[waiter].state}")
            samples.append(rows[waiter].result["start"] - killed)
            # The holder's row turns `interrupted` when the worker has noticed the death (it then
            # frees the locks and wakes the waiter): the two parts of the recovery time.
            noticed.append(_epoch(rows[holder].finished_at) - killed)
            log(f"(d)   waiter ran {samples[-1]:.3f}s after the SIGKILL (death recorded after {noticed[-1]:.3f}s)")
        return {
            "method": "waiter body start - time of os.kill(SIGKILL) of the holder's pool process",
            "repeats": len(samples),
            "median_s": _r(statistics.median(samples)),
            "max_s": _r(max(samples)),
            "samples_s": [_r(s) for s in samples],
            "death_recorded_after_s": [_r(s) for s in noticed],
            "target_s": TARGET_RECOVERY_S,
            "met": max(samples) <= TARGET_RECOVERY_S,
        }

    # ------------------------------------------------------------------ the end

    def audit(self) -> tuple[dict[str, Any], list[str]]:
        """Every task ended as intended, and no lock is left held or waited for."""
        errors: list[str] = []
        rows = self.rows(list(self.ledger.locked))
        unexpected = []
        for task_id, wanted in self.ledger.locked.items():
            r = rows.get(task_id)
            state = None if r is None else r.state
            if state != wanted:
                unexpected.append({"id": task_id, "type": r.type if r else None, "state": state, "wanted": wanted})
        bare_ok, bare_failed = self.events.done(self.ledger.bare)
        manager = LockManager.from_settings()
        try:
            table = manager.snapshot().table
        finally:
            manager.dispose()
        if table.holders or table.waiters:
            errors.append(f"locks left after the run: {table.to_json()}")
        if unexpected:
            errors.append(f"{len(unexpected)} task(s) did not end as intended, e.g. {unexpected[0]}")
        if bare_ok != len(self.ledger.bare):
            errors.append(f"{len(self.ledger.bare) - bare_ok} bare task(s) without a task-succeeded event")
        by_state: dict[str, int] = {}
        for r in rows.values():
            by_state[r.state] = by_state.get(r.state, 0) + 1
        summary = {
            "locked": {"sent": len(self.ledger.locked), "by_state": by_state},
            "bare": {"sent": len(self.ledger.bare), "succeeded": bare_ok, "failed": bare_failed},
            "interrupted_on_purpose": sum(1 for s in self.ledger.locked.values() if s == "interrupted"),
            "unexpected": unexpected[:20],
            "all_succeeded": not unexpected and bare_ok == len(self.ledger.bare),
            "locks_left": bool(table.holders or table.waiters),
        }
        return summary, errors


#: The figures by their letter in the docstring: (report key, Bench method).
PARTS = {
    "a": ("throughput", "throughput"),
    "b": ("makespan", "makespan"),
    "c": ("handoff", "handoff"),
    "d": ("recovery", "recovery"),
}


def _best_whole_task_schedule(n: int, app_seconds: float, backup_seconds: float, procs: int) -> float:
    """The shortest makespan when no task moves between processes (the apptasks are identical):
    put the backup on process 0 and try every split of the apptasks over the processes."""
    best = float("inf")

    def split(left: int, slots: int) -> list[list[int]]:
        if slots == 1:
            return [[left]]
        return [[k, *rest] for k in range(left + 1) for rest in split(left - k, slots - 1)]

    for counts in split(n, procs):
        span = max(c * app_seconds + (backup_seconds if i == 0 else 0.0) for i, c in enumerate(counts))
        best = min(best, span)
    return best


# ----------------------------------------------------------------------------- output


def _mark(met: bool) -> str:
    return "ok" if met else "MISSED"


def render_table(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"bench/task_rates.py{' --quick' if meta['quick'] else ''}: {meta['database']} + {meta['broker']}, "
        f"1 worker x {meta['concurrency']} processes, {meta['cpus']} CPUs, "
        f"load {meta['load_before']} -> {meta['load_after']}, {meta['elapsed_s']:.0f}s",
        "",
        f"{'figure':<52}{'measured':>18}  {'target':<14}",
    ]

    def add(name: str, value: str, target: str = "", met: bool | None = None) -> None:
        status = "" if met is None else _mark(met)
        lines.append(f"{name:<52}{value:>18}  {target:<14}{status}".rstrip())

    t = result.get("throughput")
    if t:
        runs = f"{t['n']} x {t['rounds']}"
        add(f"(a) bare Celery no-op (writes nothing), {runs}", f"{t['bare']['tasks_per_s']:.1f} tasks/s")
        add("(a) locked no-op apptask (task row + lock row)", f"{t['locked']['tasks_per_s']:.1f} tasks/s")
        add("(a) ratio locked / bare", f"{t['ratio']:.2f}", f">= {t['target']:.2f}", t["met"])
        add("    per round", ", ".join(f"{r:.2f}" for r in t["ratio_per_round"]))
        add("(a) references: our task row only, no locks", f"{t['row_only']['tasks_per_s']:.1f} tasks/s")
        add("    ratio row only / bare", f"{t['row_only_vs_bare']:.2f}", "(the record's cost)")
        add("    Celery no-op recorded in the same db", f"{t['celery_db']['tasks_per_s']:.1f} tasks/s")
        add("    ratio locked / Celery recorded in the same db", f"{t['vs_celery_db']['ratio']:.2f}", "(reference)")
        pre = t["prefilled"]
        drained = ", ".join(f"{k} {pre[k]['tasks_per_s']:.0f}" for k in ("bare", "celery_db", "row_only", "locked"))
        add("(a') queue pre-filled, drained at (tasks/s)", drained)
        add("(a') ratio locked / bare, worker only", f"{pre['ratio']:.2f}", "(reference)")
        add("    extra process time per locked task", f"{t['extra_process_ms_per_locked_task']:.1f} ms")
    m = result.get("makespan")
    if m:
        add(
            f"(b) ideal: total work {m['total_work_s']:g}s / {m['processes']}",
            f"{m['ideal_s']:.2f} s",
        )
        add("    best schedule keeping each task on one process", f"{m['best_whole_task_schedule_s']:.2f} s")
        for run in m["runs"]:
            label = f"(b) makespan, {'per-app locks' if run['mode'] == 'lockman' else 'one global lock'}"
            label += f", {run['order'].replace('_', ' ')}"
            value = f"{run['makespan_s']:.2f} s = {run['vs_ideal']:.2f}x"
            if run["mode"] == "lockman":
                add(label, value, f"<= {m['target']:.2f}x", run["met"])
            else:
                add(label, value, "(the old way)")
    h = result.get("handoff")
    if h:
        add(
            f"(c) hand-off median, {h['measured']} pairs",
            f"{h['median_ms']:.1f} ms",
            f"<= {h['target_median_ms']:.0f} ms",
            h["median_ms"] <= h["target_median_ms"],
        )
        add(
            "(c) hand-off p99",
            f"{h['p99_ms']:.1f} ms",
            f"<= {h['target_p99_ms']:.0f} ms",
            h["p99_ms"] <= h["target_p99_ms"],
        )
    d = result.get("recovery")
    if d:
        add(
            f"(d) recovery median, {d['repeats']} kills",
            f"{d['median_s']:.3f} s",
            f"<= {d['target_s']:.1f} s",
            d["median_s"] <= d["target_s"],
        )
        add("(d) recovery max", f"{d['max_s']:.3f} s", f"<= {d['target_s']:.1f} s", d["met"])
        seen = sorted(d["death_recorded_after_s"])
        add("    of which the worker noticing the death, median/max", f"{statistics.median(seen):.3f}/{seen[-1]:.3f} s")
    a = result.get("tasks")
    if a:
        lines += [
            "",
            f"tasks: {a['locked']['sent']} with a task row (locked and row-only) {a['locked']['by_state']} "
            f"({a['interrupted_on_purpose']} interrupted on purpose by (d)); "
            f"{a['bare']['succeeded']}/{a['bare']['sent']} Celery-only (bare and recorded by Celery) succeeded; "
            f"all as intended: {a['all_succeeded']}",
        ]
    for err in result["errors"]:
        lines.append(f"ERROR: {err}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter work: a smoke test")
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE, help=f"server to make the bench database on [{DEFAULT_DATABASE}]"
    )
    parser.add_argument("--broker-url", default=DEFAULT_BROKER, help=f"Celery broker [{DEFAULT_BROKER}]")
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes [4]")
    parser.add_argument(
        "--only", default="a,b,c,d", help="which figures to measure, e.g. --only a (throughput) [a,b,c,d]"
    )
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if not parts or parts - set(PARTS):
        parser.error(f"--only takes a comma-separated subset of {','.join(PARTS)} (got {args.only!r})")
    params = replace(QUICK if args.quick else Params(), concurrency=args.concurrency)
    if params.concurrency < 2:
        parser.error("--concurrency must be at least 2 (a holder and a waiter)")

    signal.signal(signal.SIGTERM, raise_on_sigterm)
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    scratch = Path(tempfile.mkdtemp(prefix=f"bench_tasks_{run}_"))
    result: dict[str, Any] = {"bench": "tasks", "errors": []}
    meta: dict[str, Any] = {
        "quick": args.quick,
        "database": make_url(args.database_url).get_backend_name(),
        "broker": make_url(args.broker_url).drivername if "://" in args.broker_url else args.broker_url,
        "concurrency": params.concurrency,
        "cpus": os.cpu_count(),
        "load_before": load_average(),
        "params": params.__dict__,
    }
    worker: Worker | None = None
    events: EventLog | None = None
    queues = [f"bench_{run}_apptask", f"bench_{run}_backup"]
    staged = f"bench_{run}_staged"
    try:
        with bench_database(args.database_url) as url:
            variables = {
                "BOXTASKS_DATABASE_URL": url,
                "BOXTASKS_BROKER_URL": args.broker_url,
                "BOXTASKS_DATA_DIR": str(scratch / "data"),
                "BOXTASKS_LOCK_LEASE_SECONDS": "30",
            }
            apply_environment(variables)
            nodename = f"bench-{run}@{os.uname().nodename}"
            try:
                events = EventLog(nodename).start()
                log(f"starting worker {nodename} (-c {params.concurrency}, queues {', '.join(queues)}); log {scratch}")
                worker = Worker(
                    variables, scratch / "worker.log", nodename=nodename, queues=queues, concurrency=params.concurrency
                )
                worker.start()  # assigned first: a worker that never gets ready is stopped all the same
                bench = Bench(params, worker, events, run)
                for part, (key, measure) in PARTS.items():
                    if part in parts:
                        result[key] = getattr(bench, measure)()
                result["tasks"], errors = bench.audit()
                result["errors"] += errors
            finally:
                if worker is not None:
                    worker.stop()
                if events is not None:
                    events.stop()
                try:
                    delete_queues([*queues, staged])
                    get_engine().dispose()
                except Exception as err:  # tidying up must not hide what went wrong before
                    log(f"cleanup: {type(err).__name__}: {err}")
    except BaseException as err:  # recorded in the report, which is printed whatever happened
        record_failure(result, err, worker, (BenchError, TimeoutError, RuntimeError))
    return finish_run(result, meta, started=started, scratch=scratch, as_json=args.json, render=render_table)


if __name__ == "__main__":
    sys.exit(main())
