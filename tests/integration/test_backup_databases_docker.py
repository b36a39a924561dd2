"""Database addons in every app backup: dumped into the one archive, loaded back on restore, into the clone's own.

A private dockerd, the real MariaDB and PostgreSQL. The app's rows are written and read only through the
credentials it was handed (its container's env); the servers are checked as their admin only at the end,
to show an uninstall leaves nothing there.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from hosting import BackupError
from hosting.apps import lifecycle
from hosting.backups import appbackup, fileformat, fullbackup, restore
from hosting.backups.fullbackup import back_up_apps
from models import Backup
from tests.appkit import Kit, kit, manifest, new_app_id
from tests.backupkit import backup_row, dbkit, only_these_back_up, task_ctx, tree, write_tree
from tests.services import MARIADB_ADMIN, POSTGRES_ADMIN

pytestmark = [pytest.mark.docker, pytest.mark.mariadb, pytest.mark.postgres]
__all__ = ["dbkit", "kit"]  # the fixtures, imported for this module

ADDONS: dict[str, dict[str, Any]] = {"localstorage": {}, "mysql": {}, "postgresql": {}}
BLOB = bytes(range(256)) * 64  # every byte value, NUL and quote included


def data_dir(k: Kit, app_id: str) -> Path:
    return k.box.app_dir(app_id) / "data"


def app_env(k: Kit, app_id: str) -> dict[str, str]:
    pairs = k.inspect(str(k.app(app_id).container_id))["Config"]["Env"]
    return dict(p.split("=", 1) for p in pairs)


# ---------------------------------------------------------------------------- the app's rows, through its credentials


def mysql_sql(env: dict[str, str], *statements: str, **params: Any) -> list[Any]:
    engine = create_engine(make_url(env["CLOUDRON_MYSQL_URL"]).set(drivername="mysql+pymysql"), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = None
            for statement in statements:
                result = conn.execute(text(statement), params)
            return list(result) if result is not None and result.returns_rows else []
    finally:
        engine.dispose()


def pg_sql(env: dict[str, str], *statements: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with psycopg.connect(env["CLOUDRON_POSTGRESQL_URL"], autocommit=True, connect_timeout=10) as conn:
        cur = None
        for statement in statements:
            cur = conn.execute(statement, params if "%s" in statement else ())
        return list(cur) if cur is not None and cur.description else []


def write_rows(env: dict[str, str]) -> None:
    mysql_sql(
        env,
        "CREATE TABLE notes (id INT PRIMARY KEY AUTO_INCREMENT, body VARCHAR(200), blob_ LONGBLOB, n DECIMAL(12,4))",
        "CREATE VIEW note_bodies AS SELECT id, body FROM notes",
    )
    for i in range(50):
        mysql_sql(
            env,
            "INSERT INTO notes (body, blob_, n) VALUES (:b, :blob, :n)",
            b=f"row {i} 'quoted' ünïcode \\ {'NULL' if i % 7 else ''}",
            blob=BLOB[i:],
            n=i * 1.25,
        )
    mysql_sql(env, "INSERT INTO notes (body, blob_, n) VALUES (NULL, NULL, NULL)")
    pg_sql(env, "CREATE TABLE items (id serial PRIMARY KEY, title text, data bytea, doc jsonb, at timestamptz)")
    for i in range(50):
        pg_sql(
            env,
            "INSERT INTO items (title, data, doc, at) VALUES (%s, %s, %s, '2026-01-01 00:00:00+00'::timestamptz + %s)",
            params=(f"item {i} \t\n 'x'", BLOB[: i * 10], json.dumps({"i": i, "ü": [1, None]}), f"{i} hours"),
        )
    pg_sql(env, "CREATE VIEW item_titles AS SELECT id, title FROM items")


def rows(env: dict[str, str]) -> dict[str, list[Any]]:
    """Every row of every table and view the app made, in order: what a restore must bring back exactly."""
    return {
        "mysql.notes": [tuple(r) for r in mysql_sql(env, "SELECT * FROM notes ORDER BY id")],
        "mysql.note_bodies": [tuple(r) for r in mysql_sql(env, "SELECT * FROM note_bodies ORDER BY id")],
        "mysql.tables": sorted(r[0] for r in mysql_sql(env, "SHOW TABLES")),
        "pg.items": [tuple(r) for r in pg_sql(env, "SELECT * FROM items ORDER BY id")],
        "pg.item_titles": [tuple(r) for r in pg_sql(env, "SELECT * FROM item_titles ORDER BY id")],
        "pg.tables": sorted(
            r[0] for r in pg_sql(env, "SELECT table_name FROM information_schema.tables WHERE table_schema='public'")
        ),
        "pg.next_id": pg_sql(env, "SELECT last_value FROM items_id_seq"),
    }


def change_everything(k: Kit, app_id: str, env: dict[str, str]) -> None:
    """What an app does after its backup: rows changed, deleted and added, a new table, files changed."""
    mysql_sql(env, "UPDATE notes SET body = 'changed' WHERE id < 10", "DELETE FROM notes WHERE id > 40")
    mysql_sql(env, "CREATE TABLE later (x INT)", "INSERT INTO later VALUES (1)")
    pg_sql(env, "UPDATE items SET title = 'changed' WHERE id < 10", "DELETE FROM items WHERE id > 40")
    pg_sql(env, "INSERT INTO items (title) VALUES ('after the backup')", "CREATE TABLE later (x int)")
    (data_dir(k, app_id) / "blob.bin").write_bytes(b"overwritten")
    (data_dir(k, app_id) / "a" / "b" / "c" / "deep.txt").unlink()
    (data_dir(k, app_id) / "new-file").write_text("not in the backup")


def members(k: Kit, bid: str) -> list[str]:
    with tarfile.open(k.settings.resolved_backup_dir / backup_row(k, bid).path) as tar:
        return tar.getnames()


def on_servers(name: str) -> dict[str, int]:
    """What is left of a database name on the servers, as their admin sees it."""
    admin = create_engine(MARIADB_ADMIN, poolclass=NullPool)
    with admin.connect() as conn:
        users = conn.execute(text("SELECT COUNT(*) FROM mysql.user WHERE user = :n"), {"n": name}).scalar()
        schemas = len(conn.execute(text("SHOW DATABASES LIKE :n"), {"n": name}).all())
    admin.dispose()
    url = make_url(POSTGRES_ADMIN)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname="postgres") as conn:
        roles = conn.execute("SELECT COUNT(*) FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        dbs = conn.execute("SELECT COUNT(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return {"mysql_user": int(users or 0), "mysql_db": schemas, "pg_role": roles[0], "pg_db": dbs[0]}  # type: ignore[index]


# ---------------------------------------------------------------------------- the tests


def test_backup_holds_the_databases_restore_brings_them_back_clone_gets_its_own_uninstall_leaves_nothing(
    dbkit: Kit,
) -> None:
    k = dbkit
    app_id = new_app_id("db")
    k.run(lifecycle.install, app_id, manifest=manifest(k.dockerd.image, addons=ADDONS), location=app_id)
    env = app_env(k, app_id)
    write_rows(env)
    write_tree(data_dir(k, app_id))
    files_before, rows_before = tree(data_dir(k, app_id)), rows(env)
    assert len(rows_before["mysql.notes"]) == 51 and len(rows_before["pg.items"]) == 50

    bid = k.run(appbackup.backup, app_id)["backupId"]
    row = backup_row(k, bid)
    assert row.state == "normal" and row.app_config["databaseDumps"] == ["mysql", "postgresql"]
    names = members(k, bid)
    assert {"addons/mysql.sql", "addons/postgresql.sql", "app.json", "data"} <= set(names)
    assert {n.split("/")[0] for n in names} == {"addons", "app.json", "data"}
    # One archive, one checksum over all of it (verify reads it whole), and no password in it.
    fileformat.verify(k.settings.resolved_backup_dir / row.path, sha256=row.checksum, size=row.size)
    raw = (k.settings.resolved_backup_dir / row.path).read_bytes()
    with tarfile.open(k.settings.resolved_backup_dir / row.path) as tar:
        dumped = b"".join(tar.extractfile(f"addons/{n}").read() for n in ("mysql.sql", "postgresql.sql"))  # type: ignore[union-attr]
    assert env["CLOUDRON_MYSQL_PASSWORD"].encode() not in dumped + raw
    assert b"CREATE TABLE `notes`" in dumped and b"CREATE TABLE public.items" in dumped
    assert not list((k.settings.resolved_backup_dir / "apps" / app_id).glob(".dumps-*"))  # the temp dumps are gone

    change_everything(k, app_id, env)
    assert rows(env) != rows_before

    restored = k.run(restore.restore, app_id, backupId=bid)
    assert restored["installationState"] == "installed" and restored["runState"] == "running"
    assert app_env(k, app_id) == env  # the same credentials, handed again
    assert tree(data_dir(k, app_id)) == files_before  # byte for byte
    assert rows(env) == rows_before  # row for row; the table made after the backup is gone too
    # Restoring again (a retried restore) gives the same, not doubled rows.
    k.run(restore.restore, app_id, backupId=bid)
    assert rows(env) == rows_before

    # The source moves on; a clone from the backup has the backup's databases, in databases of its own.
    change_everything(k, app_id, env)
    source_now = rows(env)
    clone_id = new_app_id("clone")
    k.run(restore.clone, clone_id, backupId=bid, location=clone_id)
    clone_env = app_env(k, clone_id)
    assert clone_env["CLOUDRON_MYSQL_DATABASE"] != env["CLOUDRON_MYSQL_DATABASE"]
    assert clone_env["CLOUDRON_POSTGRESQL_PASSWORD"] != env["CLOUDRON_POSTGRESQL_PASSWORD"]
    assert rows(clone_env) == rows_before and tree(data_dir(k, clone_id)) == files_before
    mysql_sql(clone_env, "INSERT INTO notes (body) VALUES ('only in the clone')")
    pg_sql(clone_env, "INSERT INTO items (title) VALUES ('only in the clone')")
    assert rows(env) == source_now  # the source did not see the clone's writes
    assert len(rows(clone_env)["mysql.notes"]) == 52

    # A full backup holds them too: it is made of app backups.
    with only_these_back_up(k.engine, [app_id]), task_ctx(k, {"task:fullbackup": "X", "platform": "S"}, "fb") as ctx:
        report = back_up_apps(ctx, [app_id], lambda c, a: fullbackup.backup_app_for_full_backup(c, a, box=k.box))
        full = fullbackup.finish_full_backup(ctx, report, box=k.box)
    (app_backup,) = full["appBackups"]
    assert {"addons/mysql.sql", "addons/postgresql.sql"} <= set(members(k, app_backup))

    # Uninstall with an archive dumps them once more (as they are now), drops them; the archive brings them back.
    archived = k.run(lifecycle.uninstall, app_id, archive=True)
    assert on_servers(env["CLOUDRON_MYSQL_DATABASE"]) == {"mysql_user": 0, "mysql_db": 0, "pg_role": 0, "pg_db": 0}
    k.run(restore.restore, app_id, archiveId=archived["archiveId"])
    env = app_env(k, app_id)  # the same names, a new password
    assert rows(env) == source_now

    for gone, e in ((app_id, env), (clone_id, clone_env)):
        k.run(lifecycle.uninstall, gone)
        assert k.leftovers(gone) == dict.fromkeys(k.leftovers(gone), 0)
        for name in (e["CLOUDRON_MYSQL_DATABASE"], e["CLOUDRON_POSTGRESQL_DATABASE"]):
            assert on_servers(name) == {"mysql_user": 0, "mysql_db": 0, "pg_role": 0, "pg_db": 0}


def test_a_backup_without_the_dumps_the_app_needs_is_refused_and_nothing_changes(dbkit: Kit) -> None:
    k = dbkit
    app_id = new_app_id("db")
    first = k.run(lifecycle.install, app_id, manifest=manifest(k.dockerd.image, addons=ADDONS), location=app_id)
    env = app_env(k, app_id)
    write_rows(env)
    write_tree(data_dir(k, app_id))
    good = backup_row(k, k.run(appbackup.backup, app_id)["backupId"])
    # A backup as an older version made it: the same data and config, but no dumps (and no `databaseDumps`).
    config = {key: v for key, v in good.app_config.items() if key != "databaseDumps"}
    old_id = good.id.replace("_v1.0.0", "0_v1.0.0")
    path = f"apps/{app_id}/{old_id}.tar.gz"
    written = fileformat.write(
        k.settings.resolved_backup_dir / path,
        fileformat.Contents(dirs={"data": data_dir(k, app_id)}, files={}, documents={"app.json": config}),
    )
    with k.engine.begin() as conn:
        conn.execute(
            insert(Backup).values(
                id=old_id, path=path, type="app", app_id=app_id, version="1.0.0", state="normal", format="tgz",
                depends_on=[], app_config=config, size=written.size, checksum=written.sha256,
            )
        )  # fmt: skip
    change_everything(k, app_id, env)
    files_now, rows_now = tree(data_dir(k, app_id)), rows(env)

    with pytest.raises(BackupError, match=r"no dump of the app's mysql, postgresql databases.*nothing was changed"):
        k.run(restore.restore, app_id, backupId=old_id)
    app = k.app(app_id)
    assert (app.installation_state, app.error, app.container_id) == ("installed", None, first["containerId"])
    assert k.inspect(str(first["containerId"]))["State"]["Running"]
    assert tree(data_dir(k, app_id)) == files_now and rows(env) == rows_now
    # ... and a clone from it is refused before the new app exists.
    clone_id = new_app_id("clone")
    with pytest.raises(BackupError, match="no dump"):
        k.run(restore.clone, clone_id, backupId=old_id, location=clone_id)
    assert k.leftovers(clone_id) == dict.fromkeys(k.leftovers(clone_id), 0)
    k.run(lifecycle.uninstall, app_id)


def test_a_backup_of_an_app_without_databases_is_as_it_was(kit: Kit) -> None:
    app_id = new_app_id()
    k = kit
    k.run(lifecycle.install, app_id, manifest=manifest(k.dockerd.image), location=app_id)
    write_tree(data_dir(k, app_id))
    bid = k.run(appbackup.backup, app_id)["backupId"]
    assert {n.split("/")[0] for n in members(k, bid)} == {"app.json", "data"}
    assert backup_row(k, bid).app_config["databaseDumps"] == []
    before = tree(data_dir(k, app_id))
    (data_dir(k, app_id) / "blob.bin").write_bytes(b"changed")
    k.run(restore.restore, app_id, backupId=bid)
    assert tree(data_dir(k, app_id)) == before
