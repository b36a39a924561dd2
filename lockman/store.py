"""The thin database layer: read the lock row, compare-and-swap it, judge owners alive or dead.

Everything here is one SQL statement (or one round trip); the loops and strategy live in
`lockman.manager`.

On MySQL/MariaDB through PyMySQL, the default, the lock row's hot statements (read, locked read,
compare-and-swap) skip SQLAlchemy's execution layer: they are compiled once from the same
SQLAlchemy constructs and run on the connection's DBAPI cursor, which saves about a tenth of a
millisecond of CPU per statement; and a swap that ends a locked transaction carries its COMMIT in
the same round trip when the connection allows multiple statements. Other backends take the plain
SQLAlchemy path, with the same SQL.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Dialect, Executable, Table, bindparam, select, update
from sqlalchemy.exc import DBAPIError

from lockman.errors import LockDocumentError, LockError, LockRowMissingError
from lockman.table import LockTable
from models import FINAL_STATES, PROCESSLESS_STATES, LockRequest, LockRow, Task, db_utcnow, liveness
from models.types import naive_utc

_locks: Table = LockRow.__table__  # type: ignore[assignment]
_requests: Table = LockRequest.__table__  # type: ignore[assignment]
_tasks: Table = Task.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Snapshot:
    table: LockTable
    version: int
    #: The database clock when the row was read; None for a snapshot remembered from our own write.
    now: dt.datetime | None


Lock = Literal["update", "share"] | None


@dataclass(frozen=True, slots=True)
class Posted:
    """What a writer that posted a request found once it held the lock row (`DriverSQL.post`)."""

    request_id: int
    #: The row as locked: the raw document, its version, and the database clock.
    row: tuple[Any, int, Any]
    #: Every request posted for this row and not yet ended, (id, body) in posting order; None when
    #: ours was answered already: then the transaction was rolled back (the row lock and our
    #: request are gone), `answer` holds the answer and `row` has no document.
    pending: list[tuple[int, str]] | None
    answer: Any = None


#: A posted request's answer key: random, so that a request id the server hands out again (its
#: AUTO_INCREMENT counter restarts on a promoted replica or a recreated table) can never pick up
#: an answer meant for another request.
ANSWER_KEY = re.compile(r"[0-9a-f]{16}")
_KEY_MARK = "\x01KEY\x01"

#: PyMySQL's CLIENT.MULTI_STATEMENTS capability bit.
MULTI_STATEMENTS = 1 << 16


class LockStore:
    """SQL for one lock row, identified by `row_id`."""

    def __init__(self, row_id: str) -> None:
        self.row_id = row_id
        self._select = select(_locks.c.data, _locks.c.version, db_utcnow()).where(_locks.c.id == row_id)
        self._select_version = select(_locks.c.version).where(_locks.c.id == row_id)
        # Built once: a statement object reused is compiled once and found in the cache by identity.
        self._cas = (
            update(_locks)
            .where(_locks.c.id == row_id, _locks.c.version == bindparam("seen"))
            .values(data=bindparam("data", type_=_locks.c.data.type), version=_locks.c.version + 1)
        )
        self._reads: dict[Lock, Executable] = {
            None: self._select,
            "update": self._select.with_for_update(),
            "share": self._select.with_for_update(read=True),
        }
        self._fast_by_dialect: dict[Dialect, DriverSQL | None] = {}

    def read(self, conn: Connection, *, lock: Lock = None) -> Snapshot:
        fast = self._fast(conn)
        try:
            row = conn.execute(self._reads[lock]).one_or_none() if fast is None else fast.fetch_one(conn, lock)
        except ValueError as err:  # the driver's JSON decoding: only SQLite lets non-JSON text in
            raise LockDocumentError(self.row_id, f"not JSON: {err}") from err
        if row is None:
            raise LockRowMissingError(f"lock row {self.row_id!r} does not exist: run `boxtasks db upgrade`")
        return self.parse_row(fast, row)

    def driver(self, conn: Connection) -> DriverSQL | None:
        """The driver-level statements for `conn`'s dialect, where there are any (MySQL via PyMySQL)."""
        return self._fast(conn)

    def parse_row(self, driver: DriverSQL | None, row: tuple[Any, ...]) -> Snapshot:
        """A snapshot of the row as read: (document, version, database clock)."""
        data, version, now = row
        if driver is not None:
            data = driver.decode(data)
        return Snapshot(LockTable.from_json(data, row_id=self.row_id), int(version), _naive(now))

    def version(self, conn: Connection) -> int:
        value = conn.execute(self._select_version).scalar_one_or_none()
        if value is None:
            raise LockRowMissingError(f"lock row {self.row_id!r} does not exist: run `boxtasks db upgrade`")
        return int(value)

    def compare_and_swap(self, conn: Connection, table: LockTable, seen: int, *, commit: bool = False) -> bool:
        """Write `table` only if the row is still at version `seen`; True when one row matched.

        With `commit`, also commit the connection's transaction (the one a locked `read` opened),
        in the same round trip where the driver allows it.
        """
        fast = self._fast(conn)
        if fast is None:
            swapped = conn.execute(self._cas, {"seen": seen, "data": table.to_json()}).rowcount == 1
            if commit:
                conn.commit()
            return swapped
        # SQLAlchemy knows of the transaction only when a statement of its own ran in it (the
        # dead-owner probe); then it ends it, or it would send a ROLLBACK of its own at check-in.
        together = commit and not conn.in_transaction()
        swapped = fast.swap(conn, table.to_json(), seen, commit=together)
        if commit and not together:
            conn.commit()
        return swapped

    def finish(self, conn: Connection, *, commit: bool) -> None:
        """End the transaction that a locked `read` opened on `conn`."""
        if self._fast(conn) is None or conn.in_transaction():
            if commit:
                conn.commit()
            else:
                conn.rollback()
            return
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        with _translated(conn, "COMMIT" if commit else "ROLLBACK"):
            if commit:
                dbapi_conn.commit()
            else:
                dbapi_conn.rollback()

    def _fast(self, conn: Connection) -> DriverSQL | None:
        dialect = conn.dialect
        try:
            return self._fast_by_dialect[dialect]
        except KeyError:
            fast = DriverSQL(self, dialect) if DriverSQL.supports(dialect) else None
            self._fast_by_dialect[dialect] = fast
            return fast

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
        fast = self._fast(conn)
        rows = fast.fetch_all(conn, stmt, values) if fast else [tuple(r) for r in conn.execute(stmt, values)]
        found = {owner: (state, beat) for owner, state, beat in rows}
        dead = wanted - set(found)
        silent: dict[str, dt.datetime | None] = {}
        for owner, (state, heartbeat_at) in found.items():
            if state in FINAL_STATES:
                dead.add(owner)
                continue
            needs_heartbeat = state not in PROCESSLESS_STATES
            beat = _naive(heartbeat_at)
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
        fast = self._fast(conn)
        rows = fast.fetch_all(conn, stmt, {}) if fast else [tuple(r) for r in conn.execute(stmt)]
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


