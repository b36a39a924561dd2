"""Property tests of the pure lock table (`lockman.table.LockTable`): no database, no processes.

A hypothesis state machine drives one table through requests (fresh and nested), re-requests by
waiters, releases, withdrawals and evictions, and checks after every step the rules of DESIGN.md
"Locks": never two X holders and never X beside S; all or nothing; first come, first served among
conflicting requests; release frees exactly what the owner held; eviction wakes who it unblocks;
and no deadlock: from every reachable state, granting ready waiters and releasing holders that do
not wait drains the whole queue.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lockman.errors import LockDeadlockError, LockDocumentError, LockStateError
from lockman.plan import LockSet, Mode, conflicts, covers, lock_set
from lockman.table import Granted, Holder, LockTable, Queued, Waiter

S, X = Mode.SHARED, Mode.EXCLUSIVE
OWNERS = ("o1", "o2", "o3", "o4", "o5")
NAMES = ("platform", "task:fullbackup", "task:update", "app:a", "app:b", "app:c")
APPS = ("app:a", "app:b", "app:c")
ROW = "row-under-test"

# ----------------------------------------------------------------------------- helpers


def _ls(plan: dict[str, str]) -> LockSet:
    return lock_set(plan)


#: The plans of DESIGN.md's table, plus arbitrary ones.
_REAL_PLANS = st.sampled_from(
    [
        {"platform": "S", "app:a": "X"},  # apptask(app a)
        {"platform": "S", "app:b": "X"},
        {"platform": "S", "app:c": "X"},
        {"task:fullbackup": "X", "platform": "S"},  # fullbackup, first step
        {"task:update": "X"},  # update, first step
        {"platform": "X"},  # update's update part, platformstart
        {"task:update": "X", "platform": "X"},
    ]
)
_ANY_PLAN = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(["S", "X"]), min_size=1, max_size=3)
PLANS = st.one_of(_REAL_PLANS, _ANY_PLAN).map(_ls)
#: What an owner that already holds locks asks for next: one app at a time (fullbackup), or anything.
NESTED_PLANS = st.one_of(
    st.sampled_from(APPS).map(lambda a: ((a, X),)),
    st.sampled_from(APPS).map(lambda a: ((a, X),)),
    st.just((("platform", X),)),
    _ANY_PLAN.map(_ls),
)


def check_table(t: LockTable, *, written_by_us: bool = True) -> None:
    """What must hold of every table: compatible holders, a well-formed FIFO queue.

    A table the code made also records truthfully which waiters are nested (their owner holds locks);
    a hand-edited document may not, and the table must then judge by the holdings, not the flag.
    """
    by_name: dict[str, list[Holder]] = {}
    for h in t.holders:
        by_name.setdefault(h.name, []).append(h)
    for name, group in by_name.items():
        owners = [h.owner for h in group]
        assert len(set(owners)) == len(owners), f"{name}: an owner holds it twice: {group}"
        if len(group) > 1:
            assert all(h.mode is S for h in group), f"{name}: X beside another holder: {group}"
    seqs = [w.seq for w in t.waiters]
    assert seqs == sorted(set(seqs)), f"waiters not in strictly increasing seq order: {seqs}"
    assert not seqs or seqs[-1] <= t.seq
    assert len({w.owner for w in t.waiters}) == len(t.waiters), "an owner waits twice"
    for w in t.waiters:
        assert w.locks, f"{w.owner} waits for nothing"
        if written_by_us:
            assert w.nested == bool(t.held_by(w.owner)), f"{w.owner}: nested={w.nested} but holds {t.held_by(w.owner)}"


def conflicting_earlier_waiters(t: LockTable, owner: str, locks: LockSet, before: int | None) -> list[Waiter]:
    wanted = dict(locks)
    return [
        w
        for w in t.waiters
        if w.owner != owner
        and (before is None or w.seq < before)
        and any(n in wanted and conflicts(m, wanted[n]) for n, m in w.locks)
    ]


def conflicting_holders(t: LockTable, owner: str, locks: LockSet) -> list[Holder]:
    wanted = dict(locks)
    return [h for h in t.holders if h.owner != owner and h.name in wanted and conflicts(h.mode, wanted[h.name])]


def wait_for_graph(t: LockTable) -> dict[str, set[str]]:
    """Who waits for whom: a waiter waits for the holders it conflicts with and, unless nested, for
    the earlier waiters it conflicts with. Built from the rules, not from the table's own helpers."""
    graph: dict[str, set[str]] = {}
    for w in t.waiters:
        edges = {h.owner for h in conflicting_holders(t, w.owner, w.locks)}
        if not t.held_by(w.owner):
            edges |= {e.owner for e in conflicting_earlier_waiters(t, w.owner, w.locks, w.seq)}
        graph[w.owner] = edges
    return graph


