"""Database addons on the real MariaDB and PostgreSQL: each app's own database and user, isolated, cloned, dropped.

Every check uses the credentials an app is handed (its env), never the admin's. Names come from app
ids unique to the test, and a fixture drops whatever a test made, so runs on one machine never meet.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, delete, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from config import Settings, load_settings
from hosting import AddonNotProvidedError, AddonServerError
from hosting.apps import addons, databases
from hosting.apps.manifest import parse_manifest
from models import App, AppAddon
from models.secrets import MARKER, redact
from tests.services import MARIADB_ADMIN, POSTGRES_ADMIN, require

pytestmark = [pytest.mark.mariadb, pytest.mark.postgres]

ENV_NAMES = {
    "mysql": {f"CLOUDRON_MYSQL_{n}" for n in ("URL", "USERNAME", "PASSWORD", "HOST", "PORT", "DATABASE")},
    "postgresql": {f"CLOUDRON_POSTGRESQL_{n}" for n in ("URL", "USERNAME", "PASSWORD", "HOST", "PORT", "DATABASE")},
}


def _manifest(*addon_names: str) -> dict[str, Any]:
    return {
        "id": "io.example.dbapp",
        "version": "1.0.0",
        "image": "example/dbapp:1",
        "httpPort": 8000,
        "addons": {a: {} for a in addon_names},
    }


class Box:
    """The box's own database (for the `app_addons` records) and the addon settings, over real servers."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.made: list[str] = []

    def new_app(self, *addon_names: str) -> str:
        app_id = f"dbt-{uuid.uuid4().hex[:10]}"
        with self.engine.begin() as conn:
            conn.execute(
                insert(App).values(
                    id=app_id,
                    app_store_id="io.example.dbapp",
                    manifest=_manifest(*addon_names),
                    version="1.0.0",
                    location=app_id,
                    installation_state="installed",
                    run_state="running",
                    env={},
                )
            )
        self.made.append(app_id)
        return app_id

    def install(self, *addon_names: str) -> tuple[str, dict[str, str]]:
        """An app with its databases set up and provisioned, as install does; its id and its env."""
        app_id = self.new_app(*addon_names)
        return app_id, self.set_up(app_id, *addon_names)

    def set_up(self, app_id: str, *addon_names: str) -> dict[str, str]:
        with self.engine.begin() as conn:
            databases.set_up(
                conn, app_id=app_id, manifest=parse_manifest(_manifest(*addon_names)), settings=self.settings
            )
        databases.provision(self.settings, self.configs(app_id))
        return databases.env_for(self.configs(app_id))

    def configs(self, app_id: str) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return addons.stored(conn, app_id)

    def uninstall(self, app_id: str) -> None:
        databases.tear_down(self.settings, self.configs(app_id))
        with self.engine.begin() as conn:
            addons.tear_down(conn, app_id)
            conn.execute(delete(App).where(App.id == app_id))


@pytest.fixture
def box(mariadb_url: str, tmp_path: Path) -> Iterator[Box]:
    require("127.0.0.1", 3306, "MariaDB")
    require("127.0.0.1", 5432, "PostgreSQL")
    settings = load_settings(
        data_dir=tmp_path,
        database_url=mariadb_url,
        mysql_addon_url=MARIADB_ADMIN,
        postgresql_addon_url=POSTGRES_ADMIN + "/postgres",
    )
    engine = create_engine(mariadb_url, poolclass=NullPool)
    b = Box(engine, settings)
    try:
        yield b
    finally:
        for app_id in b.made:  # whatever a test left: dropped (dropping what is gone is fine)
            databases.tear_down(settings, b.configs(app_id))
            with engine.begin() as conn:
                conn.execute(delete(App).where(App.id == app_id))
        engine.dispose()


# ---------------------------------------------------------------------------- connecting as the app


