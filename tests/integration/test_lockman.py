"""The lock manager on a real database (SQLite, MariaDB, PostgreSQL): grants, waits, words, liveness
on the database clock, fencing, and what it does with a damaged or missing lock row."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.engine import make_url

from lockman import (
    Grant,
    Granted,
    LockDocumentError,
    LockFormatError,
    LockLostError,
    LockManager,
    LockRowMissingError,
    LockTimeoutError,
    Queued,
)
from models import FINAL_STATES, LockRow, Task, TaskState
from tests.owners import add_owner, set_state

APPTASK_A = {"platform": "S", "app:a": "X"}
LONG_AGO = dt.datetime(2000, 1, 1)


@pytest.fixture
def steady(db_url: str, lock_row: str) -> Iterator[LockManager]:
    """A manager with a long lease, for tests where liveness is not the subject: a slow moment of a
    busy machine must not make a holder look dead. Liveness tests use `manager` (a 2 s lease)."""
    m = LockManager(db_url, row_id=lock_row, lease=30.0)
    m.ensure_row()
    yield m
    m.dispose()


@pytest.fixture
def twin() -> Iterator[Callable[[LockManager], LockManager]]:
    """Another manager on the same row: what another worker process sees and writes."""
    made: list[LockManager] = []

    def make(of: LockManager) -> LockManager:
        made.append(LockManager(of.url, row_id=of.row_id, lease=of.lease.total_seconds()))
        return made[-1]

    yield make
    for m in made:
        m.dispose()


def backend(engine: Engine) -> str:
    return make_url(str(engine.url)).get_backend_name()


def age_heartbeat(engine: Engine, owner: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(Task).where(Task.id == owner).values(heartbeat_at=LONG_AGO))


def heartbeat_of(engine: Engine, owner: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Task.heartbeat_at).where(Task.id == owner)).scalar_one()


def message_of(engine: Engine, owner: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(Task.message).where(Task.id == owner)).scalar_one())


def raw_row(engine: Engine, row_id: str) -> tuple[Any, int]:
    with engine.connect() as conn:
        data, version = conn.execute(select(LockRow.data, LockRow.version).where(LockRow.id == row_id)).one()
    return data, int(version)


def poll(check: Callable[[], bool], *, timeout: float = 30.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


def short(owner: str) -> str:
    return owner[:8] + "…"


# ----------------------------------------------------------------------------- grant, queue, release


def test_grant_queue_release_and_wake(steady: LockManager, engine: Engine) -> None:
    a, b, c = (add_owner(engine) for _ in range(3))
    first = steady.try_acquire(a, APPTASK_A, label="apptask")
    assert isinstance(first, Granted)
    snap = steady.snapshot()
    assert first.token == snap.version, "the fencing token is the version the grant wrote"
    assert {(h.owner, h.name, h.mode.value, h.token) for h in snap.table.holders} == {
        (a, "platform", "S", first.token),
        (a, "app:a", "X", first.token),
    }
    # Shared beside shared: another app's task runs at the same time.
    assert isinstance(steady.try_acquire(b, {"platform": "S", "app:b": "X"}, label="apptask"), Granted)
    # The same app: queued, whole (it holds nothing, not even platform S).
    queued = steady.try_acquire(c, APPTASK_A, label="apptask")
    assert isinstance(queued, Queued)
    snap = steady.snapshot()
    assert snap.table.held_by(c) == {}
    waiter = snap.table.waiter_of(c)
    assert waiter is not None and waiter.seq == queued.seq
    # Asking again keeps its place and writes nothing.
    again = steady.try_acquire(c, APPTASK_A, label="apptask")
    assert isinstance(again, Queued) and again.seq == queued.seq
    assert steady.snapshot().version == snap.version
    # Releasing b frees b's locks only, and wakes nobody: c still waits for a.
    rel = steady.release(b)
    assert {(h.owner, h.name) for h in rel.released} == {(b, "platform"), (b, "app:b")}
    assert rel.ready == ()
    # Releasing a wakes c.
    rel = steady.release(a)
    assert {(h.owner, h.name) for h in rel.released} == {(a, "platform"), (a, "app:a")}
    assert [w.owner for w in rel.ready] == [c]
    granted = steady.try_acquire(c, APPTASK_A, label="apptask")
    assert isinstance(granted, Granted)
    snap = steady.snapshot()
    assert snap.table.waiters == ()
    assert {h.owner for h in snap.table.holders} == {c}
    steady.release(c)
    assert steady.snapshot().table.owners() == set()
    # Releasing what one does not hold writes nothing.
    version = steady.snapshot().version
    assert steady.release(c).released == ()
    assert steady.snapshot().version == version


def test_a_waiter_says_why_it_waits(steady: LockManager, engine: Engine) -> None:
    a, up, b = add_owner(engine), add_owner(engine), add_owner(engine)
    assert isinstance(steady.try_acquire(a, APPTASK_A, label="apptask"), Granted)
    decision = steady.try_acquire(b, APPTASK_A, label="apptask")
    assert isinstance(decision, Queued)
    words = f"Waiting for apptask (task {short(a)}) to release app:a"
    assert decision.describe() == words
    assert [x.describe() for x in steady.snapshot().table.blockers_of(b)] == [words]
    # An update waiting for platform X, and an apptask for another app that must queue behind it.
    steady.release(b)
    assert isinstance(steady.try_acquire(up, {"platform": "X"}, label="update"), Queued)
    c = add_owner(engine)
    decision = steady.try_acquire(c, {"platform": "S", "app:c": "X"}, label="apptask")
    assert isinstance(decision, Queued), "an apptask overtook the update waiting for platform X"
    assert decision.describe() == f"Waiting behind update (task {short(up)}), queued earlier for platform"
    table = steady.snapshot().table
    assert [x.describe() for x in table.blockers_of(up)] == [
        f"Waiting for apptask (task {short(a)}) to release platform"
    ]


def test_fullbackup_takes_an_app_lock_ahead_of_a_queued_apptask(steady: LockManager, engine: Engine) -> None:
    """DESIGN.md's deadlock example, through the database."""
    fb, up, at = add_owner(engine), add_owner(engine), add_owner(engine)
    assert isinstance(steady.try_acquire(fb, {"task:fullbackup": "X", "platform": "S"}, label="fullbackup"), Granted)
    assert isinstance(steady.try_acquire(up, {"task:update": "X"}, label="update"), Granted)
    assert isinstance(steady.try_acquire(up, {"platform": "X"}, label="update"), Queued)
    assert isinstance(steady.try_acquire(at, {"platform": "S", "app:D": "X"}, label="apptask"), Queued)
    nested = steady.try_acquire(fb, {"app:D": "X"}, label="fullbackup")
    assert isinstance(nested, Granted)
    held = steady.snapshot().table.held_by(fb)
    assert set(held) == {"task:fullbackup", "platform", "app:D"}
    assert held["app:D"].token == nested.token > held["platform"].token


