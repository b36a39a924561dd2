"""Many processes, one lock row: mutual exclusion and no lost update, measured from the outside.

Every worker process is its own task (a row in `tasks`, a heartbeat thread) with its own
LockManager. It takes random lock sets (platform S or X, app:a..d X, sometimes one more app while
holding, like fullbackup), and inside its locks does a read-modify-write of one counter row per app
it holds, in separate statements with a sleep in between: if two holders of an app ever overlapped,
an increment would be lost. Each grant's hold interval is stamped with `time.monotonic_ns()`
(CLOCK_MONOTONIC, one clock for every process on the host).

At the end: every counter equals the number of increments made under its lock, the intervals of
conflicting grants never overlap, and the lock row is empty again.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import make_url

from lockman import Granted, LockDeadlockError, LockManager
from models import dispose_after_fork, make_engine
from tests.owners import add_owner

APPS = ("app:a", "app:b", "app:c", "app:d")
#: Long enough that a busy machine never makes a beating holder look dead (that is tested elsewhere).
LEASE = 15.0
#: Stress sizes per backend: (processes, seconds).
SIZES = {"mysql": (16, 30.0), "postgresql": (6, 8.0), "sqlite": (6, 8.0)}
STORM_SIZES = {"mysql": (8, 4.0), "postgresql": (8, 4.0), "sqlite": (4, 4.0)}

_ctx = multiprocessing.get_context("fork")


def _backend(url: str) -> str:
    return make_url(url).get_backend_name()


def _counters(name: str) -> Table:
    return Table(name, MetaData(), Column("app", String(16), primary_key=True), Column("n", Integer, nullable=False))


def _start(target: Any, args_of: Any, count: int) -> list[Any]:
    procs = [_ctx.Process(target=target, args=args_of(i), daemon=True) for i in range(count)]
    for p in procs:
        p.start()
    return procs


def _join(procs: list[Any], timeout: float, outs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    alive = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    assert not alive, f"worker processes {alive} did not finish in {timeout:.0f}s"
    errors = [json.loads(o.read_text()).get("error") for o in outs if o.exists()]
    assert [p.exitcode for p in procs] == [0] * len(procs), f"a worker process failed: {[e for e in errors if e]}"


class _Beater:
    """A task's heartbeat, as a worker keeps it: a thread stamping the row every 0.3 s."""

    def __init__(self, manager: LockManager, owner: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(manager, owner), daemon=True)
        self._thread.start()

    def _run(self, manager: LockManager, owner: str) -> None:
        while not self._stop.wait(0.3):
            manager.heartbeat(owner)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ----------------------------------------------------------------------------- the mutual-exclusion stress


def _rmw(engine: Engine, counters: Table, app: str, rng: random.Random) -> None:
    """Read, wait, write: two holders at once would lose an increment."""
    with engine.connect() as conn:
        n = conn.execute(select(counters.c.n).where(counters.c.app == app)).scalar_one()
        conn.commit()
        time.sleep(rng.uniform(0.001, 0.004))
        conn.execute(update(counters).where(counters.c.app == app).values(n=n + 1))
        conn.commit()


def _plan(rng: random.Random) -> tuple[dict[str, str], dict[str, str] | None]:
    """A first lock set and, maybe, a second one asked for while holding the first."""
    roll = rng.random()
    if roll < 0.08:
        return {"platform": "X"}, None  # platformstart
    if roll < 0.14:
        return {"task:update": "X"}, {"platform": "X"}  # update: its update part under platform X
    apps = rng.sample(APPS, rng.choice([1, 1, 2]))
    first = {"platform": "S", **{a: "X" for a in apps}}
    if rng.random() < 0.3:
        return first, {rng.choice([a for a in APPS if a not in apps]): "X"}  # fullbackup, app by app
    return first, None


def _stress_worker(i: int, url: str, row: str, table: str, seconds: float, out: str, barrier: Any) -> None:
    dispose_after_fork()
    rng = random.Random(f"{row}-{i}")
    manager = LockManager(url, row_id=row, lease=LEASE)
    engine = make_engine(url, pool_size=1)
    counters = _counters(table)
    owner = add_owner(engine, kind="stress")
    beater = _Beater(manager, owner)
    report: dict[str, Any] = {"owner": owner, "holds": [], "rmw": dict.fromkeys(APPS, 0), "refused": 0, "grants": 0}
    try:
        barrier.wait(120)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            first, second = _plan(rng)
            manager.acquire(owner, first, label="stress", timeout=90)
            held = {name: (mode, time.monotonic_ns()) for name, mode in first.items()}
            report["grants"] += 1
            for name in first:
                if name in APPS:
                    _rmw(engine, counters, name, rng)
                    report["rmw"][name] += 1
            if second is not None:
                try:
                    manager.acquire(owner, second, label="stress", timeout=90)
                except LockDeadlockError:
                    report["refused"] += 1
                else:
                    now = time.monotonic_ns()
                    held.update({name: (mode, now) for name, mode in second.items()})
                    report["grants"] += 1
                    for name in second:
                        if name in APPS:
                            _rmw(engine, counters, name, rng)
                            report["rmw"][name] += 1
            end = time.monotonic_ns()  # before the release: the next holder starts after it
            report["holds"] += [(name, mode, start, end) for name, (mode, start) in held.items()]
            manager.release(owner)
        report["stats"] = manager.stats.snapshot()
    except BaseException:
        report["error"] = traceback.format_exc()
        raise
    finally:
        beater.stop()
        Path(out).write_text(json.dumps(report))
        manager.dispose()
        engine.dispose()


