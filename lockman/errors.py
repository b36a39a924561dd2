"""The lockman package's error tree, rooted in `LockError`."""

from __future__ import annotations


class LockError(Exception):
    """Base of every error raised by `lockman`."""


class LockPlanError(LockError, ValueError):
    """A lock plan is malformed: an unknown mode, an empty set, or a bad lock name."""


class LockDocumentError(LockError):
    """The lock row's JSON does not parse as a lock document (hand-edited?); it is never reset silently."""

    def __init__(self, row_id: str, reason: str) -> None:
        super().__init__(
            f"lock row {row_id!r} holds a document that is not a lock table: {reason}. "
            "Fix or restore the row by hand; boxtasks will not overwrite it."
        )
        self.row_id = row_id
        self.reason = reason


class LockFormatError(LockDocumentError):
    """The row's document is of a newer format: rewriting it would drop what this release does not know."""

    def __init__(self, row_id: str, reason: str) -> None:
        LockError.__init__(
            self,
            f"lock row {row_id!r} holds a lock document this boxtasks release does not fully understand "
            f"({reason}): a newer release (or a hand edit) wrote it. Upgrade this process; "
            "it will not overwrite the row.",
        )
        self.row_id = row_id
        self.reason = reason


class LockStateError(LockError):
    """A request that contradicts what the owner already holds or waits for."""


class LockDeadlockError(LockError):
    """Granting the wait would close a cycle among holders that ask for more."""


class LockTimeoutError(LockError):
    """A blocking acquire gave up; the owner's waiter entry was withdrawn."""


class LockLostError(LockError):
    """The fencing token no longer holds: the locks were taken away (lease expired), nothing was committed."""


class LockRowMissingError(LockError):
    """The lock row does not exist: run `boxtasks db upgrade`."""