# ----------------------------------------------------------------------------- liveness


def test_a_holder_with_a_stale_heartbeat_is_evicted_by_the_next_blocked_writer(
    manager: LockManager, engine: Engine
) -> None:
    a, b = add_owner(engine), add_owner(engine)
    assert isinstance(manager.try_acquire(a, APPTASK_A, label="apptask"), Granted)
    assert isinstance(manager.try_acquire(b, APPTASK_A), Queued), "a's heartbeat is fresh: it is alive"
    # a goes silent; b keeps its own heartbeat and asks again until a's lease has run out.
    decisions: list[object] = []

    def b_gets_it() -> bool:
        manager.heartbeat(b)
        decisions.append(manager.try_acquire(b, APPTASK_A))
        return isinstance(decisions[-1], Granted)

    assert poll(b_gets_it, timeout=30, every=0.2), "a's locks were never dropped"
    table = manager.snapshot().table
    assert a not in table.owners()
    assert set(table.held_by(b)) == {"platform", "app:a"}
    assert manager.stats.evicted >= 1


def test_a_holder_that_keeps_beating_is_never_evicted(
    manager: LockManager, twin: Callable[[LockManager], LockManager], engine: Engine
) -> None:
    rival = twin(manager)
    a, b = add_owner(engine), add_owner(engine)
    grant = manager.acquire(a, APPTASK_A, label="apptask")
    stop = threading.Event()
    beats: list[bool] = []

    def heartbeat() -> None:
        while not stop.is_set():
            beats.append(manager.heartbeat(a))
            stop.wait(0.2)

    beater = threading.Thread(target=heartbeat, daemon=True)
    beater.start()
    try:
        lease = manager.lease.total_seconds()
        deadline = time.monotonic() + 3 * lease + 0.5
        attempts = 0
        while time.monotonic() < deadline:
            rival.heartbeat(b)
            decision = rival.try_acquire(b, APPTASK_A)
            assert isinstance(decision, Queued), f"a was evicted after {attempts} attempts though it beat"
            rival.sweep()
            attempts += 1
            time.sleep(0.1)
    finally:
        stop.set()
        beater.join(10)
    assert all(beats) and len(beats) >= 6, f"the heartbeat thread did not keep beating: {beats}"
    assert manager.holds(grant)
    assert set(manager.snapshot().table.held_by(a)) == {"platform", "app:a"}


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_a_finished_task_is_dead_at_once(steady: LockManager, engine: Engine, state: str) -> None:
    a, b = add_owner(engine), add_owner(engine)
    assert isinstance(steady.try_acquire(a, APPTASK_A), Granted)
    set_state(engine, a, state)  # its heartbeat is still fresh: the state alone decides
    assert isinstance(steady.try_acquire(b, APPTASK_A), Granted)
    assert a not in steady.snapshot().table.owners()


