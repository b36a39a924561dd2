"""The lock manager: the compare-and-swap loop around the pure lock table.

How one change is written (`_mutate`):

1. **Optimistic, from our own last write.** When this process wrote the row last time and that
   has been reliable lately, it computes the next document from the remembered one and writes
   with `WHERE version = :seen` straight away: one round trip instead of read + write.
2. **Optimistic, fresh.** Otherwise (or when that missed) it reads, computes and swaps.
3. **Queued in the database under contention.** When a swap lost a race, the naive loop would
   read and race again, and under N writers most writes fail (65-72% at N=8). Instead the retry
   runs as `SELECT ... FOR UPDATE; UPDATE ... WHERE version = :seen; COMMIT`: writers line up on
   the row lock for the few hundred microseconds of the swap, and none of their writes is wasted.
   The version check stays, so a writer that skips this path still cannot lose an update.
   SQLite has no row locks; there the retry backs off with jitter instead.

No connection, transaction or row lock is held while a *task* waits for its locks: waiting is a
sleep between short reads (`acquire`), or, for Celery tasks, no process at all.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from lockman.errors import LockError, LockLostError, LockTimeoutError
from lockman.plan import LockSet, lock_set
from lockman.store import LockStore, Snapshot
from lockman.table import Decision, Granted, Holder, LockTable, Queued, Waiter

logger = logging.getLogger(__name__)

T = TypeVar("T")
Prober = Callable[[Iterable[str]], set[str]]
Step = Callable[[Snapshot, Prober], tuple[LockTable | None, T]]

_RETRYABLE_MYSQL = {1205, 1213, 2006, 2013}  # lock wait timeout, deadlock, server gone, lost connection


@dataclass(frozen=True, slots=True)
class Grant:
    """Locks granted to `owner`; `token` fences writes made under them (see `LockManager.fenced`)."""

    owner: str
    token: int
    locks: LockSet


@dataclass(frozen=True, slots=True)
class Release:
    released: tuple[Holder, ...]
    #: Waiters that can now be granted: wake them.
    ready: tuple[Waiter, ...]


@dataclass(slots=True)
class LockStats:
    operations: int = 0
    cas_attempts: int = 0
    cas_conflicts: int = 0
    cached_writes: int = 0
    queued_writes: int = 0
    evicted: int = 0
    retried_errors: int = 0

    def snapshot(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _NeedsFreshRead(Exception):
    """A step asked the database clock or the tasks table while working from a remembered snapshot."""


@dataclass
class _Memory:
    """What this process wrote last, and whether trusting it has paid off lately."""

    snapshot: Snapshot | None = None
    skip: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


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
        remember_writes: bool = True,
        queue_on_conflict: bool = True,
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
        self._remember_writes = remember_writes
        sqlite = self.url.get_backend_name() == "sqlite"
        self._queue_on_conflict = queue_on_conflict and not sqlite
        # Two small pools of our own: no pre-ping and no reset-on-return, which would each cost a
        # round trip per operation. A dropped connection surfaces as an error and is retried.
        common: dict[str, object] = {"echo": echo, "pool_pre_ping": False, "pool_reset_on_return": None}
        if sqlite:
            common["connect_args"] = {"timeout": 30}
        else:
            common.update(pool_size=2, max_overflow=4, pool_recycle=300)
        self._auto: Engine = create_engine(self.url, isolation_level="AUTOCOMMIT", **common)
        self._tx: Engine = create_engine(self.url, **common)
        if sqlite:
            from models.engine import _sqlite_pragmas

            event.listen(self._auto, "connect", _sqlite_pragmas)
            event.listen(self._tx, "connect", _sqlite_pragmas)

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
        locks = _as_lockset(plan)

        def step(snap: Snapshot, dead: Prober) -> tuple[LockTable | None, Decision]:
            new, decision = snap.table.request(owner, locks, token=snap.version + 1, label=label)
            if isinstance(decision, Queued):
                gone = dead(b.owner for b in decision.blockers)
                if gone:
                    self._log_eviction(gone)
                    new, decision = snap.table.evict(gone).request(owner, locks, token=snap.version + 1, label=label)
            return (None if new is snap.table else new), decision

        return self._mutate(step)

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
        locks = _as_lockset(plan)
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
                version = self._read_version()
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

    # ------------------------------------------------------------------ releasing

    def release(self, owner: str, names: Iterable[str] | None = None) -> Release:
        """Release the named locks, or everything the owner holds and waits for; report who can go next."""
        wanted = None if names is None else tuple(names)

        def step(snap: Snapshot, _dead: Prober) -> tuple[LockTable | None, Release]:
            new, gone = snap.table.release(owner, wanted)
            if not gone and len(new.waiters) == len(snap.table.waiters):
                return None, Release((), ())
            return new, Release(gone, tuple(new.ready_waiters()))

        return self._mutate(step)

    def withdraw(self, owner: str) -> Release:
        """Take a waiting owner out of the queue; those behind it may now be ready."""

        def step(snap: Snapshot, _dead: Prober) -> tuple[LockTable | None, Release]:
            if snap.table.waiter_of(owner) is None:
                return None, Release((), ())
            new = snap.table.withdraw(owner)
            return new, Release((), tuple(new.ready_waiters()))

        return self._mutate(step)

    def evict(self, owners: Iterable[str]) -> Release:
        """Drop every entry of owners known to be dead (their process is gone); report who can go next."""
        dead = set(owners)

        def step(snap: Snapshot, _dead: Prober) -> tuple[LockTable | None, Release]:
            gone = tuple(h for h in snap.table.holders if h.owner in dead)
            new = snap.table.evict(dead)
            if not gone and len(new.waiters) == len(snap.table.waiters):
                return None, Release((), ())
            return new, Release(gone, tuple(new.ready_waiters()))

        return self._mutate(step)

    def sweep(self) -> Release:
        """Drop every dead owner (liveness on the database clock) and report the waiters now ready."""

        def step(snap: Snapshot, dead: Prober) -> tuple[LockTable | None, Release]:
            gone = dead(snap.table.owners())
            if not gone:
                return None, Release((), tuple(snap.table.ready_waiters()))
            self._log_eviction(gone)
            new = snap.table.evict(gone)
            freed = tuple(h for h in snap.table.holders if h.owner in gone)
            return new, Release(freed, tuple(new.ready_waiters()))

        return self._mutate(step)

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
        with self._tx.connect() as conn, conn.begin():
            yield conn
            snap = self._store.read(conn, lock="share")
            if not _still_holds(snap.table, grant):
                raise LockLostError(
                    f"{grant.owner} no longer holds {', '.join(n for n, _ in grant.locks)} "
                    f"with token {grant.token}; nothing was committed"
                )

    # ------------------------------------------------------------------ introspection

    def snapshot(self) -> Snapshot:
        with self._auto.connect() as conn:
            return self._store.read(conn)

    def ensure_row(self) -> None:
        with self._auto.connect() as conn:
            self._store.ensure_row(conn)

    # ------------------------------------------------------------------ the compare-and-swap loop

    def _mutate(self, step: Step[T]) -> T:
        self.stats.operations += 1
        for attempt in range(4):
            try:
                return self._mutate_once(step)
            except (OperationalError, DBAPIError) as err:
                if attempt == 3 or not _retryable(err):
                    raise
                self.stats.retried_errors += 1
                self._forget()
                logger.warning("lock row %s: retrying after %s", self.row_id, _err_summary(err))
                time.sleep(0.05 * (attempt + 1))
        raise LockError("unreachable")  # pragma: no cover

    def _mutate_once(self, step: Step[T]) -> T:
        remembered = self._remembered()
        if remembered is not None:
            done, value = self._optimistic(step, remembered)
            if done:
                return value
        done, value = self._optimistic(step, None)
        if done:
            return value
        if self._queue_on_conflict:
            return self._queued(step)
        delay = 0.001
        while True:
            time.sleep(_jitter(delay))
            delay = min(delay * 2, 0.05)
            done, value = self._optimistic(step, None)
            if done:
                return value

    def _optimistic(self, step: Step[T], remembered: Snapshot | None) -> tuple[bool, T]:
        with self._auto.connect() as conn:
            snap = remembered or self._store.read(conn)
            try:
                new, value = step(snap, self._prober(conn, snap))
            except _NeedsFreshRead:
                return False, None  # type: ignore[return-value]
            if new is None:
                # "Nothing to write" is only true of the current row, not of a remembered one.
                return remembered is None, value
            self.stats.cas_attempts += 1
            if self._store.compare_and_swap(conn, new, snap.version):
                self._remember(new, snap.version + 1, cached=remembered is not None)
                return True, value
        self.stats.cas_conflicts += 1
        self._missed(cached=remembered is not None)
        return False, None  # type: ignore[return-value]

    def _queued(self, step: Step[T]) -> T:
        self.stats.queued_writes += 1
        with self._tx.connect() as conn, conn.begin():
            snap = self._store.read(conn, lock="update")
            new, value = step(snap, self._prober(conn, snap))
            if new is None:
                return value
            self.stats.cas_attempts += 1
            if not self._store.compare_and_swap(conn, new, snap.version):
                raise LockError(f"lock row {self.row_id!r} changed while locked FOR UPDATE")
        self._remember(new, snap.version + 1, cached=False)
        return value

    def _prober(self, conn: Connection, snap: Snapshot) -> Prober:
        def dead(owners: Iterable[str]) -> set[str]:
            if snap.now is None:
                raise _NeedsFreshRead
            holders = {h.owner for h in snap.table.holders}
            return self._store.dead_owners(conn, owners, holders=holders, now=snap.now, lease=self.lease)

        return dead

    def _read_version(self) -> int:
        with self._auto.connect() as conn:
            return self._store.version(conn)

    # ------------------------------------------------------------------ remembered writes

    def _remembered(self) -> Snapshot | None:
        if not self._remember_writes:
            return None
        with self._memory.lock:
            if self._memory.skip:
                self._memory.skip -= 1
                return None
            return self._memory.snapshot

    def _remember(self, table: LockTable, version: int, *, cached: bool) -> None:
        if cached:
            self.stats.cached_writes += 1
        with self._memory.lock:
            self._memory.snapshot = Snapshot(table, version, None)

    def _missed(self, *, cached: bool) -> None:
        with self._memory.lock:
            self._memory.snapshot = None
            if cached:
                # Others write too: stop guessing for a while, a fresh read is cheaper than a lost race.
                self._memory.skip = 16

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


def _as_lockset(plan: Mapping[str, object] | LockSet) -> LockSet:
    return lock_set(plan)


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
