"""The lock manager: the compare-and-swap loop around the pure lock table.

Every write is `UPDATE locks SET data = :new, version = version + 1 WHERE id = :id AND version = :seen`.
Two write paths, no more:

1. **Optimistic.** Swap from the version last seen: from our own last write when this process
   wrote the row last (one round trip: the UPDATE alone), else from a plain read (two). A step
   that writes nothing (a waiter asking again) costs the read alone.
2. **Locked**, once an optimistic swap missed, or while most would (a smoothed rate of misses,
   learnt from every read, since each read tells whether a swap from our last write would have
   worked): one transaction, `SELECT ... FOR UPDATE`, compute in Python, the same version-checked
   UPDATE, COMMIT. Writers line up on the row lock instead of racing, so no write is wasted; a
   writer on the other path still cannot lose an update. SQLite has no row locks: there a missed
   swap reads and swaps again after a jittered backoff.

Two connection pools per process: autocommit (reads, optimistic swaps, versions, heartbeats;
no pre-ping, no reset and no ROLLBACK at check-in: each would cost a round trip per operation)
and transactional (the locked path, and `fenced()`, which pings its connection first).

No connection, transaction or row lock is held while a *task* waits for its locks: waiting is a
sleep between short reads (`acquire`), or, for Celery tasks, no process at all.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from lockman.errors import LockError, LockLostError, LockTimeoutError
from lockman.ops import Answer, Prober, Release, Request
from lockman.plan import LockSet, lock_set
from lockman.store import LockStore, Snapshot
from lockman.table import Decision, Granted, LockTable, Queued
from models.engine import SKIP_AUTOCOMMIT_ROLLBACK, driver_connect_args

logger = logging.getLogger(__name__)

T = TypeVar("T")
Step = Callable[[Snapshot, Prober], tuple[LockTable | None, T]]

_RETRYABLE_MYSQL = {1205, 1213, 2006, 2013}  # lock wait timeout, deadlock, server gone, lost connection

#: Go optimistic while fewer than this share of optimistic swaps would miss: a miss costs its
#: round trip on top of the locked path's.
_MAX_MISS_RATE = 0.5
#: Weight of the latest outcome in the smoothed miss rate.
_WEIGHT = 0.3


@dataclass(frozen=True, slots=True)
class Grant:
    """Locks granted to `owner`; `token` fences writes made under them (see `LockManager.fenced`)."""

    owner: str
    token: int
    locks: LockSet


@dataclass(slots=True)
class LockStats:
    operations: int = 0
    cas_attempts: int = 0
    cas_conflicts: int = 0
    cached_writes: int = 0
    locked_writes: int = 0
    evicted: int = 0
    retried_errors: int = 0

    def snapshot(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _NeedsFreshRead(Exception):
    """A step asked the database clock or the tasks table while working from a remembered snapshot."""


class _Outcome(enum.Enum):
    DONE = "done"
    IDLE = "idle"
    LOST = "lost"


def _no_prober(_owners: Iterable[str]) -> set[str]:
    raise _NeedsFreshRead


@dataclass
class _Memory:
    """What this process wrote last, and how often an optimistic swap from it would miss."""

    #: The document as we wrote it; None once we know (or fear) that someone wrote since.
    snapshot: Snapshot | None = None
    miss_rate: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def learn(self, missed: bool) -> None:
        self.miss_rate += ((1.0 if missed else 0.0) - self.miss_rate) * _WEIGHT


class LockManager:
    """Locks for task owners, kept in one row of the `locks` table.

    Owners are task ids with a row in `tasks`; a holder must keep that row's heartbeat fresh
    (`heartbeat()`) or it is judged dead after `lease` seconds and its locks are dropped by the
    next writer that it blocks.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        row_id: str = "main",
        lease: float = 30.0,
        poll_min: float = 0.01,
        poll_max: float = 0.25,
        echo: bool = False,
    ) -> None:
        self.url = make_url(url)
        self.row_id = row_id
        self.lease = dt.timedelta(seconds=lease)
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.stats = LockStats()
        self._store = LockStore(row_id)
        self._memory = _Memory()
        self._sqlite = self.url.get_backend_name() == "sqlite"
        common: dict[str, Any] = {"echo": echo, "pool_pre_ping": False, "pool_reset_on_return": None}
        common.update(json_serializer=_dumps, json_deserializer=_loads)
        if self._sqlite:
            common["connect_args"] = {"timeout": 30}
        else:
            common.update(pool_size=2, max_overflow=4, pool_recycle=300, connect_args=driver_connect_args(self.url))
        self._auto: Engine = create_engine(self.url, isolation_level="AUTOCOMMIT", **SKIP_AUTOCOMMIT_ROLLBACK, **common)
        self._tx: Engine = create_engine(self.url, **common)
        if self._sqlite:
            from models.engine import _sqlite_pragmas

            for engine in (self._auto, self._tx):
                event.listen(engine, "connect", _sqlite_pragmas)

    @classmethod
    def from_settings(cls, **overrides: object) -> LockManager:
        from config import get_settings

        s = get_settings()
        opts: dict[str, object] = {"row_id": s.lock_row, "lease": s.lock_lease_seconds}
        opts.update(overrides)
        return cls(s.effective_database_url, **opts)  # type: ignore[arg-type]

    def dispose(self) -> None:
        """Close pooled connections (call after fork in the child, or at shutdown)."""
        self._auto.dispose()
        self._tx.dispose()
        self._forget()

    # ------------------------------------------------------------------ acquiring

    def try_acquire(self, owner: str, plan: Mapping[str, object] | LockSet, *, label: str = "") -> Decision:
        """Grant the whole plan now, or queue `owner` as a waiter (it keeps its place when it asks again)."""
        decision = self._mutate(Request("acquire", owner=owner, locks=lock_set(plan), label=label))
        assert isinstance(decision, Granted | Queued)
        return decision

    def acquire(
        self,
        owner: str,
        plan: Mapping[str, object] | LockSet,
        *,
        label: str = "",
        timeout: float | None = None,
        on_wait: Callable[[Queued], None] | None = None,
    ) -> Grant:
        """Block until the whole plan is granted; wait by sleeping, holding no connection.

        `on_wait` is called with the first queued decision (say why the task waits). On timeout,
        or any exception while waiting, the waiter entry is withdrawn.
        """
        locks = lock_set(plan)
        decision = self.try_acquire(owner, locks, label=label)
        if isinstance(decision, Granted):
            return Grant(owner, decision.token, locks)
        if on_wait is not None:
            on_wait(decision)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.poll_min
        seen = -1
        last_full = time.monotonic()
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeoutError(f"{owner} gave up after {timeout}s: {decision.describe()}")
                time.sleep(_jitter(delay))
                delay = min(delay * 1.5, self.poll_max)
                with self._auto.connect() as conn:
                    version = self._store.version(conn)
                # Re-evaluate when the row changed, and now and then to notice dead holders.
                if version == seen and time.monotonic() - last_full < self.lease.total_seconds() / 4:
                    continue
                seen, last_full = version, time.monotonic()
                decision = self.try_acquire(owner, locks, label=label)
                if isinstance(decision, Granted):
                    return Grant(owner, decision.token, locks)
        except BaseException:
            self._withdraw_quietly(owner)
            raise

    def release(self, owner: str, names: Iterable[str] | None = None) -> Release:
        """Release the named locks, or everything the owner holds and waits for; report who can go next."""
        return self._released(Request("release", owner=owner, names=None if names is None else tuple(names)))

    def withdraw(self, owner: str) -> Release:
        """Take a waiting owner out of the queue; those behind it may now be ready."""
        return self._released(Request("withdraw", owner=owner))

    def evict(self, owners: Iterable[str]) -> Release:
        """Drop every entry of owners known to be dead (their process is gone); report who can go next."""
        return self._released(Request("evict", owners=tuple(sorted(set(owners)))))

    def sweep(self) -> Release:
        """Drop every dead owner (liveness on the database clock) and report the waiters now ready."""
        return self._released(Request("sweep"))

    def _released(self, request: Request) -> Release:
        release = self._mutate(request)
        assert isinstance(release, Release)
        return release

    # ------------------------------------------------------------------ liveness and fencing

    def heartbeat(self, owner: str) -> bool:
        """Stamp the owner's task row with the database clock. False when the row is missing."""
        with self._auto.connect() as conn:
            return LockStore.heartbeat(conn, owner)

    def holds(self, grant: Grant) -> bool:
        return _still_holds(self.snapshot().table, grant)

    @contextmanager
    def fenced(self, grant: Grant) -> Iterator[Connection]:
        """A transaction that commits only if `grant` still holds when it commits.

        The check is a locking read of the lock row as the last statement before COMMIT, so no
        writer can drop the grant between the check and the commit. A holder that was paused past
        its lease and lost its locks gets LockLostError, and its writes are rolled back.
        """
        with _alive(self._tx) as conn, conn.begin():
            yield conn
            snap = self._store.read(conn, lock="share")
            if not _still_holds(snap.table, grant):
                raise LockLostError(
                    f"{grant.owner} no longer holds {', '.join(n for n, _ in grant.locks)} "
                    f"with token {grant.token}; nothing was committed"
                )

    def snapshot(self) -> Snapshot:
        with self._auto.connect() as conn:
            return self._store.read(conn)

    def ensure_row(self) -> None:
        with self._auto.connect() as conn:
            self._store.ensure_row(conn)

    # ------------------------------------------------------------------ the compare-and-swap loop

    def _mutate(self, request: Request) -> Answer:
        self.stats.operations += 1

        def step(snap: Snapshot, dead: Prober) -> tuple[LockTable | None, Answer]:
            return request.apply(snap.table, snap.version, dead, self._log_eviction)

        for attempt in range(4):
            try:
                return self._write(step)
            except (OperationalError, DBAPIError) as err:
                if attempt == 3 or not _retryable(err):
                    raise
                self.stats.retried_errors += 1
                self._forget()
                logger.warning("lock row %s: retrying after %s", self.row_id, _err_summary(err))
                time.sleep(0.05 * (attempt + 1))
        raise LockError("unreachable")  # pragma: no cover

    def _write(self, step: Step[T]) -> T:
        with self._memory.lock:
            quiet = self._memory.miss_rate < _MAX_MISS_RATE
            remembered = self._memory.snapshot if quiet else None
        if remembered is not None:
            outcome, value = self._optimistic(step, remembered)
            if outcome is _Outcome.DONE:
                return value
            # IDLE: nothing to write on our last write, or a question for the database; most
            # likely nothing to write on the row as it is either (a waiter asking again).
            quiet = outcome is _Outcome.IDLE
        if quiet:
            outcome, value = self._optimistic(step, None)
            if outcome is _Outcome.DONE:
                return value
        if not self._sqlite:
            return self._locked(step)
        delay = 0.001
        while True:
            time.sleep(_jitter(delay))
            delay = min(delay * 2, 0.05)
            outcome, value = self._optimistic(step, None)
            if outcome is _Outcome.DONE:
                return value

    def _optimistic(self, step: Step[T], remembered: Snapshot | None) -> tuple[_Outcome, T]:
        """One compare-and-swap without a lock, from the remembered document or from a fresh read.

        DONE: written, or (fresh) nothing to write. IDLE: (remembered) nothing to write, or a question
        for the database: not known of the current row. LOST: the swap missed."""
        if remembered is not None:
            # Computed without a connection: the prober refuses to ask anything of a remembered row.
            try:
                new, value = step(remembered, _no_prober)
            except _NeedsFreshRead:
                return _Outcome.IDLE, None  # type: ignore[return-value]
            if new is None:
                return _Outcome.IDLE, value  # "nothing to write" is only true of the current row
            snap = remembered
            self.stats.cas_attempts += 1
            with self._auto.connect() as conn:
                swapped = self._store.compare_and_swap(conn, new, snap.version)
            with self._memory.lock:
                self._memory.learn(missed=not swapped)
        else:
            with self._auto.connect() as conn:
                snap = self._store.read(conn)
                self._observe(snap)
                new, value = step(snap, self._prober(conn, snap))
                if new is None:
                    return _Outcome.DONE, value
                self.stats.cas_attempts += 1
                swapped = self._store.compare_and_swap(conn, new, snap.version)
        if swapped:
            self._remember(new, snap.version + 1, cached=remembered is not None)
            return _Outcome.DONE, value
        self.stats.cas_conflicts += 1
        with self._memory.lock:
            if not self._sqlite and remembered is None:
                self._memory.learn(missed=True)  # a read-and-swap missed: contention, go locked
            self._memory.snapshot = None
        return _Outcome.LOST, None  # type: ignore[return-value]

    def _locked(self, step: Step[T]) -> T:
        """One transaction: lock the row, compute, swap (still `WHERE version = :seen`), commit.

        The driver opens the transaction with the SELECT ... FOR UPDATE (no BEGIN is sent on
        MySQL/MariaDB), so the row lock is held for the UPDATE and the COMMIT after our computation.
        """
        self.stats.locked_writes += 1
        with self._tx.connect() as conn:
            try:
                snap = self._store.read(conn, lock="update")
                self._observe(snap)
                new, value = step(snap, self._prober(conn, snap))
                if new is None:
                    conn.rollback()
                    return value
                self.stats.cas_attempts += 1
                swapped = self._store.compare_and_swap(conn, new, snap.version)
                conn.commit()
            except BaseException as err:
                if not isinstance(err, DBAPIError):
                    # A soft time limit or a signal, perhaps half-way through a result: the
                    # connection may be out of step with the server; never back to the pool.
                    conn.invalidate()
                raise
        if not swapped:
            raise LockError(f"lock row {self.row_id!r} changed while locked FOR UPDATE")
        self._remember(new, snap.version + 1, cached=False)
        return value

    def _prober(self, conn: Connection, snap: Snapshot) -> Prober:
        def dead(owners: Iterable[str]) -> set[str]:
            if snap.now is None:
                raise _NeedsFreshRead
            return self._store.dead_owners(conn, owners, now=snap.now, lease=self.lease)

        return dead

    # ------------------------------------------------------------------ what this process wrote last

    def _observe(self, snap: Snapshot) -> None:
        """A read saw the row at `snap.version`: that tells, exactly, whether a swap from our last
        write would have worked (nobody wrote since), taken or not; so the miss rate stays right
        while the locked path is used."""
        mem = self._memory
        with mem.lock:
            if mem.snapshot is None:
                return
            untouched = mem.snapshot.version == snap.version
            mem.learn(missed=not untouched)
            if not untouched:
                mem.snapshot = None

    def _remember(self, table: LockTable, version: int, *, cached: bool) -> None:
        if cached:
            self.stats.cached_writes += 1
        with self._memory.lock:
            self._memory.snapshot = Snapshot(table, version, None)

    def _forget(self) -> None:
        with self._memory.lock:
            self._memory.snapshot = None

    def _withdraw_quietly(self, owner: str) -> None:
        try:
            self.withdraw(owner)
        except Exception:  # the owner's task ending will make the entry dead anyway
            logger.exception("could not withdraw waiter %s", owner)

    def _log_eviction(self, owners: set[str]) -> None:
        self.stats.evicted += len(owners)
        logger.warning("lock row %s: dropping dead owners %s", self.row_id, ", ".join(sorted(owners)))


