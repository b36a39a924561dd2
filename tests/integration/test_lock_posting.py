"""Posted requests on MariaDB: a writer waiting for the lock row is answered by the writer ahead of it.

The scenes are set by holding the lock row from a connection of the test's own, so that the
writers line up behind it in a known order; the test lets go when their requests are posted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text

from lockman import Granted, LockManager, LockStateError, Queued, Release, Request
from tests.integration.test_lock_roundtrips import _contended
from tests.owners import add_owner

pytestmark = pytest.mark.mariadb


@pytest.fixture
def owners(mariadb_url: str) -> list[str]:
    engine = create_engine(mariadb_url)
    try:
        return [add_owner(engine) for _ in range(4)]
    finally:
        engine.dispose()


@pytest.fixture
def writers(mariadb_url: str, lock_row: str) -> Iterator[list[LockManager]]:
    """Three managers on one row (three processes, as far as the row can tell), all on the queued path."""
    ms = [LockManager(mariadb_url, row_id=lock_row, lease=30.0) for _ in range(3)]
    ms[0].ensure_row()
    for m in ms:
        _contended(m)
    yield ms
    for m in ms:
        m.dispose()


@pytest.fixture
def row_holder(mariadb_url: str, lock_row: str) -> Iterator[Connection]:
    """A connection that holds the lock row (SELECT ... FOR UPDATE) until the test rolls it back."""
    engine = create_engine(mariadb_url, isolation_level="READ UNCOMMITTED")
    with engine.connect() as conn:
        conn.execute(text("SELECT version FROM locks WHERE id = :id FOR UPDATE"), {"id": lock_row})
        yield conn
        conn.rollback()
    engine.dispose()


def pending(conn: Connection, lock_row: str) -> list[int]:
    """The posted requests for the row, uncommitted ones included (the holder reads uncommitted)."""
    rows = conn.execute(text("SELECT id FROM lock_requests WHERE row_id = :r ORDER BY id"), {"r": lock_row})
    return [int(r[0]) for r in rows]


class InThread:
    """Run a lock call in a thread (a writer blocked in the database); keep its answer or error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.answer: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.answer = call()
        except BaseException as err:
            self.error = err

    def result(self) -> Any:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the writer never came back"
        if self.error is not None:
            raise self.error
        return self.answer


