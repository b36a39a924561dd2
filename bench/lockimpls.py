"""The lock implementations that `bench/locks.py` compares, and the worker process that drives them.

Each worker process is one owner in every implementation. `acquire()` makes one attempt and says
whether the lock is now held and how many compare-and-swap writes failed on the way; the worker
loop waits and asks again when it is not (a queued waiter keeps its place in the lock table).

The workers of one (key pattern, N) group live for the whole group and run the implementations in
turn, slice by slice, so that every implementation sees the same minutes of a noisy machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.exc import DBAPIError, IntegrityError

from lockman import Granted, LockManager, LockSet, LockTable, Queued, lock_set
from lockman.store import LockStore
from models import LockRow, db_utcnow
from models.engine import _sqlite_pragmas
from tests.owners import add_owner

IMPLS = ("lockman", "naive_cas", "get_lock", "row_per_lock")
MYSQL_ONLY = ("get_lock",)
#: Implementations whose whole state is one lock row (checked empty after every slice).
CAS_IMPLS = {"lockman", "naive_cas"}

#: How a process that was not granted waits before it asks again (the same for every implementation
#: that polls; GET_LOCK waits inside the server instead).
POLL_MIN = 0.0005
POLL_MAX = 0.02
#: A process not granted this long after its slice ended reports an error instead of hanging.
GIVE_UP = 30.0

lock_rows: Table = LockRow.__table__  # type: ignore[assignment]

bench_meta = MetaData()
#: One row per held lock, for `row_per_lock`.
row_locks = Table(
    "bench_row_locks",
    bench_meta,
    Column("name", String(191), primary_key=True),
    Column("owner", String(64), nullable=False),
)


@dataclass(frozen=True, slots=True)
class GroupSpec:
    keys: str  # "distinct" | "same"
    n: int
    url: str
    impls: tuple[str, ...]
    #: Unique to the run and the group: names its lock rows and lock names.
    tag: str
    lease: float
    hold: float

    def row_id(self, impl: str) -> str:
        return f"lb_{self.tag}_{impl}"[:64]

    def lock_name(self, app: str) -> str:
        return f"lb:{self.tag}:{app}"[:64]


@dataclass(slots=True)
class WorkerResult:
    idx: int
    impl: str
    pairs: int = 0
    failed_cas: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    #: (granted at, release started at) of each measured pair, on the shared monotonic clock.
    intervals: list[tuple[float, float]] = field(default_factory=list)
    violations: int = 0
    error: str | None = None


class Impl(Protocol):
    #: Whether it has a shared mode (on distinct keys it then takes `platform` S as apptasks do).
    shared_mode: bool

    def start(self) -> None:
        """Before a slice, outside the measurement: connect (a new connection costs tens of ms)."""

    def acquire(self) -> tuple[bool, int]: ...

    def release(self) -> int: ...

    def stop(self) -> None:
        """After a slice."""

    def close(self) -> None:
        """At the end of the group."""


def plan_for(keys: str, shared_mode: bool, idx: int) -> dict[str, str]:
    """An apptask's plan where the implementation has shared locks; the app lock alone otherwise."""
    if keys == "same":
        return {"app:same": "X"}
    if shared_mode:
        return {"platform": "S", f"app:{idx}": "X"}
    return {f"app:{idx}": "X"}


def lean_engine(url: str) -> Engine:
    """Autocommit, no pre-ping, no reset and no rollback on check-in: lockman's own pool options.

    naive_cas gets them too, so that the comparison measures the write strategy, not pool settings.
    """
    sqlite = url.startswith("sqlite")
    opts: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_pre_ping": False, "pool_reset_on_return": None}
    if "skip_autocommit_rollback" in inspect.signature(DefaultDialect.__init__).parameters:
        opts["skip_autocommit_rollback"] = True
    if sqlite:
        opts["connect_args"] = {"timeout": 30}
    engine = create_engine(url, **opts)
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def new_owner(url: str) -> str:
    """A task row with a fresh heartbeat (tests/owners.py), standing for this process as lock owner."""
    engine = create_engine(url)
    try:
        return add_owner(engine, kind="bench")
    finally:
        engine.dispose()