def _mysql(env: dict[str, str], database: str | None = None) -> Engine:
    """An engine built only from what the app is handed: its URL (optionally aimed at another database)."""
    url = make_url(env["CLOUDRON_MYSQL_URL"]).set(drivername="mysql+pymysql")
    if database is not None:
        url = url.set(database=database)
    return create_engine(url, poolclass=NullPool)


def _pg(env: dict[str, str], database: str | None = None) -> psycopg.Connection[Any]:
    conninfo = env["CLOUDRON_POSTGRESQL_URL"]
    if database is not None:
        conninfo = conninfo.rsplit("/", 1)[0] + "/" + database
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)


def _write_mysql(env: dict[str, str], value: str) -> None:
    eng = _mysql(env)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE notes (id INT PRIMARY KEY AUTO_INCREMENT, body VARCHAR(100))"))
        conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": value})
        conn.execute(text("CREATE VIEW note_bodies AS SELECT body FROM notes"))
    eng.dispose()


def _read_mysql(env: dict[str, str], database: str | None = None) -> list[str]:
    eng = _mysql(env, database)
    try:
        with eng.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT body FROM note_bodies ORDER BY body"))]
    finally:
        eng.dispose()


def _write_pg(env: dict[str, str], value: str) -> None:
    with _pg(env) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes (body) VALUES (%s)", (value,))


def _read_pg(env: dict[str, str]) -> list[str]:
    with _pg(env) as conn:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY body")]


def _as_app_mysql(env: dict[str, str], sql: str) -> None:
    eng = _mysql(env)
    try:
        with eng.connect() as conn:
            conn.execute(text(sql))
    finally:
        eng.dispose()


def _admin_mysql(sql: str, **params: Any) -> list[Any]:
    eng = create_engine(MARIADB_ADMIN, poolclass=NullPool)
    try:
        with eng.connect() as conn:
            result = conn.execute(text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        eng.dispose()


def _admin_pg(sql: str, *params: Any) -> list[Any]:
    url = make_url(POSTGRES_ADMIN)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True) as conn:
        return list(conn.execute(sql, params))


# ---------------------------------------------------------------------------- the tests


def test_each_app_is_handed_exactly_the_names_packaged_apps_read(box: Box) -> None:
    app_id, env = box.install("mysql", "postgresql")
    assert set(env) == ENV_NAMES["mysql"] | ENV_NAMES["postgresql"]
    for prefix in ("CLOUDRON_MYSQL", "CLOUDRON_POSTGRESQL"):
        assert env[f"{prefix}_USERNAME"] == env[f"{prefix}_DATABASE"]
        assert env[f"{prefix}_DATABASE"].startswith("app_dbt_")
        assert len(env[f"{prefix}_PASSWORD"]) >= 24
        assert env[f"{prefix}_HOST"] == "127.0.0.1"
    assert env["CLOUDRON_MYSQL_PORT"] == "3306" and env["CLOUDRON_POSTGRESQL_PORT"] == "5432"
    m = env
    assert m["CLOUDRON_MYSQL_URL"] == (
        f"mysql://{m['CLOUDRON_MYSQL_USERNAME']}:{m['CLOUDRON_MYSQL_PASSWORD']}@127.0.0.1:3306/{m['CLOUDRON_MYSQL_DATABASE']}"
    )
    assert m["CLOUDRON_POSTGRESQL_URL"].startswith(f"postgres://{m['CLOUDRON_POSTGRESQL_USERNAME']}:")
    # What a read view shows of them: names, never the password (nor the URL that carries it).
    shown = redact({"addonEnv": env, "mysql": box.configs(app_id)["mysql"]})
    assert set(shown["addonEnv"].values()) == {MARKER}
    assert shown["mysql"]["password"] == MARKER
    assert env["CLOUDRON_MYSQL_PASSWORD"] not in json.dumps(shown)
    assert redact({"mysql": box.configs(app_id)["mysql"]})["mysql"]["username"] == env["CLOUDRON_MYSQL_USERNAME"]