class DriverSQL:
    """The lock row's statements compiled once for one dialect and run on the DBAPI cursor."""

    @staticmethod
    def supports(dialect: Dialect) -> bool:
        return dialect.name in ("mysql", "mariadb") and dialect.driver == "pymysql"

    def __init__(self, store: LockStore, dialect: Dialect) -> None:
        self.row_id = store.row_id
        self._dialect = dialect
        self._other: dict[Executable, _Compiled] = {}
        self._reads = {lock: _Compiled(stmt, dialect) for lock, stmt in store._reads.items()}
        self._cas = _Compiled(store._cas, dialect)
        # The hot statements as final SQL text, rendered once with the connection's own quoting
        # (`_render`), so that no parameter is escaped per call inside the critical section.
        self._read_sql: dict[Lock, str] = {}
        self._cas_parts: tuple[str, str, str] | None = None
        self._post_sql: tuple[str, str] | None = None
        json_deserializer = getattr(dialect, "_json_deserializer", None)
        json_serializer = getattr(dialect, "_json_serializer", None)
        # orjson unless the engine names its own codec: the document is parsed and written once
        # per write, the writing inside the row lock, and orjson does both 3-8x faster than `json`.
        self._loads: Callable[[str | bytes], Any] = json_deserializer or orjson.loads
        self._dumps: Callable[[Any], bytes] = (
            orjson.dumps if json_serializer is None else (lambda doc: json_serializer(doc).encode("utf-8"))
        )

    def fetch_all(self, conn: Connection, stmt: Executable, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        compiled = self._other.get(stmt)
        if compiled is None:
            if len(self._other) >= 64:
                self._other.clear()
            compiled = self._other[stmt] = _Compiled(stmt, self._dialect)
        with _translated(conn, compiled.sql) as cursor:
            cursor.execute(compiled.sql, compiled.args(values))
            return [tuple(row) for row in cursor.fetchall()]

    def fetch_one(self, conn: Connection, lock: Lock) -> tuple[Any, ...] | None:
        sql = self._read_sql.get(lock)
        with _translated(conn, self._reads[lock].sql) as cursor:
            if sql is None:
                stmt = self._reads[lock]
                sql = self._read_sql[lock] = cursor.mogrify(stmt.sql, stmt.args({}))
            cursor.execute(sql)
            row = cursor.fetchone()
        return None if row is None else tuple(row)

    def swap(self, conn: Connection, doc: Mapping[str, Any], seen: int, *, commit: bool) -> bool:
        dbapi_conn = conn.connection.dbapi_connection
        together = commit and bool(getattr(dbapi_conn, "client_flag", 0) & MULTI_STATEMENTS)
        with _translated(conn, self._cas.sql) as cursor:
            sql = self._cas_text(cursor, doc, seen)
            if together:
                sql += "; COMMIT"
            matched = cursor.execute(sql)
            if together:
                while cursor.nextset():  # the COMMIT's result; an error in it raises here
                    pass
            elif commit:
                assert dbapi_conn is not None
                dbapi_conn.commit()
        return bool(matched == 1)

    @staticmethod
    def supports_posting(dialect: Dialect) -> bool:
        """Posting needs MariaDB's compound statements outside stored programs (`BEGIN NOT ATOMIC`)
        and reads of uncommitted rows."""
        return DriverSQL.supports(dialect) and bool(getattr(dialect, "is_mariadb", False))

    def post(self, conn: Connection, body: bytes, key: str) -> Posted:
        """In one round trip on a READ UNCOMMITTED connection: insert our request, lock the row
        (waiting in line), then either leave at once, rolled back, because the writer before us
        answered our request (under `key`), or stay holding the row and read every pending request.
        """
        if not ANSWER_KEY.fullmatch(key):
            raise LockError(f"an answer key is 16 hex digits, not {key!r}")
        with _translated(conn, "INSERT INTO lock_requests ...") as cursor:
            if self._post_sql is None:
                self._post_sql = self._render_post(cursor)
            head, tail = self._post_sql
            cursor.execute(head + "CONVERT(X'" + body.hex() + "' USING utf8mb4)" + tail.replace(_KEY_MARK, key))
            while cursor.description is None:  # the INSERT's result comes first
                if not cursor.nextset():
                    raise LockRowMissingError(f"lock row {self.row_id!r} gave no answer to a posted request")
            me, data, answer, version, now = cursor.fetchone()
            pending: list[tuple[int, str]] | None = None
            while cursor.nextset():
                if cursor.description is not None:
                    pending = [(int(i), b if isinstance(b, str) else b.decode()) for i, b in cursor.fetchall()]
        if version is None:
            raise LockRowMissingError(f"lock row {self.row_id!r} does not exist: run `boxtasks db upgrade`")
        if pending is None:
            try:
                answer = self._loads(answer)
            except (TypeError, ValueError) as err:
                raise LockDocumentError(self.row_id, f"the answer under {key} is not JSON ({err})") from err
        return Posted(int(me), (data, int(version), now), pending, answer if pending is None else None)

    def apply_posted(self, conn: Connection, request_id: int, doc: Mapping[str, Any], seen: int) -> bool:
        """Swap in the document that answers the pending requests, drop ours, commit: one round trip."""
        with _translated(conn, self._cas.sql) as cursor:
            delete = f"DELETE FROM {_requests.name} WHERE id = {int(request_id)}; "
            cursor.execute(delete + self._cas_text(cursor, doc, seen) + "; COMMIT")
            cursor.nextset()
            matched = cursor.rowcount
            while cursor.nextset():
                pass
        return bool(matched == 1)

    def _render_post(self, cursor: Any) -> tuple[str, str]:
        row = cursor.mogrify("%s", (self.row_id,))
        now = str(db_utcnow().compile(dialect=self._dialect))
        path = f"'$.answers.\"{_KEY_MARK}\"'"
        head = f"INSERT INTO {_requests.name} (row_id, body) VALUES ({row}, "
        tail = (
            "); BEGIN NOT ATOMIC"
            " DECLARE me BIGINT DEFAULT LAST_INSERT_ID(); DECLARE d LONGTEXT; DECLARE v BIGINT;"
            f" SELECT data, version INTO d, v FROM {_locks.name} WHERE id = {row} FOR UPDATE;"
            f" IF JSON_EXISTS(d, {path}) THEN"
            f" ROLLBACK; SELECT me, NULL, JSON_EXTRACT(d, {path}), v, {now};"
            f" ELSE SELECT me, d, NULL, v, {now};"
            f" SELECT id, body FROM {_requests.name} WHERE row_id = {row} ORDER BY id;"
            " END IF; END"
        )
        return head, tail

    def _cas_text(self, cursor: Any, doc: Mapping[str, Any], seen: int) -> str:
        """The compare-and-swap of `doc` over version `seen`, as final SQL text.

        The document goes in as a hex literal: PyMySQL escapes a string parameter character by
        character (about 60 us for a 2 KB document, inside the critical section), while hex is
        made at C speed and, being only [0-9a-f], needs no escaping at all.
        """
        head, middle, tail = self._cas_parts or self._render_cas(cursor)
        return head + "CONVERT(X'" + self._dumps(doc).hex() + "' USING utf8mb4)" + middle + str(int(seen)) + tail

    def _render_cas(self, cursor: Any) -> tuple[str, str, str]:
        """The compare-and-swap as text around its two per-call values, the document and `seen`."""
        marks = {"data": "\x01DATA\x01", "seen": "\x01SEEN\x01"}
        template = self._cas.sql
        for name, mark in marks.items():
            template = template.replace(f"%({name})s", mark)
        rendered: str = cursor.mogrify(template, self._cas.args({}))
        head, rest = rendered.split(marks["data"])
        middle, tail = rest.split(marks["seen"])
        self._cas_parts = (head, middle, tail)
        return self._cas_parts

    def encode(self, doc: Mapping[str, Any]) -> bytes:
        return self._dumps(doc)

    def decode_request(self, body: str) -> Any:
        try:
            return self._loads(body)
        except ValueError as err:
            raise LockError(f"a posted lock request is not JSON ({err}): {body!r:.200}") from err

    def decode(self, data: Any) -> Any:
        if isinstance(data, bytes):
            data = data.decode()
        if not isinstance(data, str):
            return data
        try:
            return self._loads(data)
        except ValueError as err:
            raise LockDocumentError(self.row_id, f"not JSON: {err}") from err


class _Compiled:
    """One statement's SQL for a `pyformat` driver, with its fixed values (the row id) bound once."""

    def __init__(self, stmt: Executable, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
        assert not compiled.positional, "named (pyformat) parameters expected"
        self.sql: str = compiled.string
        # The values bound in the statement itself; those given per call (None here) come in `args`.
        self._fixed: dict[str, Any] = dict(compiled.construct_params(_check=False))

    def args(self, values: dict[str, Any]) -> dict[str, Any]:
        return {**self._fixed, **values}


class _translated:
    """A DBAPI cursor on `conn`'s connection; driver errors become SQLAlchemy's, as on the usual path
    (and a dropped connection is invalidated, so that the pool does not hand it out again)."""

    def __init__(self, conn: Connection, sql: str) -> None:
        self.conn, self.sql = conn, sql
        self.cursor: Any = None

    def __enter__(self) -> Any:
        dbapi_conn = self.conn.connection.dbapi_connection
        assert dbapi_conn is not None
        self.cursor = dbapi_conn.cursor()
        return self.cursor

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, _tb: object) -> None:
        cursor, self.cursor = self.cursor, None
        if cursor is not None:
            try:
                cursor.close()
            except Exception:
                if err is None:
                    raise
        dialect = self.conn.dialect
        dbapi_error = dialect.loaded_dbapi.Error
        if err is None or not isinstance(err, dbapi_error):
            return
        dbapi_conn = self.conn.connection.dbapi_connection
        invalidated = dialect.is_disconnect(err, dbapi_conn, cursor)
        if invalidated:
            self.conn.invalidate(err)
        raise DBAPIError.instance(
            self.sql, None, err, dbapi_error, connection_invalidated=invalidated, dialect=dialect
        ) from err


_naive = naive_utc  # the driver-level fetches bypass UTCDateTime