def wait_for_pending(conn: Connection, lock_row: str, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(ids := pending(conn, lock_row)) < count:
        assert time.monotonic() < deadline, f"expected {count} posted requests, found {ids}"
        time.sleep(0.01)
    return ids


def asks(m: LockManager, owner: str, lock: str) -> Callable[[], Any]:
    """A writer's call: `owner` asks `m` for `lock` X."""
    return lambda: m.try_acquire(owner, {lock: "X"})


def line_up(row_holder: Connection, lock_row: str, *calls: Callable[[], Any]) -> tuple[list[InThread], list[int]]:
    """Start each call (a writer) once the one before has posted its request, so that they line up
    behind the held row in this order; then let go of the row. The writers, and their request ids."""
    writers, ids = [], []
    for count, call in enumerate(calls, 1):
        writers.append(InThread(call))
        ids = wait_for_pending(row_holder, lock_row, count)
    row_holder.rollback()
    return writers, ids


def holder_and_waiter(url: str, lock_row: str, row_holder: Connection, *, holder: str, waiter: str, lock: str) -> None:
    """Before the scene: `holder` holds `lock` X and `waiter` waits for it; the row is held again after."""
    row_holder.rollback()
    setup = LockManager(url, row_id=lock_row, lease=30.0)
    try:
        assert isinstance(setup.try_acquire(holder, {lock: "X"}), Granted)
        assert isinstance(setup.try_acquire(waiter, {lock: "X"}), Queued)
    finally:
        setup.dispose()
    row_holder.execute(text("SELECT version FROM locks WHERE id = :id FOR UPDATE"), {"id": lock_row})


def test_the_writer_ahead_applies_the_requests_behind_it_and_they_leave_with_its_answers(
    writers: list[LockManager], owners: list[str], row_holder: Connection, lock_row: str
) -> None:
    first, second, third = writers
    a, b, c, _ = owners
    (t1, t2, t3), _ = line_up(  # the first writer applies all three in one write
        row_holder,
        lock_row,
        lambda: first.try_acquire(a, {"platform": "S", "app:a": "X"}),
        lambda: second.try_acquire(b, {"platform": "S", "app:b": "X"}),
        lambda: third.try_acquire(c, {"platform": "X"}),
    )

    one, two, three = t1.result(), t2.result(), t3.result()
    assert isinstance(one, Granted) and isinstance(two, Granted)
    assert one.token == two.token, "granted in the same compare-and-swap"
    assert isinstance(three, Queued), "platform X waits for the two S holders, in posting order"
    assert {b.owner for b in three.blockers} == {a, b}
    assert first.stats.applied_for_others == 2
    assert second.stats.answered_for_us == 1 and third.stats.answered_for_us == 1
    table = first.snapshot().table
    assert {(h.owner, h.name) for h in table.holders} == {(a, "platform"), (a, "app:a"), (b, "platform"), (b, "app:b")}
    assert [w.owner for w in table.waiters] == [c]
    assert pending(row_holder, lock_row) == [], "every request went with its writer's transaction"


def test_a_release_answered_by_another_writer_says_whom_to_wake(
    writers: list[LockManager], owners: list[str], row_holder: Connection, lock_row: str, mariadb_url: str
) -> None:
    first, second, _ = writers
    a, b, c, _ = owners
    holder_and_waiter(mariadb_url, lock_row, row_holder, holder=b, waiter=c, lock="app:x")

    (t1, t2), _ = line_up(row_holder, lock_row, asks(first, a, "app:a"), lambda: second.release(b))

    assert isinstance(t1.result(), Granted)
    release = t2.result()
    assert isinstance(release, Release)
    assert second.stats.answered_for_us == 1
    assert [(h.owner, h.name) for h in release.released] == [(b, "app:x")]
    assert [w.owner for w in release.ready] == [c], "the waiter to wake, as if the releaser had written"


def test_an_error_in_a_request_applied_by_another_is_raised_in_its_own_writer(
    writers: list[LockManager], owners: list[str], row_holder: Connection, lock_row: str, mariadb_url: str
) -> None:
    first, second, _ = writers
    a, b, c, _ = owners
    holder_and_waiter(mariadb_url, lock_row, row_holder, holder=c, waiter=b, lock="app:y")

    # b waits for app:y; asking for something else without withdrawing is refused.
    (t1, t2), _ = line_up(row_holder, lock_row, asks(first, a, "app:a"), asks(second, b, "app:z"))

    assert isinstance(t1.result(), Granted)
    with pytest.raises(LockStateError, match="already waits for app:y X"):
        t2.result()
    assert second.stats.answered_for_us == 1


def test_a_request_whose_writer_died_before_it_was_read_is_not_applied_and_old_answers_are_dropped(
    writers: list[LockManager], owners: list[str], row_holder: Connection, lock_row: str, mariadb_url: str
) -> None:
    first, second, _ = writers
    a, b, _, d = owners
    # A writer that posts and dies before anyone reads its request: its request goes with it.
    engine = create_engine(mariadb_url)
    with engine.connect() as doomed:
        doomed.execute(
            text("INSERT INTO lock_requests (row_id, body) VALUES (:r, :b)"),
            {"r": lock_row, "b": f'{{"kind": "acquire", "owner": "{d}", "locks": {{"app:d": "X"}}}}'},
        )
        assert len(pending(row_holder, lock_row)) == 1
        doomed.invalidate()  # the process is gone: the server rolls its transaction back
    engine.dispose()
    deadline = time.monotonic() + 10
    while pending(row_holder, lock_row):
        assert time.monotonic() < deadline, "the dead writer's request outlived its connection"
        time.sleep(0.01)

    # One that dies after its request was answered: the answer stays until a later writer sees
    # the request gone, then it is dropped.
    (t1, t2), _ = line_up(row_holder, lock_row, asks(first, a, "app:a"), asks(second, b, "app:b"))
    assert isinstance(t1.result(), Granted) and isinstance(t2.result(), Granted)
    assert len(first.snapshot().table.answers) == 1, "b's answer stays for its writer until a later write"
    assert d not in first.snapshot().table.owners()

    _contended(first)  # it wrote last: it would swap from memory, and wait on the row without posting
    row_holder.execute(text("SELECT version FROM locks WHERE id = :id FOR UPDATE"), {"id": lock_row})
    (t3,), _ = line_up(row_holder, lock_row, lambda: first.release(a))
    assert t3.result().released
    assert first.snapshot().table.answers == {}, "answers to requests that are gone are dropped"


def test_an_answer_is_found_by_its_request_key_not_by_a_request_id_the_server_hands_out_again(
    writers: list[LockManager], owners: list[str], row_holder: Connection, lock_row: str, mariadb_url: str
) -> None:
    """Request ids restart (a promoted replica, a recreated table): an old answer left under an id
    must not be taken by a new request that gets the same id."""
    first, second, _ = writers
    a, b, c, d = owners
    (t1, t2), (_, b_id) = line_up(row_holder, lock_row, asks(first, a, "app:z"), asks(second, b, "app:b"))
    assert isinstance(t1.result(), Granted) and isinstance(t2.result(), Granted)
    assert first.snapshot().table.answers, "b's answer (a grant) is left behind"
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:  # the ids start again: d's request gets the id b's had
        conn.execute(text(f"ALTER TABLE lock_requests AUTO_INCREMENT = {b_id - 1}"))
    engine.dispose()

    for m in writers:
        _contended(m)
    row_holder.execute(text("SELECT version FROM locks WHERE id = :id FOR UPDATE"), {"id": lock_row})
    (t3, t4), ids = line_up(  # a holds app:z: d must wait
        row_holder, lock_row, asks(first, c, "app:c"), asks(second, d, "app:z")
    )
    assert ids[1] == b_id, "the scene needs the id to come again"
    assert isinstance(t3.result(), Granted)
    waits = t4.result()
    assert isinstance(waits, Queued) and [x.owner for x in waits.blockers] == [a]
    holders = {(h.owner, h.name) for h in first.snapshot().table.holders}
    assert (a, "app:z") in holders and (d, "app:z") not in holders


def test_a_dead_holder_blocking_a_posted_request_is_dropped_by_the_writer_that_applies_it(
    writers: list[LockManager], owners: list[str], row_holder: Connection, lock_row: str, mariadb_url: str
) -> None:
    first, second, _ = writers
    a, b, c, _ = owners
    holder_and_waiter(mariadb_url, lock_row, row_holder, holder=c, waiter=a, lock="app:q")
    engine = create_engine(mariadb_url)
    with engine.begin() as conn:  # c's task ended without releasing: its locks are dead
        conn.execute(text("UPDATE tasks SET state = 'succeeded' WHERE id = :id"), {"id": c})
    engine.dispose()

    (t1, t2), _ = line_up(row_holder, lock_row, asks(first, b, "app:b"), asks(second, a, "app:q"))
    assert isinstance(t1.result(), Granted)
    assert isinstance(t2.result(), Granted), "granted once the dead holder was dropped"
    assert first.stats.evicted == 1 and second.stats.answered_for_us == 1
    assert c not in first.snapshot().table.owners()


def test_a_retry_is_not_applied_again_while_the_earlier_attempt_is_pending_and_keyless_requests_are_skipped(
    writers: list[LockManager], owners: list[str], row_holder: Connection, lock_row: str, mariadb_url: str
) -> None:
    """An earlier attempt of a release is still pending (its writer has not ended it yet) when the
    retry, under the same key, gets the row: the retry answers with what the first release freed,
    not with "nothing held". A request that carries no answer key is left alone."""
    first, _, _ = writers
    a, _, _, d = owners
    row_holder.rollback()  # no scene of waiting writers here: the earlier attempt is posted by hand
    assert isinstance(first.try_acquire(a, {"app:a": "X"}), Granted)
    _contended(first)
    key = "0123456789abcdef"
    engine = create_engine(mariadb_url)
    try:
        with engine.connect() as earlier:  # both requests stay pending, uncommitted, until the end
            for body in (
                f'{{"kind": "release", "owner": "{a}", "key": "{key}"}}',
                f'{{"kind": "acquire", "owner": "{d}", "locks": {{"app:d": "X"}}}}',
            ):
                insert = text("INSERT INTO lock_requests (row_id, body) VALUES (:r, :b)")
                earlier.execute(insert, {"r": lock_row, "b": body})
            retry = Request("release", owner=a, key=key)
            step: Any = None  # the posting path needs no step (only its fallback does)
            release = first._posted(retry, step)
            earlier.rollback()
    finally:
        engine.dispose()
    assert isinstance(release, Release)
    assert [(h.owner, h.name) for h in release.released] == [(a, "app:a")], "the first release's answer"
    owners_now = first.snapshot().table.owners()
    assert a not in owners_now and d not in owners_now, "released once; the keyless request skipped"
