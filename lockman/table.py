"""The pure lock table: the next document from the current one, with no database and no Celery.

A document holds the granted locks (holders) and the requests that wait (waiters, FIFO by seq):

    {"v": 1,
     "holders": [{"owner": "t1", "name": "platform", "mode": "S", "token": 17, "label": "apptask"}],
     "waiters": [{"owner": "t2", "locks": [["platform", "X"]], "seq": 5, "label": "update", "nested": false}],
     "seq": 5}

`v` is the format (absent: 1). Two releases may share the row during an upgrade, so a reader refuses
a higher format, or a field it does not know anywhere (`LockFormatError`): rewriting would drop what
a newer release put there. A release that adds a field raises `FORMAT`. Only `answers`, left by the
release that let waiting writers post requests, is dropped: such a writer, finding no answer,
applies its own request again, which changes nothing (acquire and release are idempotent).

Rules kept here (DESIGN.md "Locks"):

* all or nothing: a request is granted whole, or queued whole;
* never two holders of an X lock, never X beside S;
* first come, first served among conflicting requests: a request is also blocked by an *earlier*
  waiter it conflicts with, so a waiting X on `platform` is not overtaken by later S requests;
* no deadlock: a request from an owner that already holds locks (a *nested* request, like fullbackup
  taking app locks one by one under `platform` S) is blocked by holders only, never by waiters, since
  those waiters may be waiting for it; a nested wait that would close a cycle among holders is refused.

Every method returns a new table; a table is never changed in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from lockman.errors import LockDeadlockError, LockDocumentError, LockFormatError, LockStateError
from lockman.plan import LockSet, Mode, check_name, conflicts, covers, lock_set, parse_mode


@dataclass(frozen=True, slots=True)
class Holder:
    owner: str
    name: str
    mode: Mode
    #: The fencing token: the document version that this grant created.
    token: int
    label: str = ""


@dataclass(frozen=True, slots=True)
class Waiter:
    owner: str
    locks: LockSet
    seq: int
    label: str = ""
    #: The owner held locks when it asked: it is blocked by holders only.
    nested: bool = False


@dataclass(frozen=True, slots=True)
class Blocker:
    """Why a waiter waits: a holder it conflicts with, or an earlier waiter it must not overtake."""

    kind: Literal["holder", "waiter"]
    owner: str
    label: str
    name: str
    mode: Mode

    def describe(self) -> str:
        who = f"{self.label or 'task'} (task {_short(self.owner)})"
        if self.kind == "holder":
            return f"Waiting for {who} to release {self.name}"
        return f"Waiting behind {who}, queued earlier for {self.name}"


@dataclass(frozen=True, slots=True)
class Granted:
    token: int
    locks: LockSet


@dataclass(frozen=True, slots=True)
class Queued:
    seq: int
    blockers: tuple[Blocker, ...]

    def describe(self) -> str:
        return "; ".join(dict.fromkeys(b.describe() for b in self.blockers)) or "Waiting"


Decision = Granted | Queued


def _short(owner: str) -> str:
    return owner[:8] + "…" if len(owner) > 8 else owner


@dataclass(frozen=True, slots=True)
class LockTable:
    holders: tuple[Holder, ...] = ()
    waiters: tuple[Waiter, ...] = ()
    seq: int = 0
    _by_name: dict[str, tuple[Holder, ...]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[str, list[Holder]] = {}
        for h in self.holders:
            index.setdefault(h.name, []).append(h)
        object.__setattr__(self, "_by_name", {k: tuple(v) for k, v in index.items()})

    # ----------------------------------------------------------------- queries

    def held_by(self, owner: str) -> dict[str, Holder]:
        return {h.name: h for h in self.holders if h.owner == owner}

    def waiter_of(self, owner: str) -> Waiter | None:
        return next((w for w in self.waiters if w.owner == owner), None)

    def owners(self) -> set[str]:
        return {h.owner for h in self.holders} | {w.owner for w in self.waiters}

    def blocking_holders(self, owner: str, locks: LockSet) -> list[Holder]:
        out = []
        for name, mode in locks:
            for h in self._by_name.get(name, ()):
                if h.owner != owner and conflicts(h.mode, mode):
                    out.append(h)
        return out

    def blocking_waiters(self, owner: str, locks: LockSet, before_seq: int | None) -> list[tuple[Waiter, str]]:
        """Earlier waiters (not nested-exempt) that conflict with `locks`, with the lock name in conflict."""
        out = []
        wanted = dict(locks)
        for w in self.waiters:
            if before_seq is not None and w.seq >= before_seq:
                break
            if w.owner == owner:
                continue
            for name, mode in w.locks:
                if name in wanted and conflicts(mode, wanted[name]):
                    out.append((w, name))
                    break
        return out

    def blockers(self, owner: str, locks: LockSet, *, nested: bool, before_seq: int | None) -> list[Blocker]:
        found = [Blocker("holder", h.owner, h.label, h.name, h.mode) for h in self.blocking_holders(owner, locks)]
        if not nested:
            for w, name in self.blocking_waiters(owner, locks, before_seq):
                found.append(Blocker("waiter", w.owner, w.label, name, dict(w.locks)[name]))
        return found

    def blockers_of(self, owner: str) -> list[Blocker]:
        """For a waiting owner: who it waits for, in words via `Blocker.describe()`."""
        w = self.waiter_of(owner)
        if w is None:
            return []
        return self.blockers(owner, w.locks, nested=self._nested(w), before_seq=w.seq)

    def ready_waiters(self) -> list[Waiter]:
        """Waiters that would be granted if they asked now, in FIFO order (the ones to wake)."""
        table = self
        ready = []
        for w in self.waiters:
            if not table.blockers(w.owner, w.locks, nested=table._nested(w), before_seq=w.seq):
                ready.append(w)
                table = table._grant(w.owner, w.locks, token=0, label=w.label)
        return ready

    # ----------------------------------------------------------------- transitions

    def request(self, owner: str, locks: LockSet, *, token: int, label: str = "") -> tuple[LockTable, Decision]:
        """Grant `locks` to `owner` whole, or queue the request whole.

        `token` is the version the write of the returned table will create. Asking again for the
        same locks while waiting re-evaluates the request at its place in the queue.
        """
        held = self.held_by(owner)
        missing = tuple((n, m) for n, m in locks if n not in held or not covers(held[n].mode, m))
        mine = self.waiter_of(owner)
        if mine is not None and missing and mine.locks != missing:
            raise LockStateError(
                f"owner {owner!r} already waits for {_fmt(mine.locks)}; withdraw that before asking for {_fmt(locks)}"
            )
        if not missing:
            table = self if mine is None else self._without_waiter(owner)
            return table, Granted(min(held[n].token for n, _ in locks), locks)
        nested = bool(held)
        before = mine.seq if mine is not None else None
        found = self.blockers(owner, missing, nested=nested, before_seq=before)
        if not found:
            table = self._without_waiter(owner) if mine is not None else self
            return table._grant(owner, missing, token=token, label=label), Granted(token, locks)
        if mine is not None:
            return self, Queued(mine.seq, tuple(found))
        if nested:
            self._refuse_cycle(owner, missing)
        seq = self.seq + 1
        waiter = Waiter(owner, missing, seq, label, nested)
        return replace(self, waiters=(*self.waiters, waiter), seq=seq), Queued(seq, tuple(found))

    def release(self, owner: str, names: Iterable[str] | None = None) -> tuple[LockTable, tuple[Holder, ...]]:
        """Release the named locks of `owner`, or all it holds (and its wait) when `names` is None."""
        if names is None:
            gone = tuple(h for h in self.holders if h.owner == owner)
            kept = tuple(h for h in self.holders if h.owner != owner)
            return replace(self, holders=kept, waiters=self._waiters_except({owner})), gone
        wanted = set(names)
        gone = tuple(h for h in self.holders if h.owner == owner and h.name in wanted)
        kept = tuple(h for h in self.holders if not (h.owner == owner and h.name in wanted))
        waiters = self.waiters
        if gone and not any(h.owner == owner for h in kept):
            # An owner that now holds nothing waits in line like anyone else (see `_nested`).
            waiters = tuple(replace(w, nested=False) if w.owner == owner else w for w in waiters)
        return replace(self, holders=kept, waiters=waiters), gone

    def withdraw(self, owner: str) -> LockTable:
        """Remove the owner's waiter entry, if any."""
        return self._without_waiter(owner)

    def evict(self, owners: Iterable[str]) -> LockTable:
        """Drop every holder and waiter entry of dead owners."""
        dead = set(owners)
        if not dead:
            return self
        kept = tuple(h for h in self.holders if h.owner not in dead)
        return replace(self, holders=kept, waiters=self._waiters_except(dead))

    # ----------------------------------------------------------------- internals

    def _grant(self, owner: str, locks: LockSet, *, token: int, label: str) -> LockTable:
        names = {n for n, _ in locks}
        kept = tuple(h for h in self.holders if not (h.owner == owner and h.name in names))  # S -> X upgrade
        new = tuple(Holder(owner, n, m, token, label) for n, m in locks)
        return replace(self, holders=kept + new)

    def _nested(self, w: Waiter) -> bool:
        """A waiter is nested while its owner holds locks, exactly as `request` decides.

        The stored `Waiter.nested` was true when it asked; judging by it after the owner released
        everything would wake (and describe) a waiter that `request` then queues behind earlier ones.
        """
        return any(h.owner == w.owner for h in self.holders)

    def _without_waiter(self, owner: str) -> LockTable:
        return replace(self, waiters=self._waiters_except({owner}))

    def _waiters_except(self, owners: set[str]) -> tuple[Waiter, ...]:
        return tuple(w for w in self.waiters if w.owner not in owners)

    def _refuse_cycle(self, owner: str, locks: LockSet) -> None:
        """A nested waiter waits for holders; refuse a wait that would lead back to `owner`."""
        waits_for: dict[str, set[str]] = {}
        for w in self.waiters:
            if self._nested(w):
                waits_for[w.owner] = {h.owner for h in self.blocking_holders(w.owner, w.locks)}
        waits_for[owner] = {h.owner for h in self.blocking_holders(owner, locks)}
        stack, seen = list(waits_for[owner]), set()
        while stack:
            node = stack.pop()
            if node == owner:
                raise LockDeadlockError(
                    f"owner {owner!r} asking for {_fmt(locks)} would wait in a cycle with holders that wait for it"
                )
            if node not in seen:
                seen.add(node)
                stack.extend(waits_for.get(node, ()))

    # ----------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        return {
            "v": FORMAT,
            "holders": [
                {"owner": h.owner, "name": h.name, "mode": h.mode.value, "token": h.token, "label": h.label}
                for h in self.holders
            ],
            "waiters": [
                {
                    "owner": w.owner,
                    "locks": [[n, m.value] for n, m in w.locks],
                    "seq": w.seq,
                    "label": w.label,
                    "nested": w.nested,
                }
                for w in self.waiters
            ],
            "seq": self.seq,
        }

    @classmethod
    def from_json(cls, data: object, *, row_id: str) -> LockTable:
        """Parse a stored document; a newer format raises LockFormatError, anything else unexpected
        LockDocumentError, each naming the row."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            _check_format(data, row_id)
            holders = tuple(_holder(h, row_id) for h in data["holders"])
            waiters = tuple(_waiter(w, row_id) for w in data["waiters"])
            seq = _int(data["seq"])
        except (KeyError, TypeError, ValueError) as err:
            raise LockDocumentError(row_id, f"{type(err).__name__}: {err}") from err
        _check_consistent(holders, waiters, seq, row_id)
        return cls(holders, waiters, seq)


#: The document format this release writes and understands, and the fields of each part of it.
FORMAT = 1
_TOP_KEYS = frozenset({"v", "holders", "waiters", "seq", "answers"})
_HOLDER_KEYS = frozenset({"owner", "name", "mode", "token", "label"})
_WAITER_KEYS = frozenset({"owner", "locks", "seq", "label", "nested"})


def _check_format(data: Mapping[str, Any], row_id: str) -> None:
    version = data.get("v", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(f"v: expected a format number, got {version!r:.40}")
    if version > FORMAT:
        raise LockFormatError(row_id, f"format {version}, this release knows up to {FORMAT}")
    _known_keys(data, _TOP_KEYS, "the document", row_id)


def _known_keys(entry: Mapping[str, Any], known: frozenset[str], where: str, row_id: str) -> None:
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where}: expected an object, got {type(entry).__name__}")
    if not known.issuperset(entry):
        unknown = sorted(str(k) for k in entry if k not in known)
        raise LockFormatError(row_id, f"unknown field(s) {', '.join(unknown)} in {where}")


#: Entries parsed lately, by their stored fields. A document changes by one or two entries per
#: write, so most entries of the next read were parsed (and checked) before: a dictionary lookup
#: instead of a name check and a mode parse each, inside the lock row's critical section.
_PARSED_HOLDERS: dict[tuple[Any, ...], Holder] = {}
_PARSED_WAITERS: dict[tuple[Any, ...], Waiter] = {}
_PARSED_MAX = 4096


def _holder(h: Mapping[str, Any], row_id: str) -> Holder:
    _known_keys(h, _HOLDER_KEYS, "a holder entry", row_id)
    key = (h["owner"], h["name"], h["mode"], _int(h["token"]), h.get("label", ""))
    try:
        return _PARSED_HOLDERS[key]
    except (KeyError, TypeError):  # TypeError: an unhashable field, refused just below
        pass
    holder = Holder(_text(key[0]), check_name(key[1]), parse_mode(key[2]), key[3], _text(key[4]))
    if len(_PARSED_HOLDERS) >= _PARSED_MAX:
        _PARSED_HOLDERS.clear()
    _PARSED_HOLDERS[key] = holder
    return holder


def _waiter(w: Mapping[str, Any], row_id: str) -> Waiter:
    _known_keys(w, _WAITER_KEYS, "a waiter entry", row_id)
    pairs = tuple((n, m) for n, m in w["locks"])
    # The integers are checked before the lookup: 1.0 and True are equal to 1 as keys.
    key = (w["owner"], pairs, _int(w["seq"]), w.get("label", ""), bool(w.get("nested", False)))
    try:
        return _PARSED_WAITERS[key]
    except (KeyError, TypeError):
        pass
    # Sorted, without contradictions, and never empty, like every request.
    waiter = Waiter(_text(key[0]), lock_set(list(pairs)), key[2], _text(key[3]), key[4])
    if len(_PARSED_WAITERS) >= _PARSED_MAX:
        _PARSED_WAITERS.clear()
    _PARSED_WAITERS[key] = waiter
    return waiter


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _check_consistent(holders: tuple[Holder, ...], waiters: tuple[Waiter, ...], seq: int, row_id: str) -> None:
    by_name: dict[str, list[Holder]] = {}
    for h in holders:
        by_name.setdefault(h.name, []).append(h)
    for name, group in by_name.items():
        if len({h.owner for h in group}) != len(group):
            raise LockDocumentError(row_id, f"owner listed twice as holder of {name!r}")
        if len(group) > 1 and any(h.mode is Mode.EXCLUSIVE for h in group):
            raise LockDocumentError(row_id, f"{name!r} has an X holder beside another holder")
    seqs = [w.seq for w in waiters]
    if seqs != sorted(seqs) or len(set(seqs)) != len(seqs) or (seqs and seqs[-1] > seq):
        raise LockDocumentError(row_id, "waiters are not in strictly increasing seq order")
    if len({w.owner for w in waiters}) != len(waiters):
        raise LockDocumentError(row_id, "an owner waits twice")
    for w in waiters:
        # `request` queues only what the owner lacks; such a waiter could never be granted.
        held = {h.name: h.mode for h in holders if h.owner == w.owner}
        if any(n in held and covers(held[n], m) for n, m in w.locks):
            raise LockDocumentError(row_id, f"owner {w.owner!r} waits for a lock it already holds")


def _fmt(locks: LockSet) -> str:
    return ", ".join(f"{n} {m.value}" for n, m in locks)


def lockset_to_dict(locks: LockSet) -> dict[str, str]:
    return {n: m.value for n, m in locks}
