"""The database addons of apps: `mysql` and `postgresql`, a database and a user of its own per app.

The lifecycle, in the order operations call it:

- `set_up` (inside the operation's first transaction): make or keep the app's credentials in
  `app_addons` (names from the app id, a new password only the first time), so a repair or a
  configure hands the same ones; an addon this server does not provide is refused (`provided`).
- `provision` (before the container is built): make the database and user on the server, or bring
  them back to the record. Idempotent.
- `env_for`: the environment variables apps packaged in the Cloudron manifest format read
  (`CLOUDRON_MYSQL_URL`, `…_USERNAME`, `…_PASSWORD`, `…_HOST`, `…_PORT`, `…_DATABASE`; likewise
  `CLOUDRON_POSTGRESQL_*`), so a packaged app's start script works unchanged.
- `dump` (backup) and `load` (restore, clone): see below.
- `tear_down` (uninstall, before the credential rows go): drop the database and the user.

Backups: `dump` writes each database as SQL into a directory (`DUMP_FILES`), which an app backup
archives under its reserved top-level `addons/` (`hosting.backups.appbackup`); `load` empties the
app's own database (drops it and makes it afresh, its user and password kept) and loads the dump:
restore into the app itself, clone and an archive's restore into the new app's. `copy_data` (live
database to live database) is kept for tools; clone loads the backup's dump, not the source as it is now.

`redis` is a known addon name the platform does not provide yet: an app asking for it is refused
rather than started without it (a shared server with a key-prefix ACL would not isolate apps, since
apps do not prefix their keys).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, delete, insert
from sqlalchemy.engine import make_url

from config import Settings
from hosting.apps import addons
from hosting.apps.databases.common import Credentials, name_for, new_password
from hosting.apps.databases.mysql import MySQLServer
from hosting.apps.databases.postgresql import PostgreSQLServer
from hosting.apps.manifest import Manifest
from hosting.errors import AddonNotProvidedError, AddonServerError
from models import AppAddon

logger = logging.getLogger(__name__)

MYSQL = "mysql"
POSTGRESQL = "postgresql"
REDIS = "redis"
#: Every database addon name the manifest knows, provided or not.
DATABASE_ADDONS = (MYSQL, POSTGRESQL, REDIS)
#: The setting that provides each addon.
SETTING = {
    MYSQL: "BOXTASKS_MYSQL_ADDON_URL",
    POSTGRESQL: "BOXTASKS_POSTGRESQL_ADDON_URL",
    REDIS: "(none: redis is not provided yet)",
}

Server = MySQLServer | PostgreSQLServer

__all__ = [
    "DATABASE_ADDONS",
    "DUMPABLE",
    "DUMP_FILES",
    "Credentials",
    "check_provided",
    "copy_data",
    "dump",
    "env_for",
    "load",
    "needed",
    "provided",
    "provision",
    "set_up",
    "tear_down",
]


def provided(settings: Settings) -> frozenset[str]:
    """The database addons this server provides: those whose admin URL is configured."""
    names = set()
    if settings.mysql_addon_url:
        names.add(MYSQL)
    if settings.postgresql_addon_url:
        names.add(POSTGRESQL)
    return frozenset(names)


#: The name the front door asks (a function of the settings: nothing is read at import).
PROVIDED_DATABASE_ADDONS = provided


def needed(manifest: Manifest, settings: Settings) -> list[str]:
    """The database addons the app gets: those the manifest asks for, less the ones it marks optional
    that this server does not provide (the app runs without them, as `hosting.apps.capabilities` says)."""
    have = provided(settings)
    return [a for a in DATABASE_ADDONS if a in manifest.addons and (a in have or not _optional(manifest.addons[a]))]


def _optional(options: object) -> bool:
    return isinstance(options, dict) and options.get("optional") is True


def check_provided(manifest: Manifest, settings: Settings) -> list[str]:
    """The database addons the app gets (`needed`); AddonNotProvidedError if this server lacks one it needs."""
    wanted = needed(manifest, settings)
    missing = sorted(set(wanted) - provided(settings))
    if missing:
        raise AddonNotProvidedError(
            f"the app needs addon(s) {', '.join(missing)}, which this server does not provide; "
            f"configure {', '.join(SETTING[a] for a in missing)} first"
        )
    return wanted


def set_up(conn: Connection, *, app_id: str, manifest: Manifest, settings: Settings) -> dict[str, dict[str, Any]]:
    """Make (or keep) the app's database credentials in `app_addons`; return them by addon.

    Host and port follow the settings; names and password stay the app's own. A database addon the
    manifest no longer asks for keeps its record (and its data) until uninstall.
    """
    wanted = check_provided(manifest, settings)
    kept = addons.stored(conn, app_id)
    configs: dict[str, dict[str, Any]] = {}
    for addon in wanted:
        host, port = _app_endpoint(addon, settings)
        if addon in kept:
            config = {**kept[addon], "host": host, "port": port}
            conn.execute(delete(AppAddon).where(AppAddon.app_id == app_id, AppAddon.addon == addon))
        else:
            name = name_for(app_id)
            config = Credentials(name, name, new_password(), host, port).as_config()
        conn.execute(insert(AppAddon).values(app_id=app_id, addon=addon, config=config))
        configs[addon] = config
    return configs


def provision(settings: Settings, configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Make each database and user the records name on its server (before the container starts)."""
    done = []
    for addon, config in configs.items():
        if addon in (MYSQL, POSTGRESQL):
            _server(addon, settings, "provision").provision(Credentials.from_config(config))
            done.append(addon)
    return done


