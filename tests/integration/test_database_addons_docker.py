"""Database addons through the app operations: install hands the container its env, clone copies, uninstall drops.

A private dockerd, the real MariaDB and PostgreSQL (`test_database_addons` covers isolation in depth).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from hosting import AddonNotProvidedError
from hosting.apps import addons, databases, lifecycle
from hosting.apps.update import update_app
from hosting.backups import appbackup, restore
from tests.appkit import Kit, kit, manifest, new_app_id
from tests.backupkit import dbkit
from tests.services import MARIADB_ADMIN, POSTGRES_ADMIN

pytestmark = [pytest.mark.docker, pytest.mark.mariadb, pytest.mark.postgres]
__all__ = ["dbkit", "kit"]  # the fixtures, imported for this module

ADDONS: dict[str, dict[str, Any]] = {"localstorage": {}, "mysql": {}, "postgresql": {}}


def _container_env(k: Kit, container_id: str) -> dict[str, str]:
    pairs = k.inspect(container_id)["Config"]["Env"]
    return dict(p.split("=", 1) for p in pairs)


def _stored(k: Kit, app_id: str) -> dict[str, dict[str, Any]]:
    with k.engine.connect() as conn:
        return addons.stored(conn, app_id)


def test_install_hands_the_env_clone_copies_uninstall_drops(dbkit: Kit) -> None:
    k = dbkit
    source = new_app_id()
    result = k.run(lifecycle.install, source, manifest=manifest(k.dockerd.image, addons=ADDONS), location=source)
    env = _container_env(k, str(result["containerId"]))
    handed = databases.env_for(_stored(k, source))
    assert {n: env[n] for n in handed} == handed  # the container has every name, with the app's own values
    assert {"CLOUDRON_MYSQL_URL", "CLOUDRON_POSTGRESQL_URL", "CLOUDRON_MYSQL_DATABASE"} <= set(env)

    # The app writes through what it was handed (from here: the test container has no network).
    mysql = create_engine(make_url(env["CLOUDRON_MYSQL_URL"]).set(drivername="mysql+pymysql"), poolclass=NullPool)
    with mysql.begin() as conn:
        conn.execute(text("CREATE TABLE t (v VARCHAR(20))"))
        conn.execute(text("INSERT INTO t VALUES ('from-source')"))
    mysql.dispose()
    with psycopg.connect(env["CLOUDRON_POSTGRESQL_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('from-source')")

    # A repair rebuilds the container with the same credentials.
    repaired = k.run(lifecycle.repair, source)
    assert {n: _container_env(k, str(repaired["containerId"]))[n] for n in handed} == handed

    bid = k.run(appbackup.backup, source)["backupId"]
    clone = new_app_id("clone")
    cloned = k.run(restore.clone, clone, backupId=bid, location=clone)
    clone_env = _container_env(k, str(cloned["containerId"]))
    assert clone_env["CLOUDRON_MYSQL_DATABASE"] != env["CLOUDRON_MYSQL_DATABASE"]
    mysql = create_engine(make_url(clone_env["CLOUDRON_MYSQL_URL"]).set(drivername="mysql+pymysql"), poolclass=NullPool)
    with mysql.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT v FROM t"))] == ["from-source"]
    mysql.dispose()
    with psycopg.connect(clone_env["CLOUDRON_POSTGRESQL_URL"]) as conn:
        assert [r[0] for r in conn.execute("SELECT v FROM t")] == ["from-source"]

    for app_id, e in ((source, env), (clone, clone_env)):
        k.run(lifecycle.uninstall, app_id)
        assert k.leftovers(app_id) == dict.fromkeys(k.leftovers(app_id), 0)
        name = e["CLOUDRON_MYSQL_DATABASE"]
        admin = create_engine(MARIADB_ADMIN, poolclass=NullPool)
        with admin.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM mysql.user WHERE user = :n"), {"n": name}).scalar() == 0
            assert conn.execute(text("SHOW DATABASES LIKE :n"), {"n": name}).first() is None
        admin.dispose()
        url = make_url(POSTGRES_ADMIN)
        with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname="postgres") as conn:
            assert conn.execute("SELECT COUNT(*) FROM pg_roles WHERE rolname = %s", (name,)).fetchone() == (0,)
            assert conn.execute("SELECT COUNT(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)


def test_install_of_an_app_needing_an_unprovided_addon_is_refused_before_anything_exists(kit: Kit) -> None:
    app_id = new_app_id()
    with pytest.raises(AddonNotProvidedError, match="BOXTASKS_MYSQL_ADDON_URL"):
        k_manifest = manifest(kit.dockerd.image, addons={"mysql": {}})
        kit.run(lifecycle.install, app_id, manifest=k_manifest, location=app_id)
    assert kit.leftovers(app_id) == dict.fromkeys(kit.leftovers(app_id), 0)


def test_an_update_that_adds_a_database_addon_starts_with_it(dbkit: Kit) -> None:
    k = dbkit
    app_id = new_app_id()
    k.run(lifecycle.install, app_id, manifest=manifest(k.dockerd.image, addons={"localstorage": {}}), location=app_id)
    k.dockerd.client.images.get(k.dockerd.image).tag("boxtasks-test/busybox", "1.2.0")
    newer = manifest("boxtasks-test/busybox:1.2.0", version="1.2.0", addons={"localstorage": {}, "postgresql": {}})
    k.run(update_app, app_id, manifest=newer, force=True)
    env = _container_env(k, str(k.app(app_id).container_id))
    handed = databases.env_for(_stored(k, app_id))
    assert set(handed) == {n for n in handed if n.startswith("CLOUDRON_POSTGRESQL_")} and len(handed) == 6
    assert {n: env[n] for n in handed} == handed
    with psycopg.connect(env["CLOUDRON_POSTGRESQL_URL"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (env["CLOUDRON_POSTGRESQL_DATABASE"],)
    k.run(lifecycle.uninstall, app_id)
    assert k.leftovers(app_id) == dict.fromkeys(k.leftovers(app_id), 0)