def reaches(graph: dict[str, set[str]], start: Iterable[str], target: str) -> bool:
    stack, seen = list(start), set()
    while stack:
        node = stack.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return False


def drain(t: LockTable, token: int) -> LockTable:
    """Run the queue to the end: grant waiters that are granted when they ask again, else release a
    holder that does not itself wait. Fails if waiters remain and nothing can move (a deadlock)."""
    for _ in range(10 * (len(t.waiters) + len(t.holders)) + 10):
        if not t.waiters:
            return t
        moved = False
        for w in list(t.waiters):
            token += 1
            new, decision = t.request(w.owner, w.locks, token=token, label=w.label)
            if isinstance(decision, Granted):
                t, moved = new, True
        if moved:
            continue
        waiting = {w.owner for w in t.waiters}
        idle = sorted({h.owner for h in t.holders} - waiting)
        assert idle, f"deadlock: waiters {t.waiters} can never be granted; holders {t.holders}"
        t, _ = t.release(idle[0])
    raise AssertionError(f"the queue did not drain: {t}")


def json_round_trip(t: LockTable) -> LockTable:
    return LockTable.from_json(json.loads(json.dumps(t.to_json())), row_id=ROW)


# ----------------------------------------------------------------------------- the state machine


class LockTableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = LockTable()
        self.version = 0

    # ------------------------------------------------------------ helpers

    def _next_token(self) -> int:
        self.version += 1
        return self.version

    def _request(self, owner: str, locks: LockSet, label: str) -> None:
        t = self.table
        held_before = t.held_by(owner)
        mine = t.waiter_of(owner)
        others_before = [h for h in t.holders if h.owner != owner]
        waiters_before = [w for w in t.waiters if w.owner != owner]
        token = self.version + 1
        nested = bool(held_before)
        try:
            new, decision = t.request(owner, locks, token=token, label=label)
        except LockDeadlockError:
            # Only a nested request may be refused, only when it would queue, and only on a real cycle.
            assert nested and mine is None, f"{owner} refused without holding anything"
            missing = tuple((n, m) for n, m in locks if n not in held_before or not covers(held_before[n].mode, m))
            blockers = {h.owner for h in conflicting_holders(t, owner, missing)}
            assert blockers, "refused a request that had no blocking holder"
            assert reaches(wait_for_graph(t), blockers, owner), f"{owner} refused for {missing} without a cycle"
            return
        if new is not t:
            self.version = token
        held_after = new.held_by(owner)
        # Others are never touched by a request.
        assert [h for h in new.holders if h.owner != owner] == others_before
        assert [w for w in new.waiters if w.owner != owner] == waiters_before
        # What the owner held stays held (in the same or a stronger mode).
        for name, h in held_before.items():
            assert name in held_after and covers(held_after[name].mode, h.mode)
        if isinstance(decision, Granted):
            # All: every lock asked for is held now; and the owner no longer waits.
            for name, mode in locks:
                assert name in held_after and covers(held_after[name].mode, mode), f"{name} {mode} not granted"
            assert new.waiter_of(owner) is None
            assert set(held_after) == set(held_before) | {n for n, _ in locks}
            newly = [h for h in held_after.values() if h.name not in held_before or h.mode != held_before[h.name].mode]
            assert all(h.token == token for h in newly)
            if not nested:
                # First come, first served: no earlier waiter it conflicts with was overtaken.
                before = None if mine is None else mine.seq
                overtaken = conflicting_earlier_waiters(t, owner, locks, before)
                assert not overtaken, f"{owner} granted {locks} ahead of earlier waiters {overtaken}"
        else:
            assert isinstance(decision, Queued)
            # Nothing: the owner holds exactly what it held, and waits for what it lacks.
            assert held_after == held_before
            w = new.waiter_of(owner)
            assert w is not None and w.seq == decision.seq
            missing = tuple((n, m) for n, m in locks if n not in held_before or not covers(held_before[n].mode, m))
            assert w.locks == missing
            if mine is None:
                assert w.seq == new.seq > t.seq, "a fresh waiter goes to the end of the queue"
                assert w.nested == nested
            else:
                assert w == mine, "a waiter that asks again keeps its place"
            # Not queued for nothing.
            assert decision.blockers
            assert conflicting_holders(t, owner, missing) or (
                not nested and conflicting_earlier_waiters(t, owner, missing, None if mine is None else mine.seq)
            ), f"{owner} queued for {missing} with nobody in its way"
        # The waiter for `platform` X is not overtaken by later shared requests.
        platform_x_waits = any(w.owner != owner and ("platform", X) in w.locks for w in t.waiters)
        if mine is None and not nested and platform_x_waits and any(n == "platform" for n, _ in locks):
            assert isinstance(decision, Queued), f"{owner} overtook a waiter for platform X"
        self.table = new

    # ------------------------------------------------------------ rules

    @rule(owner=st.sampled_from(OWNERS), locks=PLANS, label=st.sampled_from(["apptask", "fullbackup", "update", ""]))
    def request(self, owner: str, locks: LockSet, label: str) -> None:
        if self.table.waiter_of(owner) is None:
            self._request(owner, locks, label)

    @precondition(lambda self: any(not self.table.waiter_of(h.owner) for h in self.table.holders))
    @rule(data=st.data(), locks=NESTED_PLANS)
    def nested_request(self, data: st.DataObject, locks: LockSet) -> None:
        """An owner that holds locks asks for more, like fullbackup taking app locks one by one."""
        idle = sorted({h.owner for h in self.table.holders if self.table.waiter_of(h.owner) is None})
        owner = data.draw(st.sampled_from(idle), label="owner")
        self._request(owner, locks, "fullbackup")

    @precondition(lambda self: bool(self.table.waiters))
    @rule(data=st.data())
    def rerequest(self, data: st.DataObject) -> None:
        """A woken waiter asks again for the same locks: it keeps its place."""
        w = data.draw(st.sampled_from(self.table.waiters), label="waiter")
        self._request(w.owner, w.locks, w.label)

    @precondition(lambda self: bool(self.table.waiters))
    @rule(data=st.data(), locks=PLANS)
    def waiter_asks_for_something_else(self, data: st.DataObject, locks: LockSet) -> None:
        w = data.draw(st.sampled_from(self.table.waiters), label="waiter")
        held = self.table.held_by(w.owner)
        missing = tuple((n, m) for n, m in locks if n not in held or not covers(held[n].mode, m))
        if not missing or missing == w.locks:
            return
        with pytest.raises(LockStateError, match="withdraw that before asking"):
            self.table.request(w.owner, locks, token=self.version + 1)

    @rule(owner=st.sampled_from(OWNERS))
    def release_all(self, owner: str) -> None:
        t = self.table
        new, gone = t.release(owner)
        assert set(gone) == {h for h in t.holders if h.owner == owner}
        assert new.holders == tuple(h for h in t.holders if h.owner != owner)
        assert new.waiters == tuple(w for w in t.waiters if w.owner != owner)
        self._ready_after_change(t, new)
        self.table = new

    @rule(owner=st.sampled_from(OWNERS), names=st.sets(st.sampled_from(NAMES), min_size=1, max_size=3))
    def release_some(self, owner: str, names: set[str]) -> None:
        self._release_some(owner, names)

    @precondition(lambda self: bool(self.table.holders))
    @rule(data=st.data())
    def release_some_held(self, data: st.DataObject) -> None:
        """An owner lets go of some of what it holds (fullbackup, done with one app), maybe all of it."""
        owner = data.draw(st.sampled_from(sorted({h.owner for h in self.table.holders})), label="owner")
        held = sorted(self.table.held_by(owner))
        names = data.draw(st.sets(st.sampled_from(held), min_size=1), label="names")
        self._release_some(owner, names)

    def _release_some(self, owner: str, names: set[str]) -> None:
        t = self.table
        new, gone = t.release(owner, names)
        assert set(gone) == {h for h in t.holders if h.owner == owner and h.name in names}
        assert new.holders == tuple(h for h in t.holders if h not in gone)
        assert [(w.owner, w.locks, w.seq) for w in new.waiters] == [(w.owner, w.locks, w.seq) for w in t.waiters]
        self._ready_after_change(t, new)
        self.table = new

    @rule(owner=st.sampled_from(OWNERS))
    def withdraw(self, owner: str) -> None:
        t = self.table
        new = t.withdraw(owner)
        assert new.holders == t.holders
        assert new.waiters == tuple(w for w in t.waiters if w.owner != owner)
        self.table = new

    @rule(dead=st.sets(st.sampled_from(OWNERS), min_size=1, max_size=3))
    def evict(self, dead: set[str]) -> None:
        t = self.table
        new = t.evict(dead)
        assert not (new.owners() & dead), "an entry of a dead owner survived"
        assert new.holders == tuple(h for h in t.holders if h.owner not in dead)
        assert new.waiters == tuple(w for w in t.waiters if w.owner not in dead)
        self._ready_after_change(t, new)
        self.table = new

    def _ready_after_change(self, old: LockTable, new: LockTable) -> None:
        """The waiters to wake after a release or an eviction: those with no blocker left."""
        ready = new.ready_waiters()
        ready_owners = [w.owner for w in ready]
        unblocked = [w for w in new.waiters if not new.blockers_of(w.owner)]
        assert set(ready_owners) <= {w.owner for w in unblocked}
        assert bool(ready) == bool(unblocked), "waiters without blockers, but nobody is woken"
        granted_ahead: list[Waiter] = []
        for w in unblocked:
            clashes = any(n == n2 and conflicts(m, m2) for g in granted_ahead for n, m in g.locks for n2, m2 in w.locks)
            if not clashes:
                assert w.owner in ready_owners, f"{w.owner} has no blocker but is not woken"
            if w.owner in ready_owners:
                granted_ahead.append(w)

    # ------------------------------------------------------------ invariants

    @invariant()
    def table_is_consistent(self) -> None:
        check_table(self.table)

    @invariant()
    def json_round_trip(self) -> None:
        assert json_round_trip(self.table) == self.table

    @invariant()
    def woken_waiters_get_their_locks(self) -> None:
        """A waiter reported ready is granted when it asks again (or the wake-up is a lie)."""
        for w in self.table.ready_waiters():
            _, decision = self.table.request(w.owner, w.locks, token=self.version + 1, label=w.label)
            assert isinstance(decision, Granted), f"{w.owner} woken but queued again: {decision.describe()}"

    @invariant()
    def blockers_are_named_in_words(self) -> None:
        for w in self.table.waiters:
            for b in self.table.blockers_of(w.owner):
                text = b.describe()
                assert text.startswith(("Waiting for ", "Waiting behind ")) and b.name in text

    @invariant()
    def no_deadlock(self) -> None:
        drain(self.table, self.version)