def env_for(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The environment an app sees for its database addons, under the names packaged apps read."""
    env: dict[str, str] = {}
    for addon, prefix, scheme in ((MYSQL, "CLOUDRON_MYSQL", "mysql"), (POSTGRESQL, "CLOUDRON_POSTGRESQL", "postgres")):
        if addon not in configs:
            continue
        c = Credentials.from_config(configs[addon])
        url = f"{scheme}://{quote(c.username, safe='')}:{quote(c.password, safe='')}@{c.host}:{c.port}/{c.database}"
        env.update(
            {
                f"{prefix}_URL": url,
                f"{prefix}_USERNAME": c.username,
                f"{prefix}_PASSWORD": c.password,
                f"{prefix}_HOST": c.host,
                f"{prefix}_PORT": str(c.port),
                f"{prefix}_DATABASE": c.database,
            }
        )
    return env


def copy_data(
    settings: Settings, source: Mapping[str, Mapping[str, Any]], target: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Copy each database the source app has into the target app's own (clone); the addons copied."""
    copied = []
    for addon in (MYSQL, POSTGRESQL):
        if addon in source and addon in target:
            server = _server(addon, settings, "copy")
            server.copy(Credentials.from_config(source[addon]), Credentials.from_config(target[addon]))
            copied.append(addon)
    return copied


#: The file each addon's dump is kept in, inside a backup's `addons/` directory.
DUMP_FILES = {MYSQL: "mysql.sql", POSTGRESQL: "postgresql.sql"}
#: The addons `dump` can dump (redis is not provided, so it has nothing to dump).
DUMPABLE = tuple(DUMP_FILES)


def dump(settings: Settings, configs: Mapping[str, Mapping[str, Any]], directory: Path) -> dict[str, Path]:
    """Dump each of the app's databases into a file of `directory` (`DUMP_FILES`, 0600): addon -> file.

    The tool writes the file itself (`common.pipe`): the dump streams to disk, never held in memory.
    """
    dumped = {}
    for addon, file_name in DUMP_FILES.items():
        if addon in configs:
            path = directory / file_name
            _server(addon, settings, "dump").dump(Credentials.from_config(configs[addon]), path)
            dumped[addon] = path
    return dumped


def load(settings: Settings, configs: Mapping[str, Mapping[str, Any]], directory: Path) -> list[str]:
    """Load the dumps `dump` left in `directory` into the app's own databases (restore, clone); the addons loaded.

    Each database is first dropped and made afresh (empty, the app's user and password kept), so
    nothing the app wrote since the backup survives, tables the dump does not name included.
    An addon of `configs` without a file in `directory` is left as it is: the caller checks first.
    """
    loaded = []
    for addon, file_name in DUMP_FILES.items():
        if addon in configs and (directory / file_name).is_file():
            server = _server(addon, settings, "load")
            creds = Credentials.from_config(configs[addon])
            server.reset(creds)
            server.load(creds, directory / file_name)
            loaded.append(addon)
    return loaded


def tear_down(settings: Settings, configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Drop every database and user the app's records name (uninstall); the records go with `addons.tear_down`."""
    dropped = []
    for addon, config in configs.items():
        if addon in (MYSQL, POSTGRESQL):
            _server(addon, settings, "remove").drop(Credentials.from_config(config))
            dropped.append(addon)
    return dropped


def _server(addon: str, settings: Settings, what: str) -> Server:
    if addon == MYSQL and settings.mysql_addon_url:
        return MySQLServer(settings.mysql_addon_url)
    if addon == POSTGRESQL and settings.postgresql_addon_url:
        return PostgreSQLServer(settings.postgresql_addon_url)
    raise AddonServerError(f"cannot {what} the app's {addon} database: {SETTING[addon]} is not set; set it and retry")


def _app_endpoint(addon: str, settings: Settings) -> tuple[str, int]:
    """Host and port as app containers reach the server: the settings', else the admin URL's."""
    if addon == MYSQL:
        url, host, port, default = settings.mysql_addon_url, settings.mysql_addon_host, settings.mysql_addon_port, 3306
    else:
        url, host = settings.postgresql_addon_url, settings.postgresql_addon_host
        port, default = settings.postgresql_addon_port, 5432
    admin = make_url(url)
    return host or admin.host or "127.0.0.1", port or admin.port or default
