"""The box backup: a dump of the platform's own database, listing the app backups it depends on.

The dump uses each database's own consistent tool: mysqldump/mariadb-dump `--single-transaction`
(InnoDB snapshot, no table locks, so apptasks go on), pg_dump (one snapshot), or SQLite's online
backup API. The archive holds `database.<ext>` and `box.json` (platform version, database kind,
the app backups), and its row lists those app backups in `depends_on`, so retention keeps them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.engine import URL, make_url

from config.filemodes import create_private_file, private_dir
from hosting.backups import fileformat
from hosting.backups.store import BackupRecord, BackupState, backup_id, finish, storage_path, write_or_fail
from hosting.box import Box
from hosting.context import TaskContext
from hosting.errors import DumpError
from hosting.platformops import state as platform_state
from models import Backup

logger = logging.getLogger(__name__)

DUMP_TIMEOUT_SECONDS = 3600
#: Lines of a dump tool's stderr that are logged, at most.
_STDERR_LINES = 200


def create_box_backup(ctx: TaskContext, box: Box, *, depends_on: list[str], version: str | None = None) -> BackupRecord:
    """Dump the database and archive it as a `box` backup (creating -> normal | error, like an app backup)."""
    url = make_url(box.settings.effective_database_url)
    with ctx.fenced() as conn:
        version = version or platform_state.current(conn, box.settings).version
        bid = backup_id("box", None, version)
        path = storage_path("box", None, bid)
        conn.execute(
            insert(Backup).values(
                id=bid,
                path=path,
                type="box",
                app_id=None,
                version=version,
                state=BackupState.CREATING,
                format=fileformat.FORMAT,
                depends_on=list(depends_on),
                app_config=None,
                task_id=ctx.task_id,
            )
        )
    private_dir(box.settings.resolved_backup_dir)
    # tempfile makes the directory 0700, and the dump in it 0600 at creation (`_run`, `_sqlite_backup`).
    with tempfile.TemporaryDirectory(dir=box.settings.resolved_backup_dir, prefix=".dump-") as tmp:
        source = {"taskId": ctx.task_id, "type": "box"}
        try:
            dump = dump_database(url, Path(tmp))
        except DumpError as err:
            finish(ctx, box.settings, bid, error=str(err), source=source)
            raise
        info = {"version": version, "database": url.get_backend_name(), "dependsOn": list(depends_on)}
        contents = fileformat.Contents(dirs={}, files={dump.name: dump}, documents={"box.json": info})
        written = write_or_fail(ctx, box.settings, bid, path, contents, source=source)
    return BackupRecord(bid, path, written.size, written.sha256, None, list(depends_on))


def dump_database(url: URL, into: Path) -> Path:
    """Dump the database at `url` into a file under `into`; DumpError says which tool failed and why."""
    backend = url.get_backend_name()
    if backend in ("mysql", "mariadb"):
        return _mysqldump(url, into / "database.sql")
    if backend == "postgresql":
        return _pg_dump(url, into / "database.sql")
    if backend == "sqlite":
        return _sqlite_backup(url, into / "database.sqlite")
    raise DumpError(f"cannot dump a {backend} database: supported are MySQL/MariaDB, PostgreSQL and SQLite")


def _mysqldump(url: URL, dest: Path) -> Path:
    tool = shutil.which("mysqldump") or shutil.which("mariadb-dump")
    if tool is None:
        raise DumpError("mysqldump is not installed; install the MariaDB/MySQL client (apt-get install mariadb-client)")
    # The password goes in an option file readable by us only (tempfile makes it 0600), never on the command line.
    with tempfile.NamedTemporaryFile("w", prefix=".my-", suffix=".cnf", dir=dest.parent, delete=False) as cnf:
        cnf.write("[client]\n")
        cnf.write(f"user={url.username or 'root'}\n")
        if url.password:
            cnf.write(f"password={url.password}\n")
        if url.query.get("unix_socket"):
            cnf.write(f"socket={url.query['unix_socket']}\n")
        else:
            cnf.write(f"host={url.host or '127.0.0.1'}\nport={url.port or 3306}\nprotocol=tcp\n")
    try:
        args = [
            tool,
            f"--defaults-extra-file={cnf.name}",
            "--single-transaction",
            "--quick",
            "--skip-lock-tables",
            "--no-tablespaces",
            "--hex-blob",
            "--default-character-set=utf8mb4",
            str(url.database),
        ]
        _run(args, dest, env=None, what="mysqldump")
    finally:
        os.unlink(cnf.name)
    return dest


def _pg_dump(url: URL, dest: Path) -> Path:
    tool = shutil.which("pg_dump")
    if tool is None:
        raise DumpError("pg_dump is not installed; install the PostgreSQL client (apt-get install postgresql-client)")
    env = {**os.environ, "PGPASSWORD": url.password or ""} if url.password else None
    args = [
        tool,
        "--no-owner",
        "--no-privileges",
        "-h",
        url.host or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
        "-d",
        str(url.database),
    ]
    _run(args, dest, env=env, what="pg_dump")
    return dest


def _sqlite_backup(url: URL, dest: Path) -> Path:
    if not url.database or url.database == ":memory:":
        raise DumpError("an in-memory SQLite database cannot be backed up")
    try:
        os.close(create_private_file(dest))  # 0600 before SQLite writes the first page into it
        source = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True, timeout=30)
        try:
            target = sqlite3.connect(dest)
            try:
                source.backup(target)  # the online backup API: a consistent copy while others write
            finally:
                target.close()
        finally:
            source.close()
    except (sqlite3.Error, OSError) as err:
        raise DumpError(f"cannot back up the SQLite database {url.database}: {err}") from err
    return dest


def _run(args: list[str], dest: Path, *, env: dict[str, str] | None, what: str) -> None:
    try:
        fd = create_private_file(dest)  # the dump is the whole database: 0600 before the tool writes a byte
    except OSError as err:
        raise DumpError(f"cannot create {dest} for {what}: {err}") from err
    with os.fdopen(fd, "wb") as out:
        try:
            proc = subprocess.run(
                args, stdout=out, stderr=subprocess.PIPE, env=env, timeout=DUMP_TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DumpError(f"{what} could not run: {err}") from err
    # What the tool said (warnings, notes) goes to the log, which the task keeps as its own.
    said = proc.stderr.decode(errors="replace").splitlines()
    for line in said[:_STDERR_LINES]:
        if line.strip():
            logger.info("%s: %s", what, line.rstrip())
    if len(said) > _STDERR_LINES:
        logger.info("%s: ... %d more line(s) of output", what, len(said) - _STDERR_LINES)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-500:]
        raise DumpError(f"{what} failed with exit code {proc.returncode}: {tail or 'no message'}")
    logger.info("%s wrote %s (%d bytes)", what, dest, dest.stat().st_size)