TestLockTableMachine = LockTableMachine.TestCase
TestLockTableMachine.settings = settings(
    max_examples=500, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ----------------------------------------------------------------------------- DESIGN.md's examples


def test_fullbackup_is_not_queued_behind_an_apptask_that_waits_behind_an_update() -> None:
    t = LockTable()
    t, d = t.request("fb", _ls({"task:fullbackup": "X", "platform": "S"}), token=1, label="fullbackup")
    assert isinstance(d, Granted)
    t, d = t.request("up", _ls({"task:update": "X"}), token=2, label="update")
    assert isinstance(d, Granted)
    t, d = t.request("up", _ls({"platform": "X"}), token=3, label="update")
    assert isinstance(d, Queued)
    assert [b.describe() for b in d.blockers] == ["Waiting for fullbackup (task fb) to release platform"]
    t, d = t.request("at", _ls({"platform": "S", "app:D": "X"}), token=4, label="apptask")
    assert isinstance(d, Queued), "the apptask must not overtake the update waiting for platform X"
    assert [b.describe() for b in d.blockers] == ["Waiting behind update (task up), queued earlier for platform"]
    t, d = t.request("fb", _ls({"app:D": "X"}), token=5, label="fullbackup")
    assert isinstance(d, Granted), "fullbackup must not queue behind the apptask (that would be a deadlock)"
    assert t.held_by("fb")["app:D"].token == 5
    # And from here the queue drains: fullbackup finishes, the update runs, then the apptask.
    t, _ = t.release("fb")
    assert [w.owner for w in t.ready_waiters()] == ["up"]
    t, d = t.request("up", _ls({"platform": "X"}), token=6)
    assert isinstance(d, Granted)
    t, _ = t.release("up")
    t, d = t.request("at", _ls({"platform": "S", "app:D": "X"}), token=7)
    assert isinstance(d, Granted)
    assert not t.waiters


def test_a_stream_of_apptasks_does_not_starve_an_update() -> None:
    t, _ = LockTable().request("a1", _ls({"platform": "S", "app:a": "X"}), token=1)
    t, d = t.request("up", _ls({"platform": "X"}), token=2)
    assert isinstance(d, Queued)
    for i, app in enumerate(["app:b", "app:c", "app:d"], start=3):
        t, d = t.request(f"a{i}", _ls({"platform": "S", app: "X"}), token=i)
        assert isinstance(d, Queued), f"apptask for {app} overtook the update"
    t, _ = t.release("a1")
    assert [w.owner for w in t.ready_waiters()] == ["up"]


def test_a_nested_wait_that_closes_a_cycle_is_refused() -> None:
    t, _ = LockTable().request("p", _ls({"app:a": "X"}), token=1)
    t, _ = t.request("q", _ls({"app:b": "X"}), token=2)
    t, d = t.request("p", _ls({"app:b": "X"}), token=3)
    assert isinstance(d, Queued)
    with pytest.raises(LockDeadlockError, match="cycle"):
        t.request("q", _ls({"app:a": "X"}), token=4)
    # Two shared holders that both upgrade to X: the second is refused, not left to deadlock.
    t, _ = LockTable().request("p", _ls({"platform": "S"}), token=1)
    t, _ = t.request("q", _ls({"platform": "S"}), token=2)
    t, d = t.request("p", _ls({"platform": "X"}), token=3)
    assert isinstance(d, Queued)
    with pytest.raises(LockDeadlockError):
        t.request("q", _ls({"platform": "X"}), token=4)


def test_an_owner_that_releases_everything_while_waiting_is_woken_only_when_it_can_go() -> None:
    """A nested waiter skips the queue only while it holds something that others could wait for.

    Once it has released everything it waits in line like anyone else, and `ready_waiters` (who to
    wake) and `blockers_of` (why it waits) must agree with what `request` then decides.
    """
    t, _ = LockTable().request("fb", _ls({"platform": "S"}), token=1)
    t, _ = t.request("h", _ls({"app:a": "X"}), token=2)
    t, _ = t.request("h2", _ls({"app:b": "X"}), token=3)
    t, d = t.request("early", _ls({"app:a": "X", "app:b": "X"}), token=4)  # waits for h and h2
    assert isinstance(d, Queued)
    t, d = t.request("fb", _ls({"app:a": "X"}), token=5)  # nested: waits for h only
    assert isinstance(d, Queued)
    t, _ = t.release("fb", ["platform"])  # fb holds nothing any more, but still waits
    t, _ = t.release("h")  # app:a is free; `early` still waits for h2's app:b
    _, d = t.request("fb", _ls({"app:a": "X"}), token=6)
    assert isinstance(d, Queued), "fb holds nothing: it must not overtake the earlier waiter"
    assert "fb" not in [w.owner for w in t.ready_waiters()], "fb is woken although it cannot go"
    assert [b.describe() for b in t.blockers_of("fb")] == ["Waiting behind task (task early), queued earlier for app:a"]
    t, _ = t.release("h2")
    assert [w.owner for w in t.ready_waiters()] == ["early"]


# ----------------------------------------------------------------------------- JSON


def _valid_doc() -> dict[str, Any]:
    return {
        "holders": [
            {"owner": "t1", "name": "platform", "mode": "S", "token": 3, "label": "apptask"},
            {"owner": "t1", "name": "app:a", "mode": "X", "token": 3, "label": "apptask"},
        ],
        "waiters": [
            {"owner": "t2", "locks": [["platform", "X"]], "seq": 4, "label": "update", "nested": False},
            {"owner": "t3", "locks": [["app:a", "X"], ["platform", "S"]], "seq": 5, "label": "apptask"},
        ],
        "seq": 5,
    }


def test_a_valid_document_parses_and_round_trips() -> None:
    t = LockTable.from_json(_valid_doc(), row_id=ROW)
    assert [h.owner for h in t.holders] == ["t1", "t1"]
    assert [w.owner for w in t.waiters] == ["t2", "t3"]
    assert LockTable.from_json(t.to_json(), row_id=ROW) == t
    assert json_round_trip(t) == t


@given(
    st.lists(st.tuples(st.sampled_from(OWNERS), PLANS, st.sampled_from(["apptask", "fullbackup", "é ü"])), max_size=12)
)
@settings(max_examples=200, deadline=None)
def test_any_reachable_table_round_trips(requests: list[tuple[str, LockSet, str]]) -> None:
    t = LockTable()
    for token, (owner, locks, label) in enumerate(requests, start=1):
        if t.waiter_of(owner) is None:
            with contextlib.suppress(LockDeadlockError):
                t, _ = t.request(owner, locks, token=token, label=label)
    assert LockTable.from_json(t.to_json(), row_id=ROW) == t
    assert json_round_trip(t) == t


def _edit(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = _valid_doc()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()

MALFORMED: dict[str, Any] = {
    "not an object": None,
    "a list": [],
    "holders not a list": _edit(("holders",), "t1"),
    "holders an integer": _edit(("holders",), 7),
    "waiters not a list": _edit(("waiters",), {"owner": "t2"}),
    "seq a string": _edit(("seq",), "5"),
    "seq a boolean": _edit(("seq",), True),
    "missing holders": _edit(("holders",), _DELETE),
    "missing waiters": _edit(("waiters",), _DELETE),
    "missing seq": _edit(("seq",), _DELETE),
    "holder without owner": _edit(("holders", 0, "owner"), _DELETE),
    "holder owner a number": _edit(("holders", 0, "owner"), 12),
    "holder token a string": _edit(("holders", 0, "token"), "3"),
    "holder token a float": _edit(("holders", 0, "token"), 3.5),
    "holder unknown mode": _edit(("holders", 0, "mode"), "Z"),
    "holder bad name": _edit(("holders", 0, "name"), "Platform!"),
    "holder a string": _edit(("holders", 0), "t1"),
    "waiter without locks": _edit(("waiters", 0, "locks"), _DELETE),
    "waiter lock not a pair": _edit(("waiters", 0, "locks"), [["platform"]]),
    "waiter locks a number": _edit(("waiters", 0, "locks"), 3),
    "waiter seq a float": _edit(("waiters", 0, "seq"), 4.0),
    "two X holders": _edit(
        ("holders",),
        [
            {"owner": "t1", "name": "app:a", "mode": "X", "token": 1},
            {"owner": "t9", "name": "app:a", "mode": "X", "token": 2},
        ],
    ),
    "X beside S": _edit(
        ("holders",),
        [
            {"owner": "t1", "name": "platform", "mode": "S", "token": 1},
            {"owner": "t9", "name": "platform", "mode": "X", "token": 2},
        ],
    ),
    "holder listed twice": _edit(
        ("holders",),
        [
            {"owner": "t1", "name": "platform", "mode": "S", "token": 1},
            {"owner": "t1", "name": "platform", "mode": "S", "token": 2},
        ],
    ),
    "unsorted seqs": _edit(("waiters", 1, "seq"), 3),
    "duplicate seqs": _edit(("waiters", 1, "seq"), 4),
    "seq behind the waiters": _edit(("seq",), 4),
    "an owner waits twice": _edit(("waiters", 1, "owner"), "t2"),
    "a waiter asks for what it holds": _edit(("waiters", 1, "owner"), "t1"),
    "a waiter asks for nothing": _edit(("waiters", 0, "locks"), []),
    "a waiter asks for one lock in two modes": _edit(("waiters", 0, "locks"), [["platform", "X"], ["platform", "S"]]),
}


@pytest.mark.parametrize("doc", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_document_is_refused_naming_the_row(doc: Any) -> None:
    with pytest.raises(LockDocumentError) as info:
        LockTable.from_json(doc, row_id=ROW)
    assert info.value.row_id == ROW
    assert repr(ROW) in str(info.value)
    assert "will not overwrite it" in str(info.value)


#: The document's own words are the likeliest edits: its owners, lock names, modes and numbers.
_WORDS = st.sampled_from(["t1", "t2", "t3", "t9", "platform", "app:a", "app:b", "S", "X", 0, 3, 4, 5, 6, True])
_JSON = st.recursive(
    _WORDS | st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | _WORDS.map(str), inner, max_size=4)
    ),
    max_leaves=12,
)


_PATHS: list[tuple[Any, ...]] = [("holders",), ("waiters",), ("seq",)]
for _i in range(2):
    _PATHS += [("holders", _i), *[("holders", _i, k) for k in ("owner", "name", "mode", "token", "label")]]
    _PATHS += [("waiters", _i), *[("waiters", _i, k) for k in ("owner", "locks", "seq", "label", "nested")]]
    _PATHS += [("waiters", _i, "locks", 0), ("waiters", _i, "locks", 0, 0), ("waiters", _i, "locks", 0, 1)]


@given(edits=st.lists(st.tuples(st.sampled_from(_PATHS), _JSON), min_size=1, max_size=3))
@settings(max_examples=400, deadline=None)
def test_any_edit_of_a_document_parses_to_a_sound_table_or_is_refused(edits: list[tuple[tuple[Any, ...], Any]]) -> None:
    """Whatever a person writes into the row: a table that keeps the rules, or LockDocumentError."""
    doc: Any = _valid_doc()
    for path, value in edits:
        target = doc
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed the place of this one
    try:
        t = LockTable.from_json(doc, row_id=ROW)
    except LockDocumentError as err:
        assert err.row_id == ROW
        return
    check_table(t, written_by_us=False)
    assert json_round_trip(t) == t
    drain(t, 100)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("holders", 0, "token"), 3.0),
        (("holders", 0, "token"), True),
        (("waiters", 0, "seq"), 4.0),
        (("holders", 0, "mode"), "s"),
    ],
)
def test_an_entry_parsed_before_does_not_vouch_for_a_lookalike(path: tuple[Any, ...], value: Any) -> None:
    """Entries are remembered by their fields once checked; 3.0 and True must not pass for 3 and 1."""
    LockTable.from_json(_valid_doc(), row_id=ROW)
    doc: Any = _valid_doc()
    doc["holders"][0]["token"] = 1 if value is True else doc["holders"][0]["token"]
    LockTable.from_json(doc, row_id=ROW)  # the integer form, now remembered
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(LockDocumentError):
        LockTable.from_json(doc, row_id=ROW)