def test_mysql_app_a_cannot_reach_app_b(box: Box) -> None:
    _, env_a = box.install("mysql")
    _, env_b = box.install("mysql")
    _write_mysql(env_a, "a-secret-row")
    _write_mysql(env_b, "b-secret-row")
    assert _read_mysql(env_a) == ["a-secret-row"] and _read_mysql(env_b) == ["b-secret-row"]
    with pytest.raises(OperationalError) as refused:  # A's credentials, B's database: access denied
        _read_mysql(env_a, database=env_b["CLOUDRON_MYSQL_DATABASE"])
    assert refused.value.orig.args[0] == 1044  # type: ignore[union-attr]
    eng = _mysql(env_a)
    with eng.connect() as conn:
        seen = {r[0] for r in conn.execute(text("SHOW DATABASES"))}
        with pytest.raises(OperationalError, match="1142"):  # nor by a qualified name from its own database
            conn.execute(text(f"SELECT body FROM `{env_b['CLOUDRON_MYSQL_DATABASE']}`.notes"))
    eng.dispose()
    assert seen == {"information_schema", env_a["CLOUDRON_MYSQL_DATABASE"]}
    wrong = {**env_a, "CLOUDRON_MYSQL_URL": env_a["CLOUDRON_MYSQL_URL"].replace(env_a["CLOUDRON_MYSQL_PASSWORD"], "x")}
    with pytest.raises(OperationalError):  # and a password is asked for
        _read_mysql(wrong)
    grants = _admin_mysql(f"SHOW GRANTS FOR '{env_a['CLOUDRON_MYSQL_USERNAME']}'@'%'")
    on = [g[0] for g in grants if " ON " in g[0] and "USAGE" not in g[0]]
    literal = env_a["CLOUDRON_MYSQL_DATABASE"].replace("_", "\\_")  # `_` escaped: no wildcard in the grant
    assert on == [f"GRANT ALL PRIVILEGES ON `{literal}`.* TO `{env_a['CLOUDRON_MYSQL_USERNAME']}`@`%`"]
    # So the user cannot make a database of a name the grant's wildcard would have matched.
    lookalike = env_a["CLOUDRON_MYSQL_DATABASE"].replace("_", "x", 1)
    with pytest.raises(OperationalError):
        _as_app_mysql(env_a, f"CREATE DATABASE `{lookalike}`")


def test_postgresql_app_a_cannot_reach_app_b(box: Box) -> None:
    _, env_a = box.install("postgresql")
    _, env_b = box.install("postgresql")
    _write_pg(env_a, "a-secret-row")
    _write_pg(env_b, "b-secret-row")
    assert _read_pg(env_a) == ["a-secret-row"] and _read_pg(env_b) == ["b-secret-row"]
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        _pg(env_a, database=env_b["CLOUDRON_POSTGRESQL_DATABASE"])
    role = _admin_pg(
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
        env_a["CLOUDRON_POSTGRESQL_USERNAME"],
    )
    assert role == [(False, False, False)]
    owner = _admin_pg(
        "SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, 'CONNECT') "
        "FROM pg_database WHERE datname = %s",
        env_b["CLOUDRON_POSTGRESQL_DATABASE"],
    )
    assert owner == [(env_b["CLOUDRON_POSTGRESQL_USERNAME"], False)]


def test_repair_keeps_the_credentials_and_brings_the_server_back_to_them(box: Box) -> None:
    app_id, env = box.install("mysql", "postgresql")
    _write_mysql(env, "kept")
    _write_pg(env, "kept")
    user = env["CLOUDRON_MYSQL_USERNAME"]
    _admin_mysql(f"ALTER USER '{user}'@'%' IDENTIFIED BY 'drifted-out-of-band'")
    again = box.set_up(app_id, "mysql", "postgresql")  # what repair and configure do
    assert again == env
    assert _read_mysql(again) == ["kept"] and _read_pg(again) == ["kept"]


