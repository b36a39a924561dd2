"""The `mysql` addon on a MySQL or MariaDB server: a database and a user of its own per app.

The user (`'app_…'@'%'`) is granted ALL on its own database only, so its credentials open nothing
else. Statements are SQLAlchemy `text()` with bound values (user names, passwords) and identifiers
quoted by the dialect's own preparer, after `common.check_name`.

Clone copies with `mysqldump --single-transaction | mysql` (Oracle's and MariaDB's own tools): a
consistent snapshot of a running source without locking it, and it carries views, triggers,
routines and events, which a table-by-table `INSERT … SELECT` would not. DEFINER clauses naming the
source's user are rewritten to the new app's user, so the clone's routines do not run as app A.
`dump` and `load` are the same two halves with a file between them, for backups to keep.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from hosting.apps.databases.common import Credentials, check_name, pipe
from hosting.errors import AddonServerError
from models.secrets import describe_db_error

logger = logging.getLogger(__name__)

#: A DEFINER clause naming an app's user (any app's: a clone's dump names its source's).
_DEFINER = re.compile(rb"DEFINER=`app_[a-z0-9_]{1,26}`@")


class MySQLServer:
    """The platform's MySQL/MariaDB server, reached with an admin URL."""

    addon = "mysql"

    def __init__(self, admin_url: str) -> None:
        self.url: URL = make_url(admin_url).set(database=None)

    @contextmanager
    def _admin(self, what: str) -> Iterator[Connection]:
        engine = create_engine(self.url, poolclass=NullPool, connect_args={"connect_timeout": 10})
        try:
            with engine.begin() as conn:
                yield conn
        except SQLAlchemyError as err:
            raise AddonServerError(
                f"MySQL server {self.url.host}:{self.url.port or 3306} refused to {what}: {describe_db_error(err)}"
            ) from err
        finally:
            engine.dispose()

    def provision(self, creds: Credentials) -> None:
        """Make the database and the user, or bring them back to the record (idempotent)."""
        db, user = check_name(creds.database), check_name(creds.username)
        with self._admin(f"make database {db}") as conn:
            quoted = conn.dialect.identifier_preparer.quote_identifier(db)
            conn.execute(
                text(f"CREATE DATABASE IF NOT EXISTS {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            )
            conn.execute(
                text("CREATE USER IF NOT EXISTS :user@'%' IDENTIFIED BY :pw"), {"user": user, "pw": creds.password}
            )
            conn.execute(text("ALTER USER :user@'%' IDENTIFIED BY :pw"), {"user": user, "pw": creds.password})
            # In a GRANT's database name `_` is a wildcard: escaped, the grant covers this database alone.
            literal = conn.dialect.identifier_preparer.quote_identifier(db.replace("_", "\\_"))
            conn.execute(text(f"GRANT ALL PRIVILEGES ON {literal}.* TO :user@'%'"), {"user": user})
        logger.info("mysql addon: database %s and user %s ready", db, user)

    def drop(self, creds: Credentials) -> None:
        """Drop the database and the user; what is already gone is fine."""
        db, user = check_name(creds.database), check_name(creds.username)
        with self._admin(f"drop database {db}") as conn:
            quoted = conn.dialect.identifier_preparer.quote_identifier(db)
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
            conn.execute(text("DROP USER IF EXISTS :user@'%'"), {"user": user})
        logger.info("mysql addon: database %s and user %s dropped", db, user)

    def reset(self, creds: Credentials) -> None:
        """Drop the app's database and make it afresh, empty (its user, password and grant kept): before a load."""
        db = check_name(creds.database)
        with self._admin(f"empty database {db}") as conn:
            quoted = conn.dialect.identifier_preparer.quote_identifier(db)
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
        self.provision(creds)

    def copy(self, source: Credentials, target: Credentials) -> None:
        """Copy the source app's database into the target's (already provisioned), as a consistent snapshot."""
        self._pipe(source, target, f"copy MySQL database {source.database} into {target.database}")
        logger.info("mysql addon: copied database %s into %s", source.database, target.database)

    def dump(self, creds: Credentials, path: Path) -> None:
        """The app's database as SQL in `path` (0600), a consistent snapshot: for a backup to keep."""
        self._pipe(creds, path, f"dump MySQL database {creds.database}")

    def load(self, creds: Credentials, path: Path) -> None:
        """A dump (`dump`, of this app or another) into the app's own database, its definers made the app's user."""
        self._pipe(path, creds, f"load a MySQL dump into {creds.database}")

    def _pipe(self, source: Credentials | Path, target: Credentials | Path, what: str) -> None:
        with self._defaults_file() as defaults:
            base = [f"--defaults-extra-file={defaults}"]
            dump: list[str] | Path = source if isinstance(source, Path) else []
            if isinstance(source, Credentials):
                opts = ["--single-transaction", "--routines", "--triggers", "--events", "--hex-blob"]
                dump = ["mysqldump", *base, *opts, check_name(source.database)]
            load: list[str] | Path = target if isinstance(target, Path) else []
            rewrite = None
            if isinstance(target, Credentials):
                load = ["mysql", *base, check_name(target.database)]
                new_definer = b"DEFINER=`" + check_name(target.username).encode() + b"`@"
                rewrite = lambda line: _DEFINER.sub(new_definer, line)  # noqa: E731
            pipe(
                dump,
                load,
                dump_env=_tool_env(),
                load_env=_tool_env(),
                rewrite=rewrite,
                hide=(self.url.password or "",),
                what=what,
            )

    @contextmanager
    def _defaults_file(self) -> Iterator[str]:
        """The admin's client options in a file only this user reads: a password on a command line is public."""
        with tempfile.TemporaryDirectory(prefix="boxtasks-mysql-") as tmp:
            path = os.path.join(tmp, "client.cnf")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            lines = ["[client]", f"host={self.url.host or '127.0.0.1'}", f"port={self.url.port or 3306}"]
            lines.append(f"user={self.url.username or 'root'}")
            if self.url.password:
                lines.append(f'password="{_option_value(str(self.url.password))}"')
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
            yield path


def _option_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _tool_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