def test_a_task_whose_row_is_gone_is_dead_at_once(steady: LockManager, engine: Engine) -> None:
    a, b = add_owner(engine), add_owner(engine)
    assert isinstance(steady.try_acquire(a, APPTASK_A), Granted)
    with engine.begin() as conn:
        conn.execute(delete(Task).where(Task.id == a))
    assert isinstance(steady.try_acquire(b, APPTASK_A), Granted)
    assert not steady.heartbeat(a), "a heartbeat for a missing task row reports False"


def test_a_waiting_task_needs_no_heartbeat_but_a_running_one_always_does(steady: LockManager, engine: Engine) -> None:
    holder, late = add_owner(engine), add_owner(engine)
    parked = add_owner(engine, state=TaskState.WAITING)  # no process: no heartbeat expected
    running = add_owner(engine)  # a waiter with a process: its heartbeat counts
    assert isinstance(steady.try_acquire(holder, {"app:a": "X"}), Granted)
    assert isinstance(steady.try_acquire(parked, {"app:a": "X"}), Queued)
    assert isinstance(steady.try_acquire(running, {"app:a": "X"}), Queued)
    age_heartbeat(engine, parked)
    age_heartbeat(engine, running)
    # `late` is blocked by the holder and both earlier waiters: it probes all three.
    assert isinstance(steady.try_acquire(late, {"app:a": "X"}), Queued)
    table = steady.snapshot().table
    assert table.waiter_of(parked) is not None, "a waiting task was judged dead for want of a heartbeat"
    assert table.waiter_of(running) is None, "a running waiter silent past its lease is dead"
    assert set(table.held_by(holder)) == {"app:a"}
    # A holder that parked (waiting, no process: a full backup waiting for a busy app) keeps its
    # locks without a heartbeat; the same holder running, silent past its lease, is dead.
    set_state(engine, holder, TaskState.WAITING)
    age_heartbeat(engine, holder)
    assert isinstance(steady.try_acquire(parked, {"app:a": "X"}), Queued)
    assert set(steady.snapshot().table.held_by(holder)) == {"app:a"}
    set_state(engine, holder, TaskState.RUNNING)
    steady.withdraw(late)
    assert isinstance(steady.try_acquire(late, {"app:b": "X", "platform": "S"}), Granted)
    assert isinstance(steady.try_acquire(parked, {"app:a": "X"}), Granted)
    assert holder not in steady.snapshot().table.owners()


