"""The lock manager: pure lock-table logic (`table`) and its compare-and-swap on the database (`manager`).

`lockman` knows nothing of Celery: owners are task ids with a row in the `tasks` table.
"""

from __future__ import annotations

from lockman.errors import (
    LockDeadlockError,
    LockDocumentError,
    LockError,
    LockFormatError,
    LockLostError,
    LockPlanError,
    LockRowMissingError,
    LockStateError,
    LockTimeoutError,
)
from lockman.manager import Grant, LockManager, LockStats
from lockman.ops import Release, Request
from lockman.plan import LockSet, Mode, conflicts, lock_set
from lockman.store import Snapshot
from lockman.table import Blocker, Decision, Granted, Holder, LockTable, Queued, Waiter

__all__ = [
    # errors
    "LockDeadlockError",
    "LockDocumentError",
    "LockError",
    "LockFormatError",
    "LockLostError",
    "LockPlanError",
    "LockRowMissingError",
    "LockStateError",
    "LockTimeoutError",
    # plans
    "LockSet",
    "Mode",
    "conflicts",
    "lock_set",
    # the pure table
    "Blocker",
    "Decision",
    "Granted",
    "Holder",
    "LockTable",
    "Queued",
    "Waiter",
    # the database layer and the operations it applies
    "Grant",
    "LockManager",
    "LockStats",
    "Release",
    "Request",
    "Snapshot",
]