def _overlaps(holds: list[tuple[str, str, int, int, str]]) -> list[str]:
    """Conflicting hold intervals on one lock name (X beside anything), found by a sweep over starts."""
    found: list[str] = []
    by_name: dict[str, list[tuple[str, str, int, int, str]]] = {}
    for h in holds:
        by_name.setdefault(h[0], []).append(h)
    for name, group in by_name.items():
        group.sort(key=lambda h: h[2])
        active: list[tuple[str, str, int, int, str]] = []
        for h in group:
            active = [a for a in active if a[3] > h[2]]
            for a in active:
                if a[1] == "X" or h[1] == "X":
                    found.append(f"{name}: {a[4]} {a[1]} [{a[2]}, {a[3]}] overlaps {h[4]} {h[1]} [{h[2]}, {h[3]}]")
            active.append(h)
    return found


@pytest.mark.slow
def test_no_two_conflicting_holders_and_no_lost_update(db_url: str, lock_row: str, tmp_path: Path) -> None:
    procs, seconds = SIZES[_backend(db_url)]
    engine = make_engine(db_url)
    counters = _counters(f"counters_{lock_row}")
    counters.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(counters), [{"app": a, "n": 0} for a in APPS])
    setup = LockManager(db_url, row_id=lock_row, lease=LEASE)
    setup.ensure_row()
    barrier = _ctx.Barrier(procs)
    try:
        outs = [tmp_path / f"worker-{i}.json" for i in range(procs)]
        workers = _start(
            _stress_worker,
            lambda i: (i, db_url, lock_row, counters.name, seconds, str(outs[i]), barrier),
            procs,
        )
        _join(workers, seconds + 150, outs)
        reports = [json.loads(out.read_text()) for out in outs]
        with engine.connect() as conn:
            final = dict(conn.execute(select(counters.c.app, counters.c.n)).all())
        snap = setup.snapshot()
    finally:
        setup.dispose()
        counters.drop(engine)
        engine.dispose()

    expected = {a: sum(r["rmw"][a] for r in reports) for a in APPS}
    assert sum(expected.values()) > procs, f"too little happened to prove anything: {expected}"
    assert all(r["grants"] > 0 for r in reports), "a worker never got its locks"
    assert final == expected, f"lost updates: counters {final}, increments made under the lock {expected}"
    holds = [(name, mode, start, end, r["owner"][:8]) for r in reports for name, mode, start, end in r["holds"]]
    overlaps = _overlaps(holds)
    assert not overlaps, f"{len(overlaps)} conflicting holds overlapped, e.g. {overlaps[:3]}"
    assert snap.table.holders == () and snap.table.waiters == (), f"left behind: {snap.table}"


# ----------------------------------------------------------------------------- the version-conflict storm


def _storm_worker(i: int, url: str, row: str, seconds: float, out: str, barrier: Any) -> None:
    dispose_after_fork()
    rng = random.Random(f"storm-{row}-{i}")
    manager = LockManager(url, row_id=row, lease=LEASE)
    engine = make_engine(url, pool_size=1)
    owner = add_owner(engine, kind="storm")
    keys = [f"app:w{i}-k{k}" for k in range(6)]
    held: set[str] = set()
    writes = 0
    try:
        barrier.wait(120)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            key = rng.choice(keys)
            if key in held:
                released = manager.release(owner, [key]).released
                assert [(h.owner, h.name) for h in released] == [(owner, key)], released
                held.discard(key)
            else:
                decision = manager.try_acquire(owner, {key: "X"}, label="storm")
                assert isinstance(decision, Granted), decision
                held.add(key)
            writes += 1
        Path(out).write_text(
            json.dumps({"owner": owner, "held": sorted(held), "writes": writes, "stats": manager.stats.snapshot()})
        )
    except BaseException:
        Path(out).write_text(json.dumps({"error": traceback.format_exc()}))
        raise
    finally:
        manager.dispose()
        engine.dispose()


@pytest.mark.slow
def test_a_storm_of_writers_loses_no_entry(db_url: str, lock_row: str, tmp_path: Path) -> None:
    """Writers racing on the one row: every grant and every release they were told of is in the row."""
    procs, seconds = STORM_SIZES[_backend(db_url)]
    setup = LockManager(db_url, row_id=lock_row, lease=LEASE)
    setup.ensure_row()
    try:
        start_version = setup.snapshot().version
        barrier = _ctx.Barrier(procs)
        outs = [tmp_path / f"storm-{i}.json" for i in range(procs)]
        workers = _start(_storm_worker, lambda i: (i, db_url, lock_row, seconds, str(outs[i]), barrier), procs)
        _join(workers, seconds + 120, outs)
        reports = [json.loads(out.read_text()) for out in outs]
        snap = setup.snapshot()
    finally:
        setup.dispose()
    expected = {(r["owner"], key) for r in reports for key in r["held"]}
    actual = {(h.owner, h.name) for h in snap.table.holders}
    assert actual == expected, f"lost: {sorted(expected - actual)}; extra: {sorted(actual - expected)}"
    assert all(h.mode.value == "X" for h in snap.table.holders)
    assert snap.table.waiters == ()
    writes = sum(r["writes"] for r in reports)
    assert writes > 10 * procs, f"too little happened to prove anything: {writes} writes"
    assert snap.version - start_version == writes, "each grant and release is in exactly one write"
    conflicts = sum(r["stats"]["cas_conflicts"] + r["stats"]["locked_writes"] for r in reports)
    assert conflicts > 0, "no writer ever raced another: the storm proved nothing"
