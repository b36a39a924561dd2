"""The thin database layer: read the lock row, compare-and-swap it, judge owners alive or dead.

Everything here is one SQL statement; the loops and strategy live in `lockman.manager`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Table, select, update

from lockman.errors import LockRowMissingError
from lockman.table import LockTable
from models import FINAL_STATES, PROCESSLESS_STATES, LockRow, Task, db_utcnow

_locks: Table = LockRow.__table__  # type: ignore[assignment]
_tasks: Table = Task.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Snapshot:
    table: LockTable
    version: int
    #: The database clock when the row was read; None for a snapshot remembered from our own write.
    now: dt.datetime | None


class LockStore:
    """SQL for one lock row, identified by `row_id`."""

    def __init__(self, row_id: str) -> None:
        self.row_id = row_id
        self._select = select(_locks.c.data, _locks.c.version, db_utcnow()).where(_locks.c.id == row_id)
        self._select_version = select(_locks.c.version).where(_locks.c.id == row_id)

    def read(self, conn: Connection, *, lock: Literal["update", "share"] | None = None) -> Snapshot:
        stmt = self._select
        if lock == "update":
            stmt = stmt.with_for_update()
        elif lock == "share":
            stmt = stmt.with_for_update(read=True)
        row = conn.execute(stmt).one_or_none()
        if row is None:
            raise LockRowMissingError(f"lock row {self.row_id!r} does not exist: run `boxtasks db upgrade`")
        data, version, now = row
        return Snapshot(LockTable.from_json(data, row_id=self.row_id), int(version), _naive(now))

    def version(self, conn: Connection) -> int:
        value = conn.execute(self._select_version).scalar_one_or_none()
        if value is None:
            raise LockRowMissingError(f"lock row {self.row_id!r} does not exist: run `boxtasks db upgrade`")
        return int(value)

    def compare_and_swap(self, conn: Connection, table: LockTable, seen: int) -> bool:
        """Write `table` only if the row is still at version `seen`; True when one row matched."""
        result = conn.execute(
            update(_locks)
            .where(_locks.c.id == self.row_id, _locks.c.version == seen)
            .values(data=table.to_json(), version=_locks.c.version + 1)
        )
        return result.rowcount == 1

    def ensure_row(self, conn: Connection) -> None:
        """Create the row when missing (a lock space other than the migrated `main`)."""
        if conn.execute(self._select_version).first() is None:
            conn.execute(_locks.insert().values(id=self.row_id, data=LockTable().to_json(), version=0))

    def dead_owners(
        self,
        conn: Connection,
        owners: Iterable[str],
        *,
        holders: set[str],
        now: dt.datetime,
        lease: dt.timedelta,
    ) -> set[str]:
        """Owners whose task is gone, finished, or (for one that runs or holds) silent past the lease.

        A task that is queued or waiting has no process and so no heartbeat; as a waiter it lives
        until it ends. A holder always needs a fresh heartbeat, however long it has held.
        """
        wanted = set(owners)
        if not wanted:
            return set()
        rows = conn.execute(
            select(_tasks.c.id, _tasks.c.state, _tasks.c.heartbeat_at).where(_tasks.c.id.in_(sorted(wanted)))
        ).all()
        found = {r.id: r for r in rows}
        dead = wanted - set(found)
        for owner, row in found.items():
            if row.state in FINAL_STATES:
                dead.add(owner)
                continue
            needs_heartbeat = owner in holders or row.state not in PROCESSLESS_STATES
            beat = _naive(row.heartbeat_at)
            if needs_heartbeat and (beat is None or beat + lease < now):
                dead.add(owner)
        return dead

    @staticmethod
    def heartbeat(conn: Connection, owner: str) -> bool:
        """Stamp the owner's task with the database clock; False when the task row is missing."""
        result = conn.execute(update(_tasks).where(_tasks.c.id == owner).values(heartbeat_at=db_utcnow()))
        return result.rowcount == 1


def _naive(value: dt.datetime | str | None) -> dt.datetime | None:
    """UTC as a naive datetime, whatever the driver returned."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value
