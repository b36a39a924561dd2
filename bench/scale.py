"""Scale figures: 1,000 apps, a full backup beside 200 apptasks on 8 processes; the lock row's ceiling.

    .venv/bin/python -m bench.scale                  # readable table, each figure beside its target
    .venv/bin/python -m bench.scale --quick --json   # a smoke test, one JSON object on stdout

One run makes its own database on the server (`bt_bench_<random>`, migrated, dropped at the end)
and its own queues (`bench_<run>_apptask`, `_backup`, deleted at the end), with the rig of
`bench/task_rates.py` (`bench/taskrig.py`). Every figure is measured in this run; none is compared
with a remembered number.

(a) load. 1,000 App rows are inserted directly (installation_state `installed`; no Docker, no
    data). One worker, `celery -A tasks worker -I bench.scalekinds -c 8` (one node, 8 pool
    processes), consumes both queues. Sent at once: a full backup (`scale_backup`: plan
    `task:fullbackup` X + `platform` S, then `app:<id>` X for each of the 1,000 apps one at a
    time through `hosting.backups.fullbackup.back_up_apps`, 1 ms of sleep per app), then 200 apptasks
    (`scale_app`: plan `platform` S + `app:<id>` X on an app drawn at random, so a few share an
    app, 20-200 ms of sleep drawn at random, seeded).
    * lock acquire: the granting compare-and-swap, as the runner records it in `tasks.locks`
      (`acquire_ms`, `cas_retries`) for every task's own plan; for the backup's 1,000 nested
      per-app grants, timed inside the bench kind around the same call (`LockManager.try_acquire`).
      Waiting for a busy lock is not in these figures (a waiting task holds no process).
    * tasks/s: tasks / makespan; makespan: first enqueue to the last `finished_at` (database
      clock, this host). Ideal: total work (the sleeps: apptasks' + 1,000 x 1 ms) / 8 processes,
      or the longest single task's work if that is longer.
    * peak RSS of a pool process: VmHWM of each pool process (the worker's children) read from
      /proc at the end, and VmRSS sampled every 0.2 s during the run.
(b) ceiling of the one lock row. N processes (1, 2, 4, 8, 16, 32; multiprocessing, fork) each
    with its own `LockManager`, no Celery, hammer acquire + release of an apptask's plan on a key
    of their own (`platform` S + `app:<i>` X: no two conflict, all write the one row). A lock op
    is one acquire or one release, each a write of the row: ops/s = 2 x pairs/s. Reported: the
    ops/s at which p99 acquire passes 50 ms (linear interpolation between the two N around it),
    or "not reached up to" the highest ops/s seen.

Exit status: 0 when every task succeeded and no lock was left (targets missed are printed MISSED,
not failed), 1 on an error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import queue
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Row, Table, create_engine, insert, select
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
)
from lockman import LockManager, lock_set
from models import FINAL_STATES, App, Task, get_engine
from tasks.client import enqueue

DEFAULT_DATABASE = os.environ.get("BOXTASKS_BENCH_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306")
DEFAULT_BROKER = os.environ.get("BOXTASKS_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")

TARGET_P99_MS = 50.0

_tasks: Table = Task.__table__  # type: ignore[assignment]
_apps: Table = App.__table__  # type: ignore[assignment]
_FINAL = {s.value for s in FINAL_STATES}


@dataclass(frozen=True)
class Params:
    apps: int = 1000
    apptasks: int = 200
    concurrency: int = 8
    work_min_s: float = 0.02
    work_max_s: float = 0.2
    backup_seconds_per_app: float = 0.001
    seed: int = 7
    ceiling_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    ceiling_seconds: float = 4.0
    ceiling_warmup: float = 0.5


QUICK = Params(apps=100, apptasks=20, ceiling_ns=(1, 2, 4), ceiling_seconds=1.0, ceiling_warmup=0.25)


class BenchError(Exception):
    """Something went wrong that makes a figure meaningless (not a missed target)."""


def _percentile(ordered: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _epoch(value: dt.datetime | None) -> float:
    if value is None:
        raise BenchError("a finished task has no finished_at")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _spread(samples: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": _r(_percentile(ordered, 50)),
        "p99_ms": _r(_percentile(ordered, 99)),
        "max_ms": _r(ordered[-1] if ordered else None),
    }


# ----------------------------------------------------------------------------- memory of the pool


def _status_kib(pid: int, key: str) -> int | None:
    """A `VmXXX:` line of /proc/<pid>/status, in KiB; None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler:
    """Samples VmRSS of the worker's pool processes every `interval` seconds, keeping each one's peak."""

    def __init__(self, worker: Worker, interval: float = 0.2) -> None:
        self.worker = worker
        self.interval = interval
        self.peak_kib: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.worker.children():
                rss = _status_kib(pid, "VmRSS")
                if rss is not None and rss > self.peak_kib.get(pid, 0):
                    self.peak_kib[pid] = rss
            self._stop.wait(self.interval)