def test_heartbeat_stamps_the_database_clock(steady: LockManager, engine: Engine) -> None:
    a = add_owner(engine)
    age_heartbeat(engine, a)
    assert steady.heartbeat(a)
    stamped = heartbeat_of(engine, a)
    assert stamped is not None and stamped > LONG_AGO
    assert not steady.heartbeat("no-such-task")


def test_sweep_drops_every_dead_owner_and_reports_who_can_go(steady: LockManager, engine: Engine) -> None:
    finished, silent, alive = add_owner(engine), add_owner(engine), add_owner(engine)
    parked = add_owner(engine, state=TaskState.WAITING)
    lost_waiter = add_owner(engine)
    assert isinstance(steady.try_acquire(finished, {"app:a": "X"}), Granted)
    assert isinstance(steady.try_acquire(silent, {"app:b": "X"}), Granted)
    assert isinstance(steady.try_acquire(alive, {"app:c": "X"}), Granted)
    assert isinstance(steady.try_acquire(parked, {"app:b": "X"}), Queued)
    assert isinstance(steady.try_acquire(lost_waiter, {"app:c": "X"}), Queued)
    # Nothing dead yet: sweep writes nothing.
    version = steady.snapshot().version
    rel = steady.sweep()
    assert rel.released == () and rel.ready == ()
    assert steady.snapshot().version == version
    set_state(engine, finished, TaskState.SUCCEEDED)
    age_heartbeat(engine, silent)
    age_heartbeat(engine, parked)
    age_heartbeat(engine, lost_waiter)
    assert steady.heartbeat(alive)
    rel = steady.sweep()
    assert {(h.owner, h.name) for h in rel.released} == {(finished, "app:a"), (silent, "app:b")}
    assert [w.owner for w in rel.ready] == [parked]
    table = steady.snapshot().table
    assert table.owners() == {alive, parked}
    assert steady.snapshot().version == version + 1, "one sweep, one write"


# ----------------------------------------------------------------------------- blocking acquire


def test_acquire_times_out_and_leaves_no_waiter(
    steady: LockManager, twin: Callable[[LockManager], LockManager], engine: Engine
) -> None:
    rival = twin(steady)
    a, b = add_owner(engine), add_owner(engine)
    rival.acquire(a, APPTASK_A, label="apptask")
    told: list[Queued] = []
    with pytest.raises(LockTimeoutError) as info:
        steady.acquire(b, APPTASK_A, timeout=1.0, on_wait=told.append)
    assert "Waiting for apptask" in str(info.value)
    assert len(told) == 1 and isinstance(told[0], Queued)
    table = steady.snapshot().table
    assert table.waiter_of(b) is None, "a timed-out acquire left its waiter entry behind"
    assert table.held_by(b) == {}
    assert set(table.held_by(a)) == {"platform", "app:a"}


