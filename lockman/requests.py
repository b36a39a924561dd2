"""Lock operations as data, and their answers as JSON.

A writer that finds the lock row busy posts its operation as a `Request`; whoever holds the row
next applies every posted request, in the order they were posted, in its own compare-and-swap,
and leaves each answer in the document (`LockTable.answers`) for its writer to pick up (see
`LockManager._posted`). So the steps that compute the next document live here, as functions
of the request, the same for a writer applying its own request and one applying another's.

Pure: no database, no Celery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lockman import errors
from lockman.errors import LockError
from lockman.plan import LockSet, check_name, parse_mode
from lockman.table import Blocker, Decision, Granted, Holder, LockTable, Queued, Waiter, dict_to_lockset

Kind = Literal["acquire", "release", "withdraw", "evict", "sweep"]
KINDS: tuple[Kind, ...] = ("acquire", "release", "withdraw", "evict", "sweep")

#: Owners of the given set whose tasks are dead (asked of the database only when needed).
Prober = Callable[[Iterable[str]], set[str]]


@dataclass(frozen=True, slots=True)
class Release:
    released: tuple[Holder, ...]
    #: Waiters that can now be granted: wake them.
    ready: tuple[Waiter, ...]


Answer = Decision | Release
NOTHING = Release((), ())


@dataclass(frozen=True, slots=True)
class Request:
    """One lock operation: `acquire` (owner, locks, label), `release` (owner, names or all),
    `withdraw` (owner), `evict` (owners), `sweep` (nothing)."""

    kind: Kind
    owner: str = ""
    locks: LockSet = ()
    names: tuple[str, ...] | None = None
    owners: tuple[str, ...] = ()
    label: str = ""
    #: Random, per operation: its answer is left in the document under this key.
    key: str = ""

    def apply(
        self, table: LockTable, version: int, dead: Prober, on_evict: Callable[[set[str]], None]
    ) -> tuple[LockTable | None, Answer]:
        """The next document (None: nothing to write) and the answer, for a write that creates `version + 1`.

        `dead` says which of some owners are dead; `on_evict` hears of the dead owners dropped.
        """
        if self.kind == "acquire":
            new, decision = table.request(self.owner, self.locks, token=version + 1, label=self.label)
            if isinstance(decision, Queued):
                gone = dead(b.owner for b in decision.blockers)
                if gone:
                    on_evict(gone)
                    evicted = table.evict(gone)
                    new, decision = evicted.request(self.owner, self.locks, token=version + 1, label=self.label)
            return (None if new is table else new), decision
        if self.kind == "release":
            new, gone_holders = table.release(self.owner, self.names)
            if not gone_holders and len(new.waiters) == len(table.waiters):
                return None, NOTHING
            return new, Release(gone_holders, tuple(new.ready_waiters()))
        if self.kind == "withdraw":
            if table.waiter_of(self.owner) is None:
                return None, NOTHING
            new = table.withdraw(self.owner)
            return new, Release((), tuple(new.ready_waiters()))
        if self.kind == "evict":
            return _evict(table, set(self.owners))
        gone = dead(table.owners())
        if not gone:
            return None, Release((), tuple(table.ready_waiters()))
        on_evict(gone)
        return _evict(table, gone)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind}
        if self.owner:
            doc["owner"] = self.owner
        if self.locks:
            doc["locks"] = {n: m.value for n, m in self.locks}
        if self.names is not None:
            doc["names"] = list(self.names)
        if self.owners:
            doc["owners"] = list(self.owners)
        if self.label:
            doc["label"] = self.label
        if self.key:
            doc["key"] = self.key
        return doc

    @classmethod
    def from_json(cls, data: Any) -> Request:
        """Parse a posted request; anything unexpected raises LockError (answered as an error)."""
        try:
            kind = data["kind"]
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            names = data.get("names")
            return cls(
                kind=kind,
                owner=_text(data.get("owner", "")),
                locks=dict_to_lockset(data.get("locks", {})),
                names=None if names is None else tuple(_text(n) for n in names),
                owners=tuple(_text(o) for o in data.get("owners", ())),
                label=_text(data.get("label", "")),
                key=_text(data.get("key", "")),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise LockError(
                f"a posted lock request does not parse ({type(err).__name__}: {err}): {data!r:.200}"
            ) from err


def _evict(table: LockTable, dead: set[str]) -> tuple[LockTable | None, Release]:
    gone = tuple(h for h in table.holders if h.owner in dead)
    new = table.evict(dead)
    if not gone and len(new.waiters) == len(table.waiters):
        return None, NOTHING
    return new, Release(gone, tuple(new.ready_waiters()))


# ----------------------------------------------------------------------------- answers as JSON


def answer_to_json(answer: Answer | LockError, request: Request) -> dict[str, Any]:
    """The answer as the document keeps it, short: what `request` itself says is left out."""
    if isinstance(answer, Granted):
        if answer.locks == request.locks:
            return {"granted": answer.token}
        return {"granted": answer.token, "locks": [[n, m.value] for n, m in answer.locks]}
    if isinstance(answer, Queued):
        blockers = [[b.kind, b.owner, b.label, b.name, b.mode.value] for b in answer.blockers]
        return {"queued": answer.seq, "blockers": blockers}
    if isinstance(answer, Release):
        released = [_released(h, request.owner) for h in answer.released]
        ready = [[w.owner, [[n, m.value] for n, m in w.locks], w.seq, w.label, w.nested] for w in answer.ready]
        return {"released": released, "ready": ready}
    return {"error": type(answer).__name__, "message": str(answer)}


def answer_from_json(data: Mapping[str, Any], request: Request) -> Answer | LockError:
    """The answer left for `request`: what its own writer would have got, or the error it would have met."""
    if "granted" in data:
        locks = _pairs(data["locks"]) if "locks" in data else request.locks
        return Granted(int(data["granted"]), locks)
    if "queued" in data:
        blockers = tuple(Blocker(k, o, lb, check_name(n), parse_mode(m)) for k, o, lb, n, m in data["blockers"])
        return Queued(int(data["queued"]), blockers)
    if "released" in data:
        released = tuple(
            Holder(str(rest[0]) if rest else request.owner, check_name(n), parse_mode(m), int(t), lb)
            for n, m, t, lb, *rest in data["released"]
        )
        ready = tuple(Waiter(o, _pairs(locks), int(s), lb, bool(nested)) for o, locks, s, lb, nested in data["ready"])
        return Release(released, ready)
    kind = getattr(errors, str(data.get("error")), None)
    if not (isinstance(kind, type) and issubclass(kind, LockError)):
        kind = LockError
    # Rebuilt without its own __init__ (LockDocumentError's takes other arguments): same type, same words.
    err = Exception.__new__(kind)
    Exception.__init__(err, str(data.get("message", "")))
    return err


def _released(h: Holder, mine: str) -> list[Any]:
    """[name, mode, token, label], and the owner only when it is not the request's own."""
    entry: list[Any] = [h.name, h.mode.value, h.token, h.label]
    return entry if h.owner == mine else [*entry, h.owner]


def _pairs(locks: Iterable[Any]) -> LockSet:
    return tuple((check_name(n), parse_mode(m)) for n, m in locks)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value