class LockmanImpl:
    """`LockManager.try_acquire` + `release`, as shipped."""

    shared_mode = True

    def __init__(self, group: GroupSpec, impl: str, idx: int) -> None:
        self.owner = new_owner(group.url)
        self.m = LockManager(group.url, row_id=group.row_id(impl), lease=group.lease)
        self.plan = lock_set(plan_for(group.keys, self.shared_mode, idx))

    def start(self) -> None:
        self.m.heartbeat(self.owner)
        self.m.snapshot()
        # Open the locked path's pool too (a private attribute: the bench only warms it up).
        self.m._tx.connect().close()

    def acquire(self) -> tuple[bool, int]:
        before = self.m.stats.cas_conflicts
        decision = self.m.try_acquire(self.owner, self.plan, label="bench")
        return isinstance(decision, Granted), self.m.stats.cas_conflicts - before

    def release(self) -> int:
        before = self.m.stats.cas_conflicts
        self.m.release(self.owner)
        return self.m.stats.cas_conflicts - before

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.m.dispose()


_StepOut = tuple[LockTable | None, bool]


class NaiveCasImpl:
    """The simple form of the design: read, compute with the same LockTable, CAS, re-read at once on a miss.

    Its own SQLAlchemy Core statements (built once), so that changes to `lockman.store` never move
    the baseline; the same lean pool as lockman; no remembered snapshot, no FOR UPDATE, no backoff.
    Dead blockers are evicted as the design requires (it never happens in the bench).
    """

    shared_mode = True

    def __init__(self, group: GroupSpec, impl: str, idx: int) -> None:
        row_id = group.row_id(impl)
        self.owner = new_owner(group.url)
        self.engine = lean_engine(group.url)
        self.row_id = row_id
        self.store = LockStore(row_id)  # for dead_owners only
        self.locks: LockSet = lock_set(plan_for(group.keys, self.shared_mode, idx))
        self.lease = dt.timedelta(seconds=group.lease)
        self._read = select(lock_rows.c.data, lock_rows.c.version, db_utcnow()).where(lock_rows.c.id == row_id)
        self._cas = (
            update(lock_rows)
            .where(lock_rows.c.id == row_id, lock_rows.c.version == bindparam("seen"))
            .values(data=bindparam("data", type_=lock_rows.c.data.type), version=lock_rows.c.version + 1)
        )

    def start(self) -> None:
        with self.engine.begin() as conn:
            LockStore.heartbeat(conn, self.owner)
            conn.execute(self._read).one()

    def _step_acquire(self, conn: Connection, table: LockTable, version: int, now: Any) -> _StepOut:
        new, decision = table.request(self.owner, self.locks, token=version + 1, label="bench")
        if isinstance(decision, Queued):
            blockers = (b.owner for b in decision.blockers)
            gone = self.store.dead_owners(conn, blockers, now=now, lease=self.lease)
            if gone:
                new, decision = table.evict(gone).request(self.owner, self.locks, token=version + 1, label="bench")
        return (None if new is table else new), isinstance(decision, Granted)

    def _step_release(self, conn: Connection, table: LockTable, version: int, now: Any) -> _StepOut:
        new, gone = table.release(self.owner, None)
        if not gone and len(new.waiters) == len(table.waiters):
            return None, True
        return new, True

    def _mutate(self, step: Callable[..., _StepOut]) -> tuple[bool, int]:
        failed = 0
        with self.engine.connect() as conn:
            while True:
                data, version, now = conn.execute(self._read).one()
                table = LockTable.from_json(data, row_id=self.row_id)
                new, value = step(conn, table, version, now)
                if new is None:
                    return value, failed
                if conn.execute(self._cas, {"seen": version, "data": new.to_json()}).rowcount == 1:
                    return value, failed
                failed += 1

    def acquire(self) -> tuple[bool, int]:
        return self._mutate(self._step_acquire)

    def release(self) -> int:
        return self._mutate(self._step_release)[1]

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.engine.dispose()


class _PinnedImpl:
    """A pinned autocommit connection, opened for each slice."""

    shared_mode = False

    def __init__(self, group: GroupSpec, impl: str, idx: int) -> None:
        (app,) = plan_for(group.keys, self.shared_mode, idx)
        self.name = group.lock_name(app)
        self.owner = f"p{idx}"
        self.engine = lean_engine(group.url)
        self.conn: Connection | None = None

    def start(self) -> None:
        self.conn = self.engine.connect()

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.stop()
        self.engine.dispose()

    def _c(self) -> Connection:
        assert self.conn is not None, "start() first"
        return self.conn


class GetLockImpl(_PinnedImpl):
    """MySQL/MariaDB GET_LOCK(name, timeout) / RELEASE_LOCK(name) on a pinned connection."""

    def acquire(self) -> tuple[bool, int]:
        got = self._c().execute(text("SELECT GET_LOCK(:n, 10)"), {"n": self.name}).scalar()
        return got == 1, 0

    def release(self) -> int:
        self._c().execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})
        return 0


