"""The lock manager: the compare-and-swap loop around the pure lock table.

Every write is `UPDATE locks SET data = :new, version = version + 1 WHERE id = :id AND version = :seen`;
what `_mutate` chooses is how to get `:seen` and `:new` cheaply, by how the last writes went:

1. **From our own last write** (1 round trip). When this process wrote the row last, it computes
   the next document from the remembered one and swaps straight away. Tried while such swaps have
   mostly worked lately; every read tells exactly whether one would have (the version is still
   ours), so the estimate stays right even while the path is not taken.
2. **Read and swap** (2 round trips). While fewer than a third of these lose their race: a lost
   race costs its statements again, on top of the queued path's. Their failure rate fades with
   time, so the path is tried again once the row goes quiet.
3. **Queued** (2 round trips, never wasted). Under contention, go straight to one short
   transaction: `SELECT ... FOR UPDATE`, compute, `UPDATE ... WHERE version = :seen; COMMIT`.
   Writers line up on the row lock instead of racing (the naive loop loses 65-80% of its writes
   at N=8..16 and pays a read, a parse and a computation for each), so the 2 CPUs do only useful
   work. No BEGIN is sent (the locking read opens the transaction) and, with PyMySQL, the COMMIT
   travels with the UPDATE, so the row lock is held for two round trips and one computation.
   The version check stays, so a writer on another path still cannot lose an update.
   SQLite has no row locks: there a lost race backs off with jitter and tries again.
4. **Queued, with requests posted** (MariaDB; in place of 3). Each hold of the row above spans a
   round trip to a client, and on 2 CPUs that round trip, not the work, sets the row's rate. So a
   writer that queues first posts its operation (`lockman.requests.Request`) as a row of its own
   transaction that is never committed, in the same round trip as its locked read. Whoever holds
   the row reads every pending request (uncommitted reads), applies them all in posting order in
   its one compare-and-swap, and leaves each answer in the document. A writer that then finds its
   answer there rolls back inside that same round trip, in the server: it writes nothing and holds
   the row for no round trip of its own. One write, and one client round trip in the hold (plus
   one for each liveness question, when a request is blocked), serve every writer that was waiting
   (`_posted`). A request goes with its writer's transaction, but a writer that dies or gives up
   while it waits for the row (the server notices a closed connection only when the row is
   granted) has its request applied all the same, like a write whose answer was lost. Answers,
   under each request's random key, stay until their requests are gone.

A step that will most likely write nothing (a waiter asking again whether it may go) is read
without the row lock whatever the contention: a locked read would hold up the writers for nothing.

The engines skip every round trip that carries no work: no pre-ping, no reset on check-in, and no
ROLLBACK after autocommit statements. On MySQL/MariaDB the lock row's statements run on the DBAPI
cursor (see `lockman.store`).

No connection, transaction or row lock is held while a *task* waits for its locks: waiting is a
sleep between short reads (`acquire`), or, for Celery tasks, no process at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from lockman.errors import LockError, LockLostError, LockTimeoutError
from lockman.plan import LockSet, lock_set
from lockman.requests import Answer, Release, Request, answer_from_json, answer_to_json
from lockman.store import ANSWER_KEY, MULTI_STATEMENTS, DriverSQL, LockStore, Posted, Snapshot
from lockman.table import Decision, Granted, LockTable, Queued
from models.engine import SKIP_AUTOCOMMIT_ROLLBACK, driver_connect_args

logger = logging.getLogger(__name__)

T = TypeVar("T")
Prober = Callable[[Iterable[str]], set[str]]
Step = Callable[[Snapshot, Prober], tuple[LockTable | None, T]]

_RETRYABLE_MYSQL = {1205, 1213, 2006, 2013}  # lock wait timeout, deadlock, server gone, lost connection

#: Swap from the remembered document while fewer than this share of such swaps would fail: a
#: success saves a read (and the parse), a failure costs one cheap UPDATE that matched nothing.
_MEMORY_MAX_RISK = 0.5
#: Read-and-swap (2 round trips) while fewer than this share lose their race: a loss costs them on
#: top of the queued path's, which wastes none. That path takes 2 round trips where the COMMIT
#: travels with the UPDATE (PyMySQL), else 3 or 4 (PostgreSQL's driver sends its own BEGIN).
_FRESH_MAX_RISK = {True: 0.33, False: 0.5}
#: Guess whether a step writes anything (from the row as last seen) once this share of recent
#: operations wrote nothing; below it the guess is not worth its CPU.
_IDLE_HINT = 0.05
#: Weight of the latest outcome in the smoothed rates.
_RISK_WEIGHT = 0.3
#: Seconds before posting is tried again after the lock_requests table was found missing.
_POSTING_RECHECK = 60.0
#: Seconds for the read-and-swap failure rate to fade by 1/e while only the queued path is used.
_RISK_FADE = 1.0


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
    queued_writes: int = 0
    #: Posted requests (MariaDB): answered by the writer before us / applied by us for others.
    answered_for_us: int = 0
    applied_for_others: int = 0
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
    """What this process wrote last, and how often each cheap way of writing has failed lately."""

    #: The document as we wrote it; None once we know (or fear) that someone wrote since.
    snapshot: Snapshot | None = None
    #: Smoothed failure rates (0..1) of a swap from `snapshot` and of a read-and-swap.
    memory_risk: float = 0.0
    fresh_risk: float = 0.0
    #: When `fresh_risk` was last updated: it fades with time, so a quiet row is tried again.
    fresh_at: float = 0.0
    #: Smoothed share of operations that found nothing to write (a waiter asking again, mostly).
    idle: float = 0.0
    #: The row as we last read or wrote it (perhaps no longer current): to guess whether a step
    #: will write anything.
    seen: Snapshot | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fresh_risk_now(self, now: float) -> float:
        return self.fresh_risk * math.exp(-max(0.0, now - self.fresh_at) / _RISK_FADE)

    def learn_memory(self, failed: bool) -> None:
        self.memory_risk += ((1.0 if failed else 0.0) - self.memory_risk) * _RISK_WEIGHT

    def learn_fresh(self, failed: bool, now: float) -> None:
        risk = self.fresh_risk_now(now)
        self.fresh_risk, self.fresh_at = risk + ((1.0 if failed else 0.0) - risk) * _RISK_WEIGHT, now

    def learn_idle(self, idle: bool) -> None:
        self.idle += ((1.0 if idle else 0.0) - self.idle) * _RISK_WEIGHT


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
        # Small pools of our own: no pre-ping and no reset-on-return, which would each cost a round
        # trip per operation. A dropped connection surfaces as an error and is retried.
        common: dict[str, Any] = {"echo": echo, "pool_pre_ping": False, "pool_reset_on_return": None}
        if sqlite:
            common["connect_args"] = {"timeout": 30}
        else:
            common.update(pool_size=2, max_overflow=4, pool_recycle=300, connect_args=driver_connect_args(self.url))
        # Reads and optimistic swaps. In autocommit mode SQLAlchemy would still call the driver's
        # rollback() at every check-in: one more round trip per operation, undoing nothing. Skip it.
        self._auto: Engine = create_engine(self.url, isolation_level="AUTOCOMMIT", **SKIP_AUTOCOMMIT_ROLLBACK, **common)
        # The queued path's short transactions. With PyMySQL they may send "UPDATE ...; COMMIT" in
        # one round trip (see `LockStore.compare_and_swap`); only lockman's own statements run here.
        tx_url = _with_multi_statements(self.url)
        self._tx: Engine = create_engine(tx_url, **common)
        self._fresh_max_risk = _FRESH_MAX_RISK[tx_url is not self.url]
        # `fenced()` hands its connection to the caller: a plain transactional pool.
        # Fenced writes are not the hot path, and their connection is handed to the caller: ping it,
        # so one the server closed while idle (wait_timeout, a restart) is replaced, not failed.
        self._fence: Engine = create_engine(self.url, **{**common, "pool_pre_ping": True})
        # The queued path with posted requests (`_posted`), where the database allows: its
        # transactions read the requests that other writers have not committed (and never will).
        self._posting: Engine = create_engine(tx_url, isolation_level="READ UNCOMMITTED", **common)
        self._can_post: bool | None = None if self._queue_on_conflict and tx_url is not self.url else False
        self._post_again_at: float | None = None
        # Liveness questions asked while holding the row (`_side_prober`): a pool that no writer
        # waiting for the row can be holding.
        self._probe: Engine = create_engine(
            self.url, isolation_level="AUTOCOMMIT", **SKIP_AUTOCOMMIT_ROLLBACK, **_one_connection(common)
        )
        if sqlite:
            from models.engine import _sqlite_pragmas

            for engine in (self._auto, self._tx, self._fence, self._posting, self._probe):
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
        self._fence.dispose()
        self._posting.dispose()
        self._probe.dispose()
        self._forget()

    # ------------------------------------------------------------------ acquiring

    def try_acquire(self, owner: str, plan: Mapping[str, object] | LockSet, *, label: str = "") -> Decision:
        """Grant the whole plan now, or queue `owner` as a waiter (it keeps its place when it asks again)."""
        decision = self._mutate(Request("acquire", owner=owner, locks=_as_lockset(plan), label=label))
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
        with self._fence.connect() as conn, conn.begin():
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

    def _mutate(self, request: Request) -> Answer:
        self.stats.operations += 1
        # One answer key for every attempt: a retry is not applied again while an earlier attempt's
        # request is still pending (see `_posted`).
        request = dataclasses.replace(request, key=secrets.token_hex(8))

        def step(snap: Snapshot, dead: Prober) -> tuple[LockTable | None, Answer]:
            return request.apply(snap.table, snap.version, dead, self._log_eviction)

        for attempt in range(4):
            try:
                return self._mutate_once(request, step)
            except (OperationalError, DBAPIError) as err:
                if attempt == 3 or not _retryable(err):
                    raise
                self.stats.retried_errors += 1
                self._forget()
                logger.warning("lock row %s: retrying after %s", self.row_id, _err_summary(err))
                time.sleep(0.05 * (attempt + 1))
        raise LockError("unreachable")  # pragma: no cover

    def _mutate_once(self, request: Request, step: Step[Answer]) -> Answer:
        remembered = self._remembered()
        if remembered is not None:
            outcome, value = self._optimistic(step, remembered)
            if outcome is _Outcome.DONE:
                return value
            idle = outcome is _Outcome.IDLE
        else:
            idle = self._predicts_idle(step)
        # A step that will most likely write nothing (a waiter asking again) reads without the row
        # lock: a locked read would hold up the writers for a round trip, for nothing.
        if idle or self._fresh_is_cheaper():
            outcome, value = self._optimistic(step, None, tried_memory=remembered is not None)
            if outcome is not _Outcome.LOST:
                return value
        if self._queue_on_conflict:
            if self._posting_works():
                return self._posted(request, step, tried_memory=remembered is not None)
            return self._queued(step, tried_memory=remembered is not None)
        delay = 0.001
        while True:
            time.sleep(_jitter(delay))
            delay = min(delay * 2, 0.05)
            outcome, value = self._optimistic(step, None, tried_memory=True)
            if outcome is not _Outcome.LOST:
                return value

    def _optimistic(
        self, step: Step[T], remembered: Snapshot | None, *, tried_memory: bool = False
    ) -> tuple[_Outcome, T]:
        """One compare-and-swap without a lock: from the remembered document, or from a fresh read.

        DONE: written, or (from a fresh read) nothing to write. IDLE: from the remembered document,
        nothing to write or a question for the database: not known for the current row. LOST: the
        swap lost a race.
        """
        if remembered is not None:
            # Computed without a connection: the prober refuses to ask anything of a remembered row.
            try:
                new, value = step(remembered, _no_prober)
            except _NeedsFreshRead:
                return _Outcome.IDLE, None  # type: ignore[return-value]
            if new is None:
                # "Nothing to write" is only true of the current row, not of a remembered one.
                return _Outcome.IDLE, value
            snap = remembered
            self.stats.cas_attempts += 1
            with self._auto.connect() as conn:
                swapped = self._store.compare_and_swap(conn, new, snap.version)
        else:
            with self._auto.connect() as conn:
                snap = self._store.read(conn)
                self._observe(snap, tried_memory=tried_memory)
                new, value = step(snap, self._prober(conn, snap))
                if new is None:
                    self._learn_idle(True)
                    return _Outcome.DONE, value
                self.stats.cas_attempts += 1
                swapped = self._store.compare_and_swap(conn, new, snap.version)
        self._learn(cached=remembered is not None, failed=not swapped)
        if swapped:
            self._remember(new, snap.version + 1, cached=remembered is not None)
            return _Outcome.DONE, value
        self.stats.cas_conflicts += 1
        with self._memory.lock:
            self._memory.snapshot = None
        return _Outcome.LOST, None  # type: ignore[return-value]

    def _queued(self, step: Step[T], *, tried_memory: bool = False) -> T:
        """One short transaction: lock the row, compute, swap (still `WHERE version = :seen`), commit.

        Writers line up on the row lock for the length of one swap instead of racing, and none of
        their writes is wasted. Three statements and no more: the driver opens the transaction
        with the SELECT ... FOR UPDATE (no BEGIN is sent), and with PyMySQL the COMMIT travels with
        the UPDATE, so the row lock is held for two round trips and our computation in between.
        """
        self.stats.queued_writes += 1
        with self._tx.connect() as conn:
            try:
                snap = self._store.read(conn, lock="update")
                self._observe(snap, tried_memory=tried_memory, locked=True)
                new, value = step(snap, self._prober(conn, snap))
                if new is None:
                    self._store.finish(conn, commit=False)
                    self._learn_idle(True)
                    return value
                self.stats.cas_attempts += 1
                swapped = self._store.compare_and_swap(conn, new, snap.version, commit=True)
            except BaseException as err:
                self._abandon(conn, err)
                raise
        if not swapped:
            raise LockError(f"lock row {self.row_id!r} changed while locked FOR UPDATE")
        self._remember(new, snap.version + 1, cached=False)
        return value

    def _posted(self, request: Request, step: Step[Answer], *, tried_memory: bool = False) -> Answer:
        """The queued path with requests posted (MariaDB): whoever holds the row applies them all.

        Our request goes in as a row of our own transaction, never committed, and we wait for
        the row lock as on the queued path. The writer ahead of us reads every pending request
        (uncommitted reads), applies them in posting order in its one compare-and-swap and leaves
        the answers in the document, each under its request's random key. When our turn comes,
        the same round trip that locked the row finds our answer there and rolls back at once, in
        the server: no second round trip, no write, and the row lock held only for the server's
        own work. A writer whose request nobody answered yet applies its own and every other
        pending one. A request goes with its writer's transaction; one that an applier read
        before its writer failed is applied all the same, as a write whose answer was lost (a
        retry, under the same key, is not applied twice while that request is still pending;
        once it is gone its answer is dropped, and a retried release then reports nothing to
        wake: the sweep wakes those waiters).
        """
        self.stats.queued_writes += 1
        with self._posting.connect() as conn:
            driver = self._store.driver(conn)
            assert driver is not None, "posting needs the MySQL driver path"
            try:
                posted = driver.post(conn, driver.encode(request.to_json()), request.key)
                if posted.pending is None:
                    # Answered: the server sent only our answer, not the document.
                    self.stats.answered_for_us += 1
                    self._observe_version(posted.row[1], tried_memory=tried_memory)
                    answer = answer_from_json(posted.answer, request)
                else:
                    snap = self._store.parse_row(driver, posted.row)
                    self._observe(snap, tried_memory=tried_memory, locked=True)
                    answer = self._apply_pending(conn, driver, request, posted, snap)
            except ProgrammingError as err:
                self._abandon(conn, err)
                if not _missing_table(err):
                    raise
                logger.warning("lock row %s: no lock_requests table (run `boxtasks db upgrade`)", self.row_id)
                self._can_post, self._post_again_at = False, time.monotonic() + _POSTING_RECHECK
                answer = None
            except BaseException as err:
                self._abandon(conn, err)
                raise
        if answer is None:
            return self._queued(step, tried_memory=tried_memory)
        if isinstance(answer, LockError):
            raise answer
        return answer

    def _abandon(self, conn: Connection, err: BaseException) -> None:
        """End a locked transaction that failed: roll back after a database error; after anything
        else (a soft time limit, a signal), perhaps half-way through reading the results, the
        connection may be out of step with the server and must not go back to the pool."""
        if isinstance(err, DBAPIError):
            with contextlib.suppress(Exception):
                self._store.finish(conn, commit=False)
        else:
            conn.invalidate()

    def _apply_pending(
        self, conn: Connection, driver: DriverSQL, request: Request, posted: Posted, snap: Snapshot
    ) -> Answer | LockError:
        """Apply every pending request not yet answered, ours among them; write once; our answer."""
        assert posted.pending is not None
        pending: list[tuple[int, Request]] = []
        for rid, body in posted.pending:
            if rid == posted.request_id:
                pending.append((rid, request))
                continue
            try:
                other = Request.from_json(driver.decode_request(body))
                if not ANSWER_KEY.fullmatch(other.key):
                    raise LockError(f"no answer key in {body!r:.200}")
                pending.append((rid, other))
            except LockError as err:  # nobody could pick its answer up: its writer applies its own
                logger.warning("lock row %s: skipping posted request %s: %s", self.row_id, rid, err)
        waiting = {r.key for _, r in pending}
        answers = {key: a for key, a in snap.table.answers.items() if key in waiting}
        fresh = 0
        table, mine = snap.table, None
        dead = self._side_prober(snap)
        for rid, other in pending:
            if other.key in answers:
                # Answered by a writer before us; its writer has not picked it up yet. Ours too,
                # when an earlier attempt of this operation is still pending: not applied twice.
                if rid == posted.request_id:
                    mine = answer_from_json(answers[other.key], other)
                continue
            answer: Answer | LockError
            try:
                new, answer = other.apply(table, snap.version, dead, self._log_eviction)
                table = table if new is None else new
            except LockError as err:
                answer = err
            if rid == posted.request_id:
                mine = answer
            else:
                answers[other.key] = answer_to_json(answer, other)
                fresh += 1
        assert mine is not None, "our own request is pending in our own transaction"
        if table is snap.table and not fresh:
            self._store.finish(conn, commit=False)
            self._learn_idle(True)
            return mine
        new_table = table.with_answers(answers)
        self.stats.cas_attempts += 1
        if not driver.apply_posted(conn, posted.request_id, new_table.to_json(), snap.version):
            raise LockError(f"lock row {self.row_id!r} changed while locked FOR UPDATE")
        self.stats.applied_for_others += fresh
        self._remember(new_table, snap.version + 1, cached=False)
        return mine

    def _side_prober(self, snap: Snapshot) -> Prober:
        """Dead-owner questions for one batch, on a pool of their own (never one that writers
        waiting for this row may hold), on committed rows (the posting connection reads uncommitted
        ones), and each owner asked about once per batch."""
        known: dict[str, bool] = {}

        def dead(owners: Iterable[str]) -> set[str]:
            wanted = set(owners)
            unknown = wanted - set(known)
            if unknown and snap.now is not None:
                with self._probe.connect() as conn:
                    gone = self._store.dead_owners(conn, unknown, now=snap.now, lease=self.lease)
                known.update((owner, owner in gone) for owner in unknown)
            return {owner for owner in wanted if known.get(owner)}

        return dead

    def _posting_works(self) -> bool:
        """Whether this database takes posted requests (MariaDB through PyMySQL; known after a connect)."""
        if self._can_post is False and self._post_again_at is not None and time.monotonic() >= self._post_again_at:
            self._can_post, self._post_again_at = None, None  # `boxtasks db upgrade` may have run since
        if self._can_post is None:
            with self._posting.connect() as conn:
                self._can_post = DriverSQL.supports_posting(conn.dialect)
        return self._can_post

    def _prober(self, conn: Connection, snap: Snapshot) -> Prober:
        def dead(owners: Iterable[str]) -> set[str]:
            if snap.now is None:
                raise _NeedsFreshRead
            return self._store.dead_owners(conn, owners, now=snap.now, lease=self.lease)

        return dead

    def _read_version(self) -> int:
        with self._auto.connect() as conn:
            return self._store.version(conn)

    # ------------------------------------------------------------------ choosing the path

    def _remembered(self) -> Snapshot | None:
        """Our last write, when swapping from it has mostly worked lately."""
        if not self._remember_writes:
            return None
        mem = self._memory
        with mem.lock:
            if mem.snapshot is None or mem.memory_risk >= _MEMORY_MAX_RISK:
                return None
            return mem.snapshot

    def _fresh_is_cheaper(self) -> bool:
        if not self._queue_on_conflict:
            return True
        mem = self._memory
        with mem.lock:
            return mem.fresh_risk_now(time.monotonic()) < self._fresh_max_risk

    def _observe(self, snap: Snapshot, *, tried_memory: bool, locked: bool = False) -> None:
        """A read saw the row: keep it as the row last seen, and learn from its version."""
        with self._memory.lock:
            self._memory.seen = snap
            self._learn_version(snap.version, tried_memory=tried_memory, locked=locked)

    def _observe_version(self, version: int, *, tried_memory: bool) -> None:
        """The row is at `version` (an answer to a posted request: the document itself is not read)."""
        with self._memory.lock:
            self._learn_version(version, tried_memory=tried_memory, locked=False)

    def _learn_version(self, version: int, *, tried_memory: bool, locked: bool) -> None:
        """The row is at `version` (the memory's lock held). That tells, exactly, whether a swap from
        our last write would have worked (nobody wrote since); a locked read that finds the row as
        we left it also says that a read-and-swap would have."""
        mem = self._memory
        if mem.snapshot is None:
            return
        untouched = mem.snapshot.version == version
        if not tried_memory:
            mem.learn_memory(failed=not untouched)
        if locked and untouched:
            mem.learn_fresh(failed=False, now=time.monotonic())
        if not untouched:
            mem.snapshot = None

    def _predicts_idle(self, step: Step[Any]) -> bool:
        """Whether `step` writes nothing on the row as we last saw it (tried only when such steps
        have been common lately: a waiter that asks again, mostly)."""
        mem = self._memory
        with mem.lock:
            seen, idle = mem.seen, mem.idle
        if seen is None or idle < _IDLE_HINT:
            return False
        try:
            new, _value = step(seen, _no_prober)
        except _NeedsFreshRead:
            return True  # blocked: it would ask who of its blockers is dead
        except LockError:
            return False
        return new is None

    def _learn(self, *, cached: bool, failed: bool) -> None:
        mem = self._memory
        with mem.lock:
            if cached:
                mem.learn_memory(failed)
            else:
                mem.learn_fresh(failed, time.monotonic())

    def _learn_idle(self, idle: bool) -> None:
        with self._memory.lock:
            self._memory.learn_idle(idle)

    def _remember(self, table: LockTable, version: int, *, cached: bool) -> None:
        if cached:
            self.stats.cached_writes += 1
        with self._memory.lock:
            self._memory.snapshot = self._memory.seen = Snapshot(table, version, None)
            self._memory.learn_idle(False)

    def _forget(self) -> None:
        with self._memory.lock:
            self._memory.snapshot = self._memory.seen = None

    def _withdraw_quietly(self, owner: str) -> None:
        try:
            self.withdraw(owner)
        except Exception:  # the owner's task ending will make the entry dead anyway
            logger.exception("could not withdraw waiter %s", owner)

    def _log_eviction(self, owners: set[str]) -> None:
        self.stats.evicted += len(owners)
        logger.warning("lock row %s: dropping dead owners %s", self.row_id, ", ".join(sorted(owners)))


def _with_multi_statements(url: URL) -> URL:
    """For PyMySQL, let the connection send several statements in one round trip."""
    if url.get_backend_name() not in ("mysql", "mariadb") or url.get_driver_name() != "pymysql":
        return url
    flag = int(str(url.query.get("client_flag", 0))) | MULTI_STATEMENTS
    return url.update_query_dict({"client_flag": str(flag)})


def _one_connection(common: dict[str, Any]) -> dict[str, Any]:
    """Pool options for one connection (only the writer holding the row asks; none on SQLite)."""
    if "pool_size" not in common:
        return common
    return {**common, "pool_size": 1, "max_overflow": 0}


def _missing_table(err: ProgrammingError) -> bool:
    return bool(getattr(err.orig, "args", [None])[0] == 1146)  # ER_NO_SUCH_TABLE


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