def test_acquire_returns_once_the_holder_releases(
    steady: LockManager, twin: Callable[[LockManager], LockManager], engine: Engine
) -> None:
    rival = twin(steady)
    a, b = add_owner(engine), add_owner(engine)
    steady.acquire(a, APPTASK_A, label="apptask")
    result: dict[str, Any] = {}

    def wait_for_it() -> None:
        try:
            result["grant"] = rival.acquire(b, APPTASK_A, label="apptask", timeout=60)
        except Exception as err:  # reported below
            result["error"] = err

    waiter = threading.Thread(target=wait_for_it, daemon=True)
    waiter.start()
    assert poll(lambda: steady.snapshot().table.waiter_of(b) is not None), "b never queued"
    assert "grant" not in result, "b was granted while a held the lock"
    steady.release(a)
    waiter.join(30)
    assert not waiter.is_alive(), "acquire did not return after the release"
    assert "error" not in result, result.get("error")
    grant = result["grant"]
    assert isinstance(grant, Grant) and grant.owner == b
    assert rival.holds(grant)
    assert steady.snapshot().table.held_by(b)["app:a"].token == grant.token


# ----------------------------------------------------------------------------- fencing


def test_fenced_commits_while_the_grant_holds(steady: LockManager, engine: Engine) -> None:
    a, probe = add_owner(engine), add_owner(engine)
    grant = steady.acquire(a, APPTASK_A)
    with steady.fenced(grant) as conn:
        conn.execute(update(Task).where(Task.id == probe).values(message="written by a"))
    assert message_of(engine, probe) == "written by a"
    # Still fenced after a nested grant (an older token stays valid while the locks are held).
    steady.acquire(a, {"app:b": "X"})
    with steady.fenced(grant) as conn:
        conn.execute(update(Task).where(Task.id == probe).values(message="written again"))
    assert message_of(engine, probe) == "written again"


def test_fenced_refuses_after_the_grant_was_evicted(
    steady: LockManager, twin: Callable[[LockManager], LockManager], engine: Engine
) -> None:
    rival = twin(steady)
    a, b, probe = add_owner(engine), add_owner(engine), add_owner(engine)
    grant = steady.acquire(a, APPTASK_A)
    rival.evict([a])
    assert rival.acquire(b, APPTASK_A, timeout=10).owner == b
    assert not steady.holds(grant)
    with pytest.raises(LockLostError, match="nothing was committed"), steady.fenced(grant) as conn:
        conn.execute(update(Task).where(Task.id == probe).values(message="written by a"))
    assert message_of(engine, probe) == ""


def test_fenced_refuses_when_the_grant_is_lost_during_the_transaction(
    steady: LockManager, twin: Callable[[LockManager], LockManager], engine: Engine
) -> None:
    """The check is the last statement before COMMIT, not a look at the start."""
    rival = twin(steady)
    a, b, probe = add_owner(engine), add_owner(engine), add_owner(engine)
    grant = steady.acquire(a, APPTASK_A)
    sqlite = backend(engine) == "sqlite"
    with pytest.raises(LockLostError), steady.fenced(grant) as conn:
        if sqlite:
            # SQLite has one writer: the eviction must go in before this transaction writes.
            rival.evict([a])
            assert rival.acquire(b, APPTASK_A, timeout=10).owner == b
            conn.execute(update(Task).where(Task.id == probe).values(message="written by a"))
        else:
            conn.execute(update(Task).where(Task.id == probe).values(message="written by a"))
            rival.evict([a])
            assert rival.acquire(b, APPTASK_A, timeout=10).owner == b
    assert message_of(engine, probe) == ""


# ----------------------------------------------------------------------------- a damaged or missing row

DAMAGED_DOCS = {
    "holders not a list": {"holders": "t1", "waiters": [], "seq": 0},
    "no waiters": {"holders": [], "seq": 0},
    "two X holders": {
        "holders": [
            {"owner": "t1", "name": "app:a", "mode": "X", "token": 1},
            {"owner": "t2", "name": "app:a", "mode": "X", "token": 2},
        ],
        "waiters": [],
        "seq": 0,
    },
    "a list": [1, 2],
    "a string": "locks",
    "null": None,
}