class RowPerLockImpl(_PinnedImpl):
    """One row per held lock: INSERT acquires, DELETE releases; a duplicate key (or a deadlock) is "not yet"."""

    def __init__(self, group: GroupSpec, impl: str, idx: int) -> None:
        super().__init__(group, impl, idx)
        self._insert = insert(row_locks).values(name=self.name, owner=self.owner)
        self._delete = delete(row_locks).where(row_locks.c.name == self.name, row_locks.c.owner == self.owner)

    def acquire(self) -> tuple[bool, int]:
        try:
            self._c().execute(self._insert)
        except IntegrityError:
            return False, 0
        except DBAPIError as err:
            if _is_deadlock(err):
                return False, 0
            raise
        return True, 0

    def release(self) -> int:
        self._c().execute(self._delete)
        return 0


def _is_deadlock(err: DBAPIError) -> bool:
    code = getattr(err.orig, "args", [None])[0]
    return code == 1213 or getattr(err.orig, "sqlstate", None) in {"40001", "40P01"}


#: Implementation name -> constructor (group, name, worker index). An experiment may add its own.
IMPL_TYPES: dict[str, Callable[[GroupSpec, str, int], Impl]] = {
    "lockman": LockmanImpl,
    "naive_cas": NaiveCasImpl,
    "get_lock": GetLockImpl,
    "row_per_lock": RowPerLockImpl,
}

# Slots of the shared control array the parent writes before each barrier.
CTL_IMPL, CTL_START, CTL_MEASURE, CTL_STOP = range(4)


def run_group_worker(group: GroupSpec, idx: int, barrier: Any, control: Any, guard: Any, counts: Any, out: Any) -> None:
    """One process of a group: make every implementation, then run the slices the parent orders.

    Per slice: order (barrier) -> connect (barrier) -> start time set by the parent (barrier) -> run
    until the slice's stop time, finish the pair in hand, disconnect, report.
    """
    impls: dict[str, Impl] = {}
    try:
        for name in group.impls:
            impls[name] = IMPL_TYPES[name](group, name, idx)
    except BaseException:
        out.put(WorkerResult(idx, "", error=traceback.format_exc(limit=8)))
        barrier.abort()
        return
    barrier.wait(timeout=300)
    while True:
        barrier.wait(timeout=600)
        which = int(control[CTL_IMPL])
        if which < 0:
            for impl in impls.values():
                with contextlib.suppress(Exception):
                    impl.close()
            return
        name = group.impls[which]
        impl = impls[name]
        res = WorkerResult(idx, name)
        try:
            impl.start()
        except BaseException:
            res.error = traceback.format_exc(limit=8)
        barrier.wait(timeout=300)
        barrier.wait(timeout=300)
        if res.error is None:
            try:
                _drive(group, idx, impl, control, guard, counts, res)
            except BaseException:
                res.error = traceback.format_exc(limit=8)
        try:
            impl.stop()
        except BaseException:
            res.error = res.error or traceback.format_exc(limit=8)
        out.put(res)


def _drive(group: GroupSpec, idx: int, impl: Impl, control: Any, guard: Any, counts: Any, res: WorkerResult) -> None:
    key = 0 if group.keys == "same" else idx
    start, measure_from, stop = control[CTL_START], control[CTL_MEASURE], control[CTL_STOP]
    give_up = stop + GIVE_UP
    while time.monotonic() < start:
        time.sleep(0.0005)
    while True:
        began = time.monotonic()
        if began >= stop:
            return
        failed, delay = 0, POLL_MIN
        while True:
            granted, f = impl.acquire()
            failed += f
            if granted:
                break
            if time.monotonic() > give_up:
                raise RuntimeError(f"process {idx} not granted for {time.monotonic() - began:.0f}s")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, POLL_MAX)
        granted_at = time.monotonic()
        # Mutual exclusion, live: the holders of this key, counted in shared memory, must be one.
        with guard:
            counts[key] += 1
            holders = counts[key]
        if holders != 1:
            res.violations += 1
        if group.hold:
            time.sleep(group.hold)
        released_at = time.monotonic()
        with guard:
            counts[key] -= 1
        failed += impl.release()
        done = time.monotonic()
        if group.keys == "same":
            res.intervals.append((granted_at, released_at))
        if measure_from <= done < stop:
            res.pairs += 1
            res.failed_cas += failed
            res.latencies_ms.append((granted_at - began) * 1000.0)