# ----------------------------------------------------------------------------- (a) the load


class ScaleRun:
    def __init__(self, params: Params, worker: Worker, events: EventLog, run: str) -> None:
        self.p = params
        self.worker = worker
        self.events = events
        self.run = run
        self.q_app = f"bench_{run}_apptask"
        self.q_backup = f"bench_{run}_backup"
        self.engine = get_engine()
        self.app_ids = [f"s{run}-{i:05d}" for i in range(params.apps)]
        self.warmup_ids: list[str] = []

    def insert_apps(self) -> float:
        started = time.monotonic()
        rows = [
            {
                "id": app_id,
                "app_store_id": "io.boxtasks.bench",
                "manifest": {"id": "io.boxtasks.bench", "version": "1.0.0"},
                "version": "1.0.0",
                "location": f"{app_id}.bench.test",
                "installation_state": "installed",
                "run_state": "running",
            }
            for app_id in self.app_ids
        ]
        with self.engine.begin() as conn:
            for i in range(0, len(rows), 500):
                conn.execute(insert(_apps), rows[i : i + 500])
        return time.monotonic() - started

    def rows(self, ids: Sequence[str]) -> dict[str, Row[Any]]:
        found: dict[str, Row[Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                found.update({r.id: r for r in conn.execute(select(_tasks).where(_tasks.c.id.in_(chunk)))})
        return found

    def wait_final(self, ids: Sequence[str], timeout: float) -> dict[str, Row[Any]]:
        stmt = select(_tasks.c.id, _tasks.c.state).where(_tasks.c.id.in_(list(ids)))
        deadline = time.monotonic() + timeout
        while True:
            with self.engine.connect() as conn:
                states = {r.id: r.state for r in conn.execute(stmt)}
            if len(states) == len(ids) and all(s in _FINAL for s in states.values()):
                return self.rows(ids)
            if time.monotonic() >= deadline:
                left = sorted({s for s in states.values() if s not in _FINAL})
                raise BenchError(f"{sum(s not in _FINAL for s in states.values())} task(s) not final: {left}")
            time.sleep(0.05)

    def warm_up(self) -> dict[str, Any]:
        """Every pool process makes its connections and first statements before anything is timed.

        `concurrency` apptasks that each hold a process for a moment, twice: the first acquire of a
        fresh process includes opening its database connections (hundreds of ms on a busy machine).
        Their apps are not in the apps table, so the full backup never sees them.
        """
        p = self.p
        samples: list[float] = []
        for rnd in range(2):
            ids = [
                enqueue("scale_app", {"app_id": f"w{self.run}-{rnd}-{i}", "seconds": 0.3}, queue=self.q_app)
                for i in range(p.concurrency)
            ]
            rows = self.wait_final(ids, timeout=120)
            bad = [r for r in rows.values() if r.state != "succeeded"]
            if bad:
                raise BenchError(f"warm-up: {len(bad)} task(s) did not succeed: {bad[0].state} {bad[0].message}")
            samples += [float(r.locks["acquire_ms"]) for r in rows.values()]
            self.warmup_ids += ids
        pids = {r.pid for r in self.rows(self.warmup_ids).values()}
        return {"tasks": len(samples), "processes_used": len(pids), "acquire": _spread(samples)}

    def load(self) -> dict[str, Any]:
        p = self.p
        rnd = random.Random(p.seed)
        work = [(rnd.choice(self.app_ids), rnd.uniform(p.work_min_s, p.work_max_s)) for _ in range(p.apptasks)]
        log(f"(a) sending a full backup over {p.apps} apps and {p.apptasks} apptasks")
        sampler = RssSampler(self.worker).start()
        try:
            t0 = time.time()
            backup_id = enqueue(
                "scale_backup", {"seconds_per_app": p.backup_seconds_per_app}, app_id=None, queue=self.q_backup
            )
            app_ids = [
                enqueue("scale_app", {"app_id": a, "seconds": round(s, 4)}, app_id=a, queue=self.q_app) for a, s in work
            ]
            enqueue_s = time.time() - t0
            ids = [backup_id, *app_ids]
            rows = self.wait_final(ids, timeout=240)
            # Peaks over the whole life of each pool process, read before the worker stops.
            hwm = {pid: _status_kib(pid, "VmHWM") for pid in self.worker.children()}
            main_hwm = _status_kib(self.worker.proc.pid, "VmHWM") if self.worker.proc else None
        finally:
            sampler.stop()
        self.events.wait_done(ids, timeout=5)

        by_state: dict[str, int] = {}
        for r in rows.values():
            by_state[r.state] = by_state.get(r.state, 0) + 1
        failed = [r for r in rows.values() if r.state != "succeeded"]
        snap_manager = LockManager.from_settings()
        try:
            table = snap_manager.snapshot().table
        finally:
            snap_manager.dispose()
        tasks = {
            "sent": len(ids),
            "by_state": by_state,
            "all_succeeded": not failed,
            "failed": [{"id": r.id, "type": r.type, "state": r.state, "message": r.message} for r in failed[:10]],
            "locks_left": bool(table.holders or table.waiters),
        }
        if failed:
            raise _Partial(tasks, f"{len(failed)} task(s) did not succeed, e.g. {failed[0].state}: {failed[0].message}")
        if tasks["locks_left"]:
            raise _Partial(tasks, f"locks left after the run: {table.to_json()}")

        end = max(_epoch(r.finished_at) for r in rows.values())
        apps_end = max(_epoch(rows[t].finished_at) for t in app_ids)
        makespan = end - t0
        backup = rows[backup_id]
        b = backup.result
        if b["copied"] != p.apps:
            raise _Partial(tasks, f"the backup copied {b['copied']} of {p.apps} apps")

        top = [float(r.locks["acquire_ms"]) for r in rows.values()]
        app_top = [float(rows[t].locks["acquire_ms"]) for t in app_ids]
        nested = [float(x) for x in b["grant_ms"]]
        top_retries = sum(int(r.locks["cas_retries"]) for r in rows.values())
        nested_retries = sum(b["grant_conflicts"])
        every = top + nested
        all_spread = _spread(every)

        app_work = sum(s for _, s in work)
        backup_work = p.apps * p.backup_seconds_per_app
        total_work = app_work + backup_work
        longest = max(backup_work, *(s for _, s in work))
        ideal = max(total_work / p.concurrency, longest)
        waited = sum(1 for t in app_ids if self.events.stamp(t, "task-waiting") is not None)
        per_app_lock_ms = (b["loop_s"] - backup_work) / max(1, p.apps) * 1000

        children_hwm = {pid: kib for pid, kib in hwm.items() if kib is not None}
        rss = {
            "pool_processes": len(children_hwm),
            "pool_peak_hwm_mib": _r(max(children_hwm.values()) / 1024, 1) if children_hwm else None,
            "pool_hwm_mib": [round(k / 1024, 1) for k in sorted(children_hwm.values())],
            "sampled_peak_rss_mib": _r(max(sampler.peak_kib.values()) / 1024, 1) if sampler.peak_kib else None,
            "sampled_processes": len(sampler.peak_kib),
            "main_process_hwm_mib": _r(main_hwm / 1024, 1) if main_hwm else None,
        }
        return {
            "apps": p.apps,
            "apptasks": p.apptasks,
            "processes": p.concurrency,
            "worker": f"one worker node, -c {p.concurrency} (prefork), consuming the apptask and backup queues",
            "tasks": tasks,
            "acquire": {
                "method": "the granting compare-and-swap (LockManager.try_acquire that returned Granted), ms; "
                "top-level: tasks.locks.acquire_ms as the runner records it; nested: timed in scale_backup",
                "top_level": _spread(top),
                "apptasks": _spread(app_top),
                "backup_top_level_ms": _r(float(backup.locks["acquire_ms"])),
                "slowest_apptasks": [
                    {"acquire_ms": r.locks["acquire_ms"], "cas_retries": r.locks["cas_retries"], "pid": r.pid}
                    for r in sorted(
                        (rows[t] for t in app_ids), key=lambda r: float(r.locks["acquire_ms"]), reverse=True
                    )[:5]
                ],
                "nested": _spread(nested),
                "all": all_spread,
                "target_p99_ms": TARGET_P99_MS,
                "met": all_spread["p99_ms"] is not None and all_spread["p99_ms"] < TARGET_P99_MS,
            },
            "cas_retries": {
                "top_level_total": top_retries,
                "top_level_per_acquire": _r(top_retries / len(top)),
                "nested_total": nested_retries,
                "nested_per_acquire": _r(nested_retries / max(1, len(nested))),
                "nested_refused_tries": len(b["refused_ms"]),
                "nested_refused_conflicts": b["refused_conflicts"],
                "nested_release_conflicts": b["release_conflicts"],
            },
            "throughput": {
                "tasks_per_s": _r(len(ids) / makespan, 1),
                "apptasks_per_s": _r(len(app_ids) / (apps_end - t0), 1),
                "enqueue_s": _r(enqueue_s),
            },
            "makespan": {
                "makespan_s": _r(makespan),
                "apptasks_done_s": _r(apps_end - t0),
                "backup_body_s": _r(b["end"] - b["start"]),
                "backup_body_start_s": _r(b["start"] - t0),
                "total_work_s": _r(total_work),
                "apptask_work_s": _r(app_work),
                "backup_work_s": _r(backup_work),
                "ideal_s": _r(ideal),
                "ideal_basis": f"max(total work / {p.concurrency} processes, longest single task's work); "
                "work = the sleeps: apptasks' drawn seconds + apps x seconds per app of the backup",
                "vs_ideal": _r(makespan / ideal, 2),
            },
            "backup": {
                "copied": b["copied"],
                "deferred": b["deferred"],
                "loop_s": b["loop_s"],
                "per_app_overhead_ms": _r(per_app_lock_ms, 2),
                "release": _spread([float(x) for x in b["release_ms"]]),
                "overhead_note": "per app, beside its 1 ms of work: a progress write + event, try_acquire (CAS), "
                "the task row's locks write, release (CAS), the locks write again",
                "breakdown_ms_per_app": _breakdown(b, p.apps),
            },
            "waited": waited,
            "rss": rss,
        }


def _breakdown(b: dict[str, Any], apps: int) -> dict[str, float | None]:
    """Where the backup's time per app goes, from the step and CAS timings its body returned."""
    steps = b["steps"]
    per = 1000 / max(1, apps)
    acquire_cas = (sum(b["grant_ms"]) + sum(b["refused_ms"])) / max(1, apps)
    release_cas = sum(b["release_ms"]) / max(1, apps)
    acquire_step = (steps["try_acquire_more"]["total_s"] + steps["acquire_more"]["total_s"]) * per
    release_step = steps["release_some"]["total_s"] * per
    progress = steps["progress"]["total_s"] * per
    loop = b["loop_s"] * per
    parts = {
        "progress_write_and_event": progress,
        "acquire_cas": acquire_cas,
        "acquire_locks_write": acquire_step - acquire_cas,
        "release_cas": release_cas,
        "release_locks_write_and_wake": release_step - release_cas,
    }
    parts["work_and_rest"] = loop - sum(parts.values())
    parts["total"] = loop
    return {k: _r(v, 2) for k, v in parts.items()}


class _Partial(BenchError):
    """A load that ran but did not end as intended: carries the task summary for the report."""

    def __init__(self, tasks: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.tasks = tasks


# ----------------------------------------------------------------------------- (b) the ceiling


def _hammer(url: str, row_id: str, owner: str, idx: int, barrier: Any, times: Any, out: Any) -> None:
    """One process: acquire + release of its own key, as fast as it can, between the given times."""
    result: dict[str, Any] = {"idx": idx, "pairs": 0, "latencies_ms": [], "conflicts": 0, "cpu_s": 0.0, "error": None}
    manager: LockManager | None = None
    try:
        manager = LockManager(url, row_id=row_id, lease=600.0)
        plan = lock_set({"platform": "S", f"app:{idx}": "X"})
        manager.heartbeat(owner)
        manager.snapshot()
        barrier.wait(timeout=120)  # connected
        barrier.wait(timeout=120)  # the times are set
        start, measure, stop = times[0], times[1], times[2]
        while time.monotonic() < start:
            time.sleep(0.001)
        latencies: list[float] = []
        cpu_from: float | None = None
        while True:
            began = time.monotonic()
            if began >= stop:
                break
            if cpu_from is None and began >= measure:
                cpu_from = time.process_time()
            before = manager.stats.cas_conflicts
            manager.acquire(owner, plan, label="bench")
            granted = time.monotonic()
            manager.release(owner)
            if began >= measure:
                result["pairs"] += 1
                latencies.append((granted - began) * 1000)
                result["conflicts"] += manager.stats.cas_conflicts - before
        result["latencies_ms"] = latencies
        result["cpu_s"] = 0.0 if cpu_from is None else time.process_time() - cpu_from
    except BaseException as err:  # reported to the parent, which counts it as an error
        result["error"] = f"{type(err).__name__}: {err}"
    finally:
        if manager is not None:
            with suppress(Exception):
                manager.dispose()
        out.put(result)


def _owners(url: str, n: int, run: str) -> list[str]:
    """Task rows for the hammering owners (running; each process stamps its heartbeat): owners are tasks."""
    owners = [f"ceiling-{run}-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(_tasks),
                [
                    {
                        "id": o,
                        "type": "bench_ceiling",
                        "queue": "none",
                        "args": {},
                        "state": "running",
                        "percent": 0,
                        "message": "",
                        "locks": {},
                    }
                    for o in owners
                ],
            )
    finally:
        engine.dispose()
    return owners


def database_server_pid(url: str) -> int | None:
    """The pid of the MariaDB/MySQL server when it runs on this host (to read its CPU time), else None."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("mysql", "mariadb") or parsed.host not in (
        None,
        "",
        "127.0.0.1",
        "localhost",
        "::1",
    ):
        return None
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("mariadbd", "mysqld"):
                return int(comm.parent.name)
        except (OSError, ValueError):
            continue
    return None


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (from /proc/<pid>/stat)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat: the machine's use, whoever used it."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def ceiling_group(url: str, n: int, p: Params, run: str) -> dict[str, Any]:
    row_id = f"ceiling_{run}_{n}"
    manager = LockManager(url, row_id=row_id, lease=600.0)
    try:
        manager.ensure_row()
    finally:
        manager.dispose()
    owners = _owners(url, n, run)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n + 1)
    times = ctx.Array("d", 3, lock=False)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(url, row_id, owners[i], i, barrier, times, out), daemon=True)
        for i in range(n)
    ]
    results: list[dict[str, Any]] = []
    try:
        for proc in procs:
            proc.start()
        barrier.wait(timeout=120)
        now = time.monotonic()
        times[0], times[1] = now + 0.05, now + 0.05 + p.ceiling_warmup
        times[2] = times[1] + p.ceiling_seconds
        barrier.wait(timeout=120)
        server = database_server_pid(url)
        time.sleep(max(0.0, times[1] - time.monotonic()))
        server_cpu_from, machine_from = _cpu_seconds(server), _machine_ticks()
        time.sleep(max(0.0, times[2] - time.monotonic()))
        server_cpu_to, machine_to = _cpu_seconds(server), _machine_ticks()
        deadline = time.monotonic() + 60
        while len(results) < n and time.monotonic() < deadline:
            with suppress(queue.Empty):
                results.append(out.get(timeout=1))
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    errors = [f"N={n} process {r['idx']}: {r['error']}" for r in results if r["error"]]
    if len(results) < n:
        errors.append(f"N={n}: only {len(results)} of {n} processes reported")
    manager = LockManager(url, row_id=row_id, lease=600.0)
    try:
        table = manager.snapshot().table
    finally:
        manager.dispose()
    if table.holders or table.waiters:
        errors.append(f"N={n}: lock row not empty after the run: {table.to_json()}")
    pairs = sum(r["pairs"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    conflicts = sum(r["conflicts"] for r in results)
    pairs_per_s = pairs / p.ceiling_seconds
    client_cpu = sum(r.get("cpu_s", 0.0) for r in results)
    server_cpu = server_cpu_to - server_cpu_from if server_cpu_from is not None and server_cpu_to is not None else None
    cpus = os.cpu_count() or 1
    machine = None
    if machine_from is not None and machine_to is not None and machine_to[1] > machine_from[1]:
        machine = (machine_to[0] - machine_from[0]) / (machine_to[1] - machine_from[1]) * 100
    return {
        "n": n,
        "pairs": pairs,
        "pairs_per_s": _r(pairs_per_s, 1),
        "lock_ops_per_s": _r(2 * pairs_per_s, 1),
        "acquire_p50_ms": _r(_percentile(latencies, 50)),
        "acquire_p99_ms": _r(_percentile(latencies, 99)),
        "acquire_max_ms": _r(latencies[-1] if latencies else None),
        "cas_retries_per_pair": _r(conflicts / pairs if pairs else 0.0),
        "client_cpu_ms_per_pair": _r(client_cpu / pairs * 1000 if pairs else None),
        "db_cpu_ms_per_pair": _r(server_cpu / pairs * 1000 if pairs and server_cpu is not None else None),
        "cpu_busy_percent": _r((client_cpu + (server_cpu or 0.0)) / (cpus * p.ceiling_seconds) * 100, 1),
        "machine_busy_percent": _r(machine, 1),
        "errors": errors,
    }


def crossing(runs: Sequence[dict[str, Any]], target: float = TARGET_P99_MS) -> dict[str, Any]:
    """The lock ops/s at which p99 acquire passes `target`: interpolated between the N below and above."""
    best = max((r["lock_ops_per_s"] for r in runs), default=0.0)
    previous: dict[str, Any] | None = None
    for r in runs:
        p99 = r["acquire_p99_ms"]
        if p99 is not None and p99 > target:
            if previous is None:
                return {
                    "ops_per_s": r["lock_ops_per_s"],
                    "between_n": [r["n"], r["n"]],
                    "verdict": f"p99 acquire is {p99:.1f} ms > {target:g} ms already at N={r['n']} "
                    f"({r['lock_ops_per_s']:.0f} ops/s)",
                    "max_ops_per_s": best,
                }
            p0, ops0 = previous["acquire_p99_ms"], previous["lock_ops_per_s"]
            frac = (target - p0) / (p99 - p0) if p99 != p0 else 1.0
            ops = ops0 + frac * (r["lock_ops_per_s"] - ops0)
            return {
                "ops_per_s": _r(ops, 1),
                "between_n": [previous["n"], r["n"]],
                "verdict": f"p99 acquire passes {target:g} ms at about {ops:.0f} lock ops/s "
                f"(between N={previous['n']} and N={r['n']}, interpolated)",
                "max_ops_per_s": best,
            }
        previous = r
    last_n = runs[-1]["n"] if runs else 0
    return {
        "ops_per_s": None,
        "between_n": None,
        "verdict": f"not reached up to {best:.0f} lock ops/s (N up to {last_n})",
        "max_ops_per_s": best,
    }


def ceiling(url: str, p: Params, run: str) -> dict[str, Any]:
    runs = []
    for n in p.ceiling_ns:
        r = ceiling_group(url, n, p, run)
        log(
            f"(b) N={n:<3} {r['pairs_per_s']:8.1f} pairs/s = {r['lock_ops_per_s']:8.1f} ops/s  "
            f"p50 {r['acquire_p50_ms']} ms  p99 {r['acquire_p99_ms']} ms  retries/pair {r['cas_retries_per_pair']}"
        )
        runs.append(r)
    return {
        "method": "N processes, each its own LockManager, acquire + release of platform S + app:<i> X "
        "(distinct keys, one lock row); lock op = one acquire or one release (a row write)",
        "seconds": p.ceiling_seconds,
        "runs": runs,
        "target_p99_ms": TARGET_P99_MS,
        "crossing": crossing(runs),
    }


# ----------------------------------------------------------------------------- output


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _mark(met: bool) -> str:
    return "ok" if met else "MISSED"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_table(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"bench/scale.py{' --quick' if meta['quick'] else ''}: {meta['database']} + {meta['broker']}, "
        f"{meta['cpus']} CPUs, load {meta['load_before']} -> {meta['load_after']}, {meta['elapsed_s']:.0f}s",
    ]

    def add(name: str, value: str, target: str = "", status: str = "") -> None:
        lines.append(f"{name:<58}{value:>22}  {target:<10}{status}".rstrip())

    s = result.get("scale")
    if s:
        a, m, t, c = s["acquire"], s["makespan"], s["throughput"], s["cas_retries"]
        lines += [
            f"(a) {s['apps']} apps, a full backup + {s['apptasks']} apptasks; {s['worker']}",
            "",
            f"{'figure':<58}{'measured':>22}  target",
        ]
        target = f"< {a['target_p99_ms']:g} ms"
        for key, label in (
            ("apptasks", "acquire, apptasks' own plans"),
            ("nested", "acquire, backup's nested app:<id> grants"),
            ("all", "acquire, every granting CAS"),
        ):
            sp = a[key]
            p99 = sp["p99_ms"]
            status = "" if p99 is None else _mark(p99 < a["target_p99_ms"])
            add(f"(a) {label} (n={sp['n']}) p50/p99", f"{_ms(sp['p50_ms'])} / {_ms(p99)} ms", target, status)
        add("(a) backup's own plan acquire", f"{_ms(a['backup_top_level_ms'])} ms")
        w = s.get("warmup")
        if w:
            wa = w["acquire"]
            add(
                f"    warm-up before timing, {w['tasks']} apptasks on {w['processes_used']} procs, p50/p99",
                f"{_ms(wa['p50_ms'])} / {_ms(wa['p99_ms'])} ms",
                "(not timed)",
            )
        add(
            "(a) CAS retries: own plans / nested grants",
            f"{c['top_level_total']} ({c['top_level_per_acquire']:.2f}/acq) / "
            f"{c['nested_total']} ({c['nested_per_acquire']:.2f}/acq)",
        )
        add("(a) apptasks that waited for a lock", str(s["waited"]))
        add(f"(a) tasks/s ({s['tasks']['sent']} tasks / makespan)", f"{t['tasks_per_s']:.1f} tasks/s")
        add("    apptasks/s (until the last apptask ended)", f"{t['apptasks_per_s']:.1f} tasks/s")
        add(f"(a) ideal: total work {m['total_work_s']:.2f}s / {s['processes']}", f"{m['ideal_s']:.2f} s")
        add("(a) makespan (first enqueue to last end)", f"{m['makespan_s']:.2f} s = {m['vs_ideal']:.2f}x")
        add("    last apptask ended at", f"{m['apptasks_done_s']:.2f} s")
        b = s["backup"]
        add(
            f"    backup body ({b['copied']} apps, {b['deferred']} deferred)",
            f"{m['backup_body_s']:.2f} s",
        )
        add("    backup's lock + record overhead per app", f"{b['per_app_overhead_ms']:.2f} ms")
        bd = b["breakdown_ms_per_app"]
        lines.append(
            f"    per app: progress write+event {bd['progress_write_and_event']:.2f}, acquire CAS "
            f"{bd['acquire_cas']:.2f} + locks write {bd['acquire_locks_write']:.2f}, release CAS "
            f"{bd['release_cas']:.2f} + locks write/wake {bd['release_locks_write_and_wake']:.2f}, "
            f"work+rest {bd['work_and_rest']:.2f} ms"
        )
        rss = s["rss"]
        add(
            f"(a) peak RSS of a pool process (VmHWM, {rss['pool_processes']} procs)",
            f"{rss['pool_peak_hwm_mib']} MiB",
        )
        add(
            "    sampled VmRSS peak / worker main process VmHWM",
            f"{rss['sampled_peak_rss_mib']} / {rss['main_process_hwm_mib']} MiB",
        )
    cl = result.get("ceiling")
    if cl:
        lines += [
            "",
            f"(b) the one lock row: N processes, own LockManager each, acquire + release on distinct keys, "
            f"{cl['seconds']:g}s each",
            f"{'N':>4}{'pairs/s':>11}{'lock ops/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'retries/pair':>14}"
            f"{'CPU ms/pair client+db':>24}{'run busy':>10}{'machine':>9}",
        ]
        for r in cl["runs"]:
            cpu = f"{_ms(r['client_cpu_ms_per_pair'])} + {_ms(r['db_cpu_ms_per_pair'])}"
            lines.append(
                f"{r['n']:>4}{r['pairs_per_s']:>11.1f}{r['lock_ops_per_s']:>12.1f}{_ms(r['acquire_p50_ms']):>9}"
                f"{_ms(r['acquire_p99_ms']):>9}{r['cas_retries_per_pair']:>14.2f}{cpu:>24}"
                f"{r['cpu_busy_percent']:>9.0f}%{_pct(r['machine_busy_percent']):>9}"
            )
        lines.append(
            f"    run busy = CPU time of the N processes + the database server / ({meta['cpus']} CPUs x "
            f"{cl['seconds']:g}s); machine = all CPUs busy, whoever used them (/proc/stat)"
        )
        lines.append(f"(b) {cl['crossing']['verdict']}")
    tasks = (s or {}).get("tasks") or result.get("tasks")
    if tasks:
        lines += ["", f"tasks: {tasks['sent']} sent {tasks['by_state']}; all succeeded: {tasks['all_succeeded']}"]
    for err in result["errors"]:
        lines.append(f"ERROR: {err}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE, help=f"server to make the bench database on [{DEFAULT_DATABASE}]"
    )
    parser.add_argument("--broker-url", default=DEFAULT_BROKER, help=f"Celery broker [{DEFAULT_BROKER}]")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else Params()

    signal.signal(signal.SIGTERM, raise_on_sigterm)
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    scratch = Path(tempfile.mkdtemp(prefix=f"bench_scale_{run}_"))
    result: dict[str, Any] = {"bench": "scale", "errors": []}
    meta: dict[str, Any] = {
        "quick": args.quick,
        "database": make_url(args.database_url).get_backend_name(),
        "broker": make_url(args.broker_url).drivername if "://" in args.broker_url else args.broker_url,
        "cpus": os.cpu_count(),
        "load_before": load_average(),
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.__dict__.items()},
    }
    worker: Worker | None = None
    events: EventLog | None = None
    queues = [f"bench_{run}_apptask", f"bench_{run}_backup"]
    try:
        with bench_database(args.database_url) as url:
            variables = {
                "BOXTASKS_DATABASE_URL": url,
                "BOXTASKS_BROKER_URL": args.broker_url,
                "BOXTASKS_DATA_DIR": str(scratch / "data"),
                "BOXTASKS_LOCK_LEASE_SECONDS": "30",
            }
            apply_environment(variables)
            nodename = f"bench-scale-{run}@{os.uname().nodename}"
            try:
                events = EventLog(nodename).start()
                log(f"starting worker {nodename} (-c {params.concurrency}, queues {', '.join(queues)}); log {scratch}")
                worker = Worker(
                    variables,
                    scratch / "worker.log",
                    nodename=nodename,
                    queues=queues,
                    concurrency=params.concurrency,
                    kinds_module="bench.scalekinds",
                )
                worker.start()
                scale = ScaleRun(params, worker, events, run)
                inserted = scale.insert_apps()
                log(f"(a) {params.apps} apps inserted in {inserted:.2f}s")
                log(f"(a) warm-up: {2 * params.concurrency} apptasks of 0.3 s")
                warm = scale.warm_up()
                try:
                    result["scale"] = scale.load()
                except _Partial as err:
                    result["tasks"] = err.tasks
                    raise
                result["scale"]["insert_apps_s"] = _r(inserted)
                result["scale"]["warmup"] = warm
            finally:
                if worker is not None:
                    worker.stop()
                if events is not None:
                    events.stop()
                try:
                    delete_queues(queues)
                    get_engine().dispose()
                except Exception as err:  # tidying up must not hide what went wrong before
                    log(f"cleanup: {type(err).__name__}: {err}")
            # The worker is gone: the ceiling runs alone on the database (in the same bench database).
            log(f"(b) the lock row's ceiling: N = {', '.join(map(str, params.ceiling_ns))}")
            result["ceiling"] = ceiling(url, params, run)
            result["errors"] += [e for r in result["ceiling"]["runs"] for e in r["errors"]]
    except BaseException as err:  # recorded in the report, which is printed whatever happened
        record_failure(result, err, worker, (BenchError, TimeoutError, RuntimeError))
    return finish_run(result, meta, started=started, scratch=scratch, as_json=args.json, render=render_table)


if __name__ == "__main__":
    sys.exit(main())
