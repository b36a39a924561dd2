"""Engines and sessions, made on request (never at import) from the settings' database URL."""

from __future__ import annotations

import functools
import inspect
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.orm import Session, sessionmaker

from config import ConfigError, get_settings
from config.filemodes import PRIVATE_FILE, create_private_file, private_dir


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer; busy_timeout makes writers queue, not fail.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def driver_connect_args(url: str | URL) -> dict[str, Any]:
    """Connect arguments every engine of ours passes to its driver.

    PyMySQL builds a TLS context for each new connection unless told not to, even when the
    server has TLS off: 50 ms a connection here instead of 0.4 ms, paid by every new pool
    process. A URL that asks for TLS (`?ssl_ca=...`, `?ssl=...`) keeps it.
    """
    parsed = make_url(url)
    pymysql = parsed.drivername in {"mysql+pymysql", "mariadb+pymysql"}
    if pymysql and not any(key.startswith("ssl") for key in parsed.query):
        return {"ssl_disabled": True}
    return {}


def _private_sqlite_file(path: str) -> None:
    """Make the database file 0600 (its directory 0700) before SQLite makes it with the umask's 0644.

    It holds every app's env values and passwords. An empty file is a valid empty database, and
    SQLite gives its -wal and -shm files the database file's mode. A file an older version left
    readable by others is narrowed (SQLite then makes new -wal/-shm files 0600 too).
    """
    db = Path(path)
    private_dir(db.parent)
    try:
        os.close(create_private_file(db))
    except FileExistsError:
        if db.stat().st_mode & 0o077:
            os.chmod(db, PRIVATE_FILE)


def make_engine(url: str, *, echo: bool = False, pool_size: int = 5) -> Engine:
    """An engine tuned for boxtasks: pre-ping and recycle survive a restarted or strict server.

    `hide_parameters`: an error's text (and the echo log) leaves out the statement's parameters,
    which carry task args, app env and addon passwords (`models.secrets`); so does the companion.
    """
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            _private_sqlite_file(path)
        engine = create_engine(url, echo=echo, hide_parameters=True, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args=driver_connect_args(url),
            pool_pre_ping=True,
            pool_recycle=300,
            pool_size=pool_size,
            max_overflow=pool_size,
        )
    except ModuleNotFoundError as err:  # psycopg is an extra: the default path needs no PostgreSQL driver
        if err.name not in ("psycopg", "psycopg2"):
            raise
        raise ConfigError(
            "BOXTASKS_DATABASE_URL names PostgreSQL but its driver is not installed: pip install 'boxtasks[postgres]'"
        ) from err


#: In autocommit mode SQLAlchemy would still call the driver's rollback() when a connection is
#: closed: one more round trip, undoing nothing. `skip_autocommit_rollback` (SQLAlchemy 2.0.43)
#: skips it; older versions pay the round trip.
SKIP_AUTOCOMMIT_ROLLBACK: dict[str, Any] = (
    {"skip_autocommit_rollback": True}
    if "skip_autocommit_rollback" in inspect.signature(DefaultDialect.__init__).parameters
    else {}
)

#: Each engine's autocommit companion (see `autocommit_engine`), until the engine is disposed.
_COMPANIONS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_COMPANIONS_LOCK = threading.Lock()


def _forget_companions_in_child() -> None:
    # The parent's companions use the parent's sockets: the child makes its own. Dropped without a
    # dispose (which would close those sockets for the parent too); the drivers' finalizers only
    # close the child's copies of the descriptors. And a thread of the parent (the worker's reaper,
    # say) may have held the lock at the fork: in the child it would stay held for good.
    global _COMPANIONS_LOCK
    _COMPANIONS_LOCK = threading.Lock()
    _COMPANIONS.clear()


os.register_at_fork(after_in_child=_forget_companions_in_child)


def autocommit_engine(engine: Engine) -> Engine:
    """A companion of `engine` for writes of one statement: one round trip each instead of four.

    Through `engine`, a one-statement write costs a ping (pre-ping), the statement, a COMMIT and,
    when the connection goes back to the pool, a ROLLBACK (its reset). Here the statement commits
    by itself: no transaction to end, no reset, no ping. A pooled connection the server has closed
    (a restart, wait_timeout) fails its statement and invalidates the pool: the caller's retry
    gets a new one (`models.records` retries its idempotent writes once). Same URL, driver
    arguments and echo, a small pool of its own (up to 10 connections), disposed with `engine`.
    SQLite has no round trips to save: there it is `engine` in autocommit mode, on the same pool
    (so an in-memory database stays the same database; there, a write made while the same thread
    has a transaction open on `engine` commits that transaction too: its connection is shared).
    Only for statements that stand alone: never for a transaction.
    """
    if engine.url.get_backend_name() == "sqlite":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    with _COMPANIONS_LOCK:
        companion = _COMPANIONS.get(engine)
        if companion is None:
            companion = _COMPANIONS[engine] = create_engine(
                engine.url,
                echo=engine.echo,
                hide_parameters=True,
                connect_args=driver_connect_args(engine.url),
                isolation_level="AUTOCOMMIT",
                pool_pre_ping=False,
                pool_reset_on_return=None,
                pool_recycle=300,
                pool_size=2,
                max_overflow=8,
                **SKIP_AUTOCOMMIT_ROLLBACK,
            )
            if not event.contains(engine, "engine_disposed", _dispose_companion):
                event.listen(engine, "engine_disposed", _dispose_companion)
    return companion


def _dispose_companion(engine: Engine) -> None:
    """`engine` was disposed: so is its companion (a later write makes a new one)."""
    with _COMPANIONS_LOCK:
        companion = _COMPANIONS.pop(engine, None)
    if companion is not None:
        companion.dispose()


@functools.cache
def get_engine() -> Engine:
    """The process-wide engine for the configured database (after a fork, call `dispose_after_fork`)."""
    settings = get_settings()
    return make_engine(settings.effective_database_url, echo=settings.sql_echo)


def dispose_after_fork() -> None:
    """Drop pooled connections inherited from a parent process without closing the parent's sockets."""
    # The companions made before the fork are already forgotten here (`_forget_companions_in_child`),
    # so the dispose below, whose event disposes an engine's companion, cannot close theirs.
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)


@functools.cache
def _sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _sessionmaker()()
