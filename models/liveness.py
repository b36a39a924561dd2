"""Is a task's process alive? Its heartbeat on the database clock, with the database's downtime forgiven.

A running task proves it lives by stamping `tasks.heartbeat_at` (every third of the lease). While
the database is down nobody can stamp anything, so when it comes back every heartbeat is older
than the lease: judged by age alone, every holder would be dead at once and its locks handed to
another task while its process still works on the app. Silence is therefore counted from the
later of the last heartbeat and the moment the database server last started: after a restart a
holder has a whole lease to beat again (its heartbeat thread retries every second while beats
fail). A worker cut off from a database that stays up is not forgiven: to the database it is
indistinguishable from a dead one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Executable, text

from models.types import UTCDateTime

#: When the server started, per backend; SQLite has no server (and no outage of its own).
_STARTED: dict[str, Executable] = {
    # Uptime is whole seconds, so the start looks up to a second later than it was: forgiving.
    "mysql": text("SHOW GLOBAL STATUS LIKE 'Uptime'"),
    "mariadb": text("SHOW GLOBAL STATUS LIKE 'Uptime'"),
    "postgresql": text("SELECT pg_postmaster_start_time() AT TIME ZONE 'UTC' AS started").columns(
        started=UTCDateTime()
    ),
}


def server_start_query(dialect: str) -> Executable | None:
    """The statement whose rows `started_from` reads, or None where there is no server."""
    return _STARTED.get(dialect)


def started_from(dialect: str, rows: Sequence[Sequence[Any]], now: dt.datetime) -> dt.datetime | None:
    """When the server started (naive UTC, database clock), from the rows of `server_start_query`."""
    if not rows:
        return None
    if dialect in ("mysql", "mariadb"):
        return now - dt.timedelta(seconds=int(rows[0][1]))
    started: dt.datetime = rows[0][0]
    return started


def server_started_at(conn: Connection, now: dt.datetime) -> dt.datetime | None:
    stmt = server_start_query(conn.dialect.name)
    if stmt is None:
        return None
    return started_from(conn.dialect.name, [tuple(r) for r in conn.execute(stmt)], now)


def silent_too_long(
    heartbeat_at: dt.datetime | None, *, now: dt.datetime, lease: dt.timedelta, server_started: dt.datetime | None
) -> bool:
    """Silent for longer than the lease, counting only time the database was up to hear it."""
    since = heartbeat_at
    if server_started is not None and (since is None or server_started > since):
        since = server_started
    return since is None or since + lease < now
