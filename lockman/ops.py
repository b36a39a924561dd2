"""Lock operations as data: each computes the next document from the current one, and its answer.

The same function serves every write path of `LockManager`, whichever way it got the row.
Pure: no database, no Celery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from lockman.plan import LockSet
from lockman.table import Decision, Holder, LockTable, Queued, Waiter

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

    kind: Literal["acquire", "release", "withdraw", "evict", "sweep"]
    owner: str = ""
    locks: LockSet = ()
    names: tuple[str, ...] | None = None
    owners: tuple[str, ...] = ()
    label: str = ""

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


def _evict(table: LockTable, dead: set[str]) -> tuple[LockTable | None, Release]:
    gone = tuple(h for h in table.holders if h.owner in dead)
    new = table.evict(dead)
    if not gone and len(new.waiters) == len(table.waiters):
        return None, NOTHING
    return new, Release(gone, tuple(new.ready_waiters()))