def test_clone_gets_its_own_databases_with_the_data_copied(box: Box) -> None:
    source, env_a = box.install("mysql", "postgresql")
    _write_mysql(env_a, "from-a")
    _write_pg(env_a, "from-a")
    clone, env_c = box.install("mysql", "postgresql")
    assert databases.copy_data(box.settings, box.configs(source), box.configs(clone)) == ["mysql", "postgresql"]
    assert env_c["CLOUDRON_MYSQL_DATABASE"] != env_a["CLOUDRON_MYSQL_DATABASE"]
    assert _read_mysql(env_c) == ["from-a"] and _read_pg(env_c) == ["from-a"]
    # The copy is the clone's own: its writes stay there, its view runs as the clone's user, its tables are its role's.
    eng = _mysql(env_c)
    with eng.begin() as conn:
        conn.execute(text("INSERT INTO notes (body) VALUES ('only-c')"))
    eng.dispose()
    with _pg(env_c) as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('only-c')")
    assert _read_mysql(env_a) == ["from-a"] and _read_pg(env_a) == ["from-a"]
    definer = _admin_mysql(
        "SELECT definer FROM information_schema.views WHERE table_schema = :db", db=env_c["CLOUDRON_MYSQL_DATABASE"]
    )
    assert definer == [(f"{env_c['CLOUDRON_MYSQL_USERNAME']}@%",)]
    with _pg(env_c) as conn:
        owners = {r[0] for r in conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert owners == {env_c["CLOUDRON_POSTGRESQL_USERNAME"]}
    # A copy that runs again (a clone retried after a failure) replaces, it does not fail or double.
    databases.copy_data(box.settings, box.configs(source), box.configs(clone))
    assert _read_mysql(env_c) == ["from-a"] and _read_pg(env_c) == ["from-a"]


def test_uninstall_leaves_no_database_user_or_role(box: Box) -> None:
    app_id, env = box.install("mysql", "postgresql")
    _write_mysql(env, "doomed")
    with _pg(env) as conn:  # an open session does not stop the drop
        conn.execute("CREATE TABLE t (x int)")
        box.uninstall(app_id)
    name = env["CLOUDRON_MYSQL_DATABASE"]
    assert _admin_mysql("SELECT schema_name FROM information_schema.schemata WHERE schema_name = :n", n=name) == []
    assert _admin_mysql("SELECT user FROM mysql.user WHERE user = :n", n=name) == []
    assert _admin_pg("SELECT datname FROM pg_database WHERE datname = %s", name) == []
    assert _admin_pg("SELECT rolname FROM pg_roles WHERE rolname = %s", name) == []
    with box.engine.connect() as conn:
        assert list(conn.execute(select(AppAddon.addon).where(AppAddon.app_id == app_id))) == []
    databases.tear_down(box.settings, {"mysql": {**env_as_config(env, "MYSQL")}})  # again: nothing to drop, fine


def env_as_config(env: dict[str, str], kind: str) -> dict[str, Any]:
    p = f"CLOUDRON_{kind}"
    return {
        "database": env[f"{p}_DATABASE"],
        "username": env[f"{p}_USERNAME"],
        "password": env[f"{p}_PASSWORD"],
        "host": env[f"{p}_HOST"],
        "port": int(env[f"{p}_PORT"]),
    }


def test_an_addon_without_its_server_is_refused_and_redis_is_not_provided(box: Box, tmp_path: Path) -> None:
    bare = load_settings(data_dir=tmp_path, database_url=box.settings.database_url, mysql_addon_url="")
    assert databases.provided(bare) == frozenset()
    assert databases.provided(box.settings) == frozenset({"mysql", "postgresql"})
    app_id = box.new_app("mysql")
    with box.engine.begin() as conn, pytest.raises(AddonNotProvidedError, match="BOXTASKS_MYSQL_ADDON_URL"):
        databases.set_up(conn, app_id=app_id, manifest=parse_manifest(_manifest("mysql")), settings=bare)
    with box.engine.begin() as conn, pytest.raises(AddonNotProvidedError, match="redis"):
        databases.set_up(conn, app_id=app_id, manifest=parse_manifest(_manifest("redis")), settings=box.settings)
    assert box.configs(app_id) == {}


def test_a_server_that_refuses_says_so_without_any_password(box: Box, tmp_path: Path) -> None:
    admin_pw = f"admin-pw-{uuid.uuid4().hex}"
    wrong = load_settings(
        data_dir=tmp_path,
        database_url=box.settings.database_url,
        mysql_addon_url=f"mysql+pymysql://nobody-{uuid.uuid4().hex[:6]}:{admin_pw}@127.0.0.1:3306",
    )
    app_id = box.new_app("mysql")
    with box.engine.begin() as conn:
        databases.set_up(conn, app_id=app_id, manifest=parse_manifest(_manifest("mysql")), settings=wrong)
    app_pw = box.configs(app_id)["mysql"]["password"]
    with pytest.raises(AddonServerError) as refused:
        databases.provision(wrong, box.configs(app_id))
    assert "refused to make database" in str(refused.value)
    assert admin_pw not in str(refused.value) and app_pw not in str(refused.value)


def test_a_dump_kept_in_a_directory_loads_into_another_apps_own_databases(box: Box, tmp_path: Path) -> None:
    source, env_a = box.install("mysql", "postgresql")
    _write_mysql(env_a, "dumped")
    _write_pg(env_a, "dumped")
    kept = tmp_path / "backup"
    kept.mkdir()
    assert list(databases.dump(box.settings, box.configs(source), kept)) == ["mysql", "postgresql"]
    for name in ("mysql.sql", "postgresql.sql"):
        assert (kept / name).stat().st_mode & 0o777 == 0o600
        assert env_a["CLOUDRON_MYSQL_PASSWORD"].encode() not in (kept / name).read_bytes()
    target, env_t = box.install("mysql", "postgresql")
    _write_mysql(env_t, "stray")  # what the target had: dropped by the load, tables the dump lacks included
    with _pg(env_t) as conn:
        conn.execute("CREATE TABLE stray (x int)")
    for _ in range(2):  # loading again (a retried restore) replaces, it does not fail or double
        assert databases.load(box.settings, box.configs(target), kept) == ["mysql", "postgresql"]
    assert _read_mysql(env_t) == ["dumped"] and _read_pg(env_t) == ["dumped"]
    with _pg(env_t) as conn:
        assert [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")] == ["notes"]
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        assert owner.fetchone() == (env_t["CLOUDRON_POSTGRESQL_USERNAME"],)
    definer = _admin_mysql(
        "SELECT definer FROM information_schema.views WHERE table_schema = :db", db=env_t["CLOUDRON_MYSQL_DATABASE"]
    )
    assert definer == [(f"{env_t['CLOUDRON_MYSQL_USERNAME']}@%",)]


def test_a_server_that_does_not_ask_postgresql_roles_for_their_password_is_named_in_a_warning(
    box: Box, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hosting.apps.databases.postgresql")
    _, env = box.install("postgresql")
    wrong = env["CLOUDRON_POSTGRESQL_URL"].replace(env["CLOUDRON_POSTGRESQL_PASSWORD"], "not-the-password")
    try:
        psycopg.connect(wrong, connect_timeout=10).close()
        trusted = True
    except psycopg.OperationalError:
        trusted = False
    warned = [r for r in caplog.records if "without its password" in r.getMessage()]
    assert bool(warned) == trusted  # this machine's pg_hba trusts 127.0.0.1: warned here, silent on a strict one
    assert all(env["CLOUDRON_POSTGRESQL_PASSWORD"] not in r.getMessage() for r in caplog.records)
