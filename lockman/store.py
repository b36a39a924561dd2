"""The thin database layer: read the lock row, compare-and-swap it, judge owners alive or dead.

Each is one SQL statement built once from SQLAlchemy constructs (so compiled once, then found in
the cache by identity); the loops and the choice of path live in `lockman.manager`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Executable, Table, bindparam, select, update

from lockman.errors import LockDocumentError, LockRowMissingError
from lockman.table import LockTable
from models import FINAL_STATES, PROCESSLESS_STATES, LockRow, Task, db_utcnow, liveness
from models.types import naive_utc

_locks: Table = LockRow.__table__  # type: ignore[assignment]
_tasks: Table = Task.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Snapshot:
    table: LockTable
    version: int
    #: The database clock when the row was read; None for a snapshot remembered from our own write.
    now: dt.datetime | None


Lock = Literal["update", "share"] | None


class LockStore:
    """SQL for one lock row, identified by `row_id`."""

    def __init__(self, row_id: str) -> None:
        self.row_id = row_id
        select_row = select(_locks.c.data, _locks.c.version, db_utcnow()).where(_locks.c.id == row_id)
        self._select_version = select(_locks.c.version).where(_locks.c.id == row_id)
        self._cas = (
            update(_locks)
            .where(_locks.c.id == row_id, _locks.c.version == bindparam("seen"))
            .values(data=bindparam("data", type_=_locks.c.data.type), version=_locks.c.version + 1)
        )
        self._reads: dict[Lock, Executable] = {
            None: select_row,
            "update": select_row.with_for_update(),
            "share": select_row.with_for_update(read=True),
        }

    def read(self, conn: Connection, *, lock: Lock = None) -> Snapshot:
        """The row as it is (with `lock`, locked until the transaction ends), with the database clock."""
        try:
            row = conn.execute(self._reads[lock]).one_or_none()
        except ValueError as err:  # the driver's JSON decoding: only SQLite lets non-JSON text in
            raise LockDocumentError(self.row_id, f"not JSON: {err}") from err
        if row is None:
            raise LockRowMissingError(f"lock row {self.row_id!r} does not exist: run `boxtasks db upgrade`")
        data, version, now = row
        return Snapshot(LockTable.from_json(data, row_id=self.row_id), int(version), naive_utc(now))

    def version(self, conn: Connection) -> int:
        value = conn.execute(self._select_version).scalar_one_or_none()
        if value is None:
            raise LockRowMissingError(f"lock row {self.row_id!r} does not exist: run `boxtasks db upgrade`")
        return int(value)

    def compare_and_swap(self, conn: Connection, table: LockTable, seen: int) -> bool:
        """Write `table` only if the row is still at version `seen`; True when one row matched."""
        return bool(conn.execute(self._cas, {"seen": seen, "data": table.to_json()}).rowcount == 1)

    def ensure_row(self, conn: Connection) -> None:
        """Create the row when missing (a lock space other than the migrated `main`)."""
        if conn.execute(self._select_version).first() is None:
            conn.execute(_locks.insert().values(id=self.row_id, data=LockTable().to_json(), version=0))

    def dead_owners(
        self,
        conn: Connection,
        owners: Iterable[str],
        *,
        now: dt.datetime,
        lease: dt.timedelta,
    ) -> set[str]:
        """Owners whose task is gone, finished, or (for one that runs or holds) silent past the lease
        (`models.liveness`: the database's own downtime does not count as silence).

        A task that is queued or waiting has no process and so no heartbeat: it lives until it ends,
        as a waiter, or as a parked holder (a full backup that gave its process back to wait for a
        busy app, keeping `platform` S); the sweep wakes it should its wake-up be lost. A task that
        runs always needs a fresh heartbeat, however long it has held.
        """
        wanted = set(owners)
        if not wanted:
            return set()
        ordered = sorted(wanted)
        stmt, values = _tasks_of(len(ordered)), {f"o{i}": o for i, o in enumerate(ordered)}
        rows = [tuple(r) for r in conn.execute(stmt, values)]
        found = {owner: (state, beat) for owner, state, beat in rows}
        dead = wanted - set(found)
        silent: dict[str, dt.datetime | None] = {}
        for owner, (state, heartbeat_at) in found.items():
            if state in FINAL_STATES:
                dead.add(owner)
                continue
            needs_heartbeat = state not in PROCESSLESS_STATES
            beat = naive_utc(heartbeat_at)
            if needs_heartbeat and (beat is None or beat + lease < now):
                silent[owner] = beat
        if silent:
            # Rare, so asked only now: was the database itself down for part of that silence?
            started = self._server_started(conn, now)
            dead.update(
                owner
                for owner, beat in silent.items()
                if liveness.silent_too_long(beat, now=now, lease=lease, server_started=started)
            )
        return dead

    def _server_started(self, conn: Connection, now: dt.datetime) -> dt.datetime | None:
        stmt = liveness.server_start_query(conn.dialect.name)
        if stmt is None:
            return None
        rows = [tuple(r) for r in conn.execute(stmt)]
        return liveness.started_from(conn.dialect.name, rows, now)

    @staticmethod
    def heartbeat(conn: Connection, owner: str) -> bool:
        """Stamp the owner's task with the database clock; False when the task row is missing."""
        result = conn.execute(_HEARTBEAT, {"owner": owner})
        return result.rowcount == 1


#: Built once (every running task sends one every few seconds).
_HEARTBEAT = update(_tasks).where(_tasks.c.id == bindparam("owner")).values(heartbeat_at=db_utcnow())


@functools.lru_cache(maxsize=64)
def _tasks_of(count: int) -> Executable:
    """The liveness query for `count` owners, bound as o0, o1, ... (one statement object per count)."""
    ids = [bindparam(f"o{i}", type_=_tasks.c.id.type) for i in range(count)]
    return select(_tasks.c.id, _tasks.c.state, _tasks.c.heartbeat_at).where(_tasks.c.id.in_(ids))