@pytest.mark.parametrize("doc", list(DAMAGED_DOCS.values()), ids=list(DAMAGED_DOCS))
def test_a_hand_edited_row_is_refused_and_left_alone(steady: LockManager, engine: Engine, doc: object) -> None:
    a = add_owner(engine)
    with engine.begin() as conn:
        conn.execute(update(LockRow).where(LockRow.id == steady.row_id).values(data=doc, version=41))
    before = raw_row(engine, steady.row_id)
    assert before == (doc, 41)
    operations: dict[str, Callable[[], object]] = {
        "snapshot": steady.snapshot,
        "try_acquire": lambda: steady.try_acquire(a, APPTASK_A),
        "acquire": lambda: steady.acquire(a, APPTASK_A, timeout=1),
        "release": lambda: steady.release(a),
        "withdraw": lambda: steady.withdraw(a),
        "sweep": steady.sweep,
    }
    for name, operation in operations.items():
        with pytest.raises(LockDocumentError) as info:
            operation()
        assert info.value.row_id == steady.row_id, name
        assert repr(steady.row_id) in str(info.value), name
    assert raw_row(engine, steady.row_id) == before, "the damaged row was overwritten"


@pytest.mark.parametrize("path", ["optimistic", "locked"])
def test_a_document_of_a_newer_release_is_refused_and_left_alone(
    steady: LockManager, engine: Engine, path: str
) -> None:
    """Two releases on one row during an upgrade: this one, having written the row last (so it would
    swap from memory), finds a newer format there, or a field it does not know, and refuses."""
    a = add_owner(engine)
    assert isinstance(steady.try_acquire(a, APPTASK_A), Granted)
    doc, version = raw_row(engine, steady.row_id)
    newer = [
        {**doc, "v": 2},
        {**doc, "leases": {a: 30}},
        {**doc, "holders": [{**h, "expires": "2026-12-08T00:00:00"} for h in doc["holders"]]},
    ]
    for written in newer:
        version += 1
        with engine.begin() as conn:
            conn.execute(update(LockRow).where(LockRow.id == steady.row_id).values(data=written, version=version))
        if path == "locked":
            steady._forget()
            steady._memory.miss_rate = 1.0
        for operation in (lambda: steady.release(a), lambda: steady.try_acquire(a, {"app:b": "X"}), steady.sweep):
            with pytest.raises(LockFormatError, match="newer release") as info:
                operation()
            assert info.value.row_id == steady.row_id
        assert raw_row(engine, steady.row_id) == (written, version), "the newer document was overwritten"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_row_that_is_not_json_at_all_is_refused_naming_the_row(steady: LockManager, engine: Engine) -> None:
    """Only SQLite lets non-JSON text into the JSON column (MariaDB and PostgreSQL check it on write)."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE locks SET data = '{not json' WHERE id = :id"), {"id": steady.row_id})
    with pytest.raises(LockDocumentError) as info:
        steady.snapshot()
    assert info.value.row_id == steady.row_id
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT data FROM locks WHERE id = :id"), {"id": steady.row_id}).scalar_one()
    assert raw == "{not json"


def test_a_missing_row_says_to_run_db_upgrade(db_url: str, engine: Engine, lock_row: str) -> None:
    a = add_owner(engine)
    manager = LockManager(db_url, row_id=lock_row, lease=30.0)
    try:
        for operation in (
            manager.snapshot,
            lambda: manager.try_acquire(a, APPTASK_A),
            lambda: manager.acquire(a, APPTASK_A, timeout=1),
            lambda: manager.release(a),
            manager.sweep,
        ):
            with pytest.raises(LockRowMissingError, match="boxtasks db upgrade"):
                operation()
        with engine.connect() as conn:
            assert conn.execute(select(LockRow.id).where(LockRow.id == lock_row)).first() is None
        # ensure_row makes it, empty; a second call changes nothing.
        manager.ensure_row()
        manager.ensure_row()
        snap = manager.snapshot()
        assert snap.table.owners() == set() and snap.version == 0
    finally:
        manager.dispose()