@contextmanager
def _alive(engine: Engine) -> Iterator[Connection]:
    """A connection from `engine`, pinged first (the pool does not): one closed while idle is replaced."""
    with engine.connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        try:
            conn.dialect.do_ping(dbapi_conn)
        except conn.dialect.loaded_dbapi.Error as err:
            if not conn.dialect.is_disconnect(err, dbapi_conn, None):
                raise
            conn.invalidate(err)  # the next statement reconnects
        yield conn


def _dumps(doc: Any) -> str:
    """orjson, 3-8x faster than `json`; `json` for what orjson refuses (a `fenced()` caller's columns)."""
    try:
        return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(doc)


def _loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # NaN, or an integer past 64 bits; else the same error


def _still_holds(table: LockTable, grant: Grant) -> bool:
    held = table.held_by(grant.owner)
    return all(name in held and held[name].token >= grant.token for name, _ in grant.locks)


def _jitter(delay: float) -> float:
    return delay * (0.5 + random.random())


def _retryable(err: DBAPIError) -> bool:
    if err.connection_invalidated:
        return True
    code = getattr(err.orig, "args", [None])[0]
    if isinstance(code, int) and code in _RETRYABLE_MYSQL:
        return True
    sqlstate = getattr(err.orig, "sqlstate", None)
    return sqlstate in {"40001", "40P01", "57P01", "08006", "08003"}


def _err_summary(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
