"""The `postgresql` addon on a PostgreSQL server: a role and a database of its own per app.

The database is owned by the app's role and PUBLIC loses CONNECT on it (PostgreSQL grants CONNECT
and TEMP on every new database to PUBLIC), so app A's role cannot even connect to app B's database.
The role is NOSUPERUSER NOCREATEDB NOCREATEROLE. Statements are composed with psycopg's `sql`
module (`Identifier`, `Literal`): CREATE ROLE takes no bound parameters.

Isolation by password needs the server to ask for one: a `trust` line in pg_hba.conf that matches the
app network lets any app in as any role. The setting's description says so, and `provision` logs a
warning when the server lets an app's role in with a wrong password.

Clone copies with `pg_dump --no-owner --no-acl | psql` run as the *new* role, so every copied object
is the new app's own. Not `CREATE DATABASE … TEMPLATE`: that needs the source database to have no
other session, which a running source app always has, and clone must not stop it.
`dump` and `load` are the same two halves with a file between them, for backups to keep.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url

from hosting.apps.databases.common import Credentials, check_name, new_password, pipe
from hosting.errors import AddonServerError
from models.secrets import describe_db_error

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)


class PostgreSQLServer:
    """The platform's PostgreSQL server, reached with an admin URL."""

    addon = "postgresql"

    def __init__(self, admin_url: str) -> None:
        self.url: URL = make_url(admin_url)

    @property
    def host(self) -> str:
        return self.url.host or "127.0.0.1"

    @property
    def port(self) -> int:
        return self.url.port or 5432

    @contextmanager
    def _admin(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        psycopg = _psycopg()
        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.url.username or "postgres",
                password=self.url.password or None,
                dbname=self.url.database or "postgres",
                autocommit=True,  # CREATE/DROP DATABASE cannot run in a transaction
                connect_timeout=10,
            ) as conn:
                yield conn
        except psycopg.Error as err:
            raise AddonServerError(
                f"PostgreSQL server {self.host}:{self.port} refused to {what}: {describe_db_error(err)}"
            ) from err

    def provision(self, creds: Credentials) -> None:
        """Make the role and the database, or bring them back to the record (idempotent)."""
        name, role = check_name(creds.database), check_name(creds.username)
        sql = _psycopg().sql
        with self._admin(f"make database {name}") as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(creds.password)
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                        sql.Identifier(name), sql.Identifier(role)
                    )
                )
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
            conn.execute(sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(sql.Identifier(name), sql.Identifier(role)))
        logger.info("postgresql addon: database %s and role %s ready", name, role)
        if self.trusts(role, name):
            logger.warning(
                "postgresql addon: %s:%s let role %s in without its password (a pg_hba `trust` line): any app that "
                "reaches it may log in as any other app's role; ask for scram-sha-256 on the app network",
                self.host,
                self.port,
                role,
            )

    def trusts(self, role: str, database: str) -> bool:
        """Whether the server lets `role` in with a wrong password (as seen from here, on the admin URL's address)."""
        psycopg = _psycopg()
        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                user=check_name(role),
                password=new_password(),  # random: never the role's
                dbname=check_name(database),
                connect_timeout=10,
            ):
                return True
        except psycopg.OperationalError:
            return False

    def drop(self, creds: Credentials) -> None:
        """Drop the database (closing its sessions) and the role; what is already gone is fine."""
        name, role = check_name(creds.database), check_name(creds.username)
        sql = _psycopg().sql
        with self._admin(f"drop database {name}") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        logger.info("postgresql addon: database %s and role %s dropped", name, role)

    def reset(self, creds: Credentials) -> None:
        """Drop the app's database (closing its sessions) and make it afresh, empty, its role kept: before a load."""
        name = check_name(creds.database)
        sql = _psycopg().sql
        with self._admin(f"empty database {name}") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.provision(creds)

    def copy(self, source: Credentials, target: Credentials) -> None:
        """Copy the source app's database into the target's (already provisioned), owned by the target's role."""
        self._pipe(source, target, f"copy PostgreSQL database {source.database} into {target.database}")
        logger.info("postgresql addon: copied database %s into %s", source.database, target.database)

    def dump(self, creds: Credentials, path: Path) -> None:
        """The app's database as SQL in `path` (0600), without owners or grants: for a backup to keep."""
        self._pipe(creds, path, f"dump PostgreSQL database {creds.database}")

    def load(self, creds: Credentials, path: Path) -> None:
        """A dump (`dump`, of this app or another) into the app's own database, run as the app's role."""
        self._pipe(path, creds, f"load a PostgreSQL dump into {creds.database}")

    def _pipe(self, source: Credentials | Path, target: Credentials | Path, what: str) -> None:
        common = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGHOST": self.host, "PGPORT": str(self.port)}
        hide = [str(self.url.password or "")]
        dump: list[str] | Path = source if isinstance(source, Path) else []
        dump_env: dict[str, str] = {}
        if isinstance(source, Credentials):
            dump = ["pg_dump", "--no-owner", "--no-acl", "--clean", "--if-exists", "--format=plain"]
            dump_env = {**common, "PGUSER": self.url.username or "postgres", "PGDATABASE": check_name(source.database)}
            if self.url.password:
                dump_env["PGPASSWORD"] = str(self.url.password)
        load: list[str] | Path = target if isinstance(target, Path) else []
        load_env: dict[str, str] = {}
        if isinstance(target, Credentials):
            load = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-o", os.devnull]
            load_env = {**common, "PGUSER": check_name(target.username), "PGDATABASE": check_name(target.database)}
            load_env["PGPASSWORD"] = target.password
            hide.append(target.password)
        pipe(dump, load, dump_env=dump_env, load_env=load_env, hide=tuple(hide), what=what)


def _psycopg() -> Any:
    """psycopg, an extra: imported when the addon is used, so a box without PostgreSQL never needs it."""
    try:
        module = importlib.import_module("psycopg")
        importlib.import_module("psycopg.sql")
    except ImportError as err:
        raise AddonServerError("the postgresql addon needs psycopg: pip install 'boxtasks[postgres]'") from err
    return module
